"""The schema as one file, and the CHECK lists that copy Python's enums, against real
Postgres.

`shared/store/schema.sql` describes every table, index, function and trigger as they are after
all migrations. Its test builds one database from the migrations and one from the file and
compares what the catalogs say of each (through pg_catalog, not pg_dump, whose version
need not match the server's). A migration that changes the schema without the file, or the
file without a migration, fails it.

Postgres refuses a status, outcome, code, reason, mode, plan or role that is not in its
CHECK list; the lists copy StrEnums of schemas/ by hand. A value added to an enum but not to
its CHECK would be refused when first written; one removed from the enum would linger in
SQL. The second test reads each list back from the catalog and compares it with its enum."""

import re
import uuid
from collections.abc import AsyncIterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from schemas.account import KeyMode, Plan
from schemas.amp import DeliveryFormat
from schemas.bulk import BulkKind, BulkStatus
from schemas.health import ProcessRole
from schemas.jobs import AttemptOutcome, ErrorCode, InputDefault, JobStatus
from schemas.schedules import MissedPolicy
from schemas.webhooks import DeliveryStatus, DisabledReason
from tests.harness import Services

SCHEMA_FILE = Path(__file__).parents[2] / "shared" / "store" / "schema.sql"

# What describes the schema, one query per kind of object, each row a plain tuple so that
# two catalogs compare (and differ readably) as lists. Only the public schema; not
# schema_migrations, which is the migrator's own table (shared/runtime/db.py), not the schema's.
CATALOG: dict[str, str] = {
    "tables": """
        SELECT c.relname, c.relkind, c.relpersistence, c.reloptions, c.relrowsecurity
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
           AND c.relname <> 'schema_migrations'
         ORDER BY 1
    """,
    # Columns in their table's order (SELECT * and the `jobs` row type the submission
    # function returns follow it), so schema.sql lists columns added later last.
    "columns": """
        SELECT c.relname, row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
               a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
           AND c.relname <> 'schema_migrations'
         ORDER BY 1, 2
    """,
    "constraints": """
        SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid), k.convalidated
          FROM pg_constraint k
          JOIN pg_class c ON c.oid = k.conrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relname <> 'schema_migrations'
         ORDER BY 1, 2
    """,
    "indexes": """
        SELECT t.relname, i.relname, pg_get_indexdef(x.indexrelid), x.indisvalid
          FROM pg_index x
          JOIN pg_class i ON i.oid = x.indexrelid
          JOIN pg_class t ON t.oid = x.indrelid
          JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = 'public' AND t.relname <> 'schema_migrations'
         ORDER BY 1, 2
    """,
    "sequences": """
        SELECT c.relname, format_type(s.seqtypid, NULL), s.seqincrement, s.seqstart,
               o.relname, a.attname, dep.deptype
          FROM pg_sequence s
          JOIN pg_class c ON c.oid = s.seqrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_depend dep ON dep.classid = 'pg_class'::regclass
               AND dep.objid = c.oid AND dep.refclassid = 'pg_class'::regclass
          LEFT JOIN pg_class o ON o.oid = dep.refobjid
          LEFT JOIN pg_attribute a ON a.attrelid = dep.refobjid AND a.attnum = dep.refobjsubid
         WHERE n.nspname = 'public'
         ORDER BY 1
    """,
    # The body with its layout folded (whitespace runs count as one space): what it does,
    # not how it is indented, must be the same.
    "functions": """
        SELECT p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
               l.lanname, p.provolatile, p.proisstrict, p.prosecdef, p.proconfig,
               p.proargnames, regexp_replace(btrim(p.prosrc), '\\s+', ' ', 'g')
          FROM pg_proc p
          JOIN pg_namespace n ON n.oid = p.pronamespace
          JOIN pg_language l ON l.oid = p.prolang
         WHERE n.nspname = 'public'
         ORDER BY 1, 2
    """,
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
          FROM pg_trigger t
          JOIN pg_class c ON c.oid = t.tgrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND NOT t.tgisinternal
         ORDER BY 1, 2
    """,
    # Anything else of the schema's that the queries above would not show.
    "other objects": """
        SELECT 'type', t.typname, t.typtype::text
          FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r', 'm')
            OR n.nspname = 'public' AND t.typtype = 'c'
               AND (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c'
        UNION ALL
        SELECT 'relation', c.relname, c.relkind::text
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind NOT IN ('r', 'p', 'i', 'S')
        UNION ALL
        SELECT 'extension', e.extname, '' FROM pg_extension e WHERE e.extname <> 'plpgsql'
        UNION ALL
        SELECT 'policy', p.polname, p.polrelid::regclass::text FROM pg_policy p
        UNION ALL
        SELECT 'rule', r.rulename, r.ev_class::regclass::text
          FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND r.rulename <> '_RETURN'
         ORDER BY 1, 2
    """,
}


async def catalog(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            kind: [tuple(row.values()) for row in await conn.fetch(query)]
            for kind, query in CATALOG.items()
        }
    finally:
        await conn.close()


@pytest_asyncio.fixture
async def from_schema_file(services: Services) -> AsyncIterator[str]:
    """A database built from shared/store/schema.sql alone."""
    name = f"crewq_s_{uuid.uuid4().hex[:10]}"
    url = await services.create_database(name)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SCHEMA_FILE.read_text())
    finally:
        await conn.close()
    yield url
    admin = await asyncpg.connect(services.database_url)
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_the_schema_file_describes_what_the_migrations_build(
    db_url: str, from_schema_file: str
) -> None:
    migrated, described = await catalog(db_url), await catalog(from_schema_file)
    assert migrated["columns"], "the catalog queries found nothing: they are broken"
    for kind in CATALOG:
        # One kind at a time, so a failure names the kind and shows only its rows' diff.
        assert described[kind] == migrated[kind], (
            f"shared/store/schema.sql and the migrations disagree on {kind}: update the file"
            " in the same change as the migration (docs/migrations.md)"
        )


# Each CHECK that copies an enum: (table, constraint) -> the enum and the expression whose
# value it checks, as Postgres prints it. Found by grepping CHECK in shared/store/migrations.
ENUM_CHECKS: dict[tuple[str, str], tuple[type[StrEnum], str]] = {
    ("jobs", "jobs_status_check"): (JobStatus, "status"),
    ("jobs", "jobs_error_code"): (ErrorCode, "(error ->> 'code'::text)"),
    ("jobs", "jobs_input_default_check"): (InputDefault, "input_default"),
    ("job_attempts", "job_attempts_outcome"): (AttemptOutcome, "outcome"),
    ("job_attempts", "job_attempts_error_code"): (ErrorCode, "(error ->> 'code'::text)"),
    ("webhook_deliveries", "webhook_deliveries_status_check"): (DeliveryStatus, "status"),
    ("webhook_deliveries", "webhook_deliveries_format_check"): (DeliveryFormat, "format"),
    ("webhook_endpoints", "webhook_endpoints_disabled_reason"): (
        DisabledReason,
        "disabled_reason",
    ),
    ("api_keys", "api_keys_mode_check"): (KeyMode, "mode"),
    ("tenants", "tenants_plan_check"): (Plan, "plan"),
    ("processes", "processes_role_check"): (ProcessRole, "role"),
    ("schedules", "schedules_missed_check"): (MissedPolicy, "missed"),
    ("bulk_operations", "bulk_operations_kind_check"): (BulkKind, "kind"),
    ("bulk_operations", "bulk_operations_status_check"): (BulkStatus, "status"),
}

# How Postgres prints `expr IN ('a', 'b')`.
_IN_LIST = re.compile(r"CHECK \(\((?P<expr>.+) = ANY \(ARRAY\[(?P<items>.+)\]\)\)\)", re.DOTALL)
_TEXT_ITEM = re.compile(r"'((?:[^']|'')*)'::text")


def allowed_values(definition: str, expression: str) -> list[str]:
    """The strings `definition` (a CHECK, as pg_get_constraintdef prints it) allows
    `expression` to be; refuses any other shape of CHECK."""
    found = _IN_LIST.fullmatch(definition)
    assert found is not None, f"not a CHECK of a list of values: {definition}"
    assert found["expr"] == expression, definition
    items = found["items"]
    values = [m.replace("''", "'") for m in _TEXT_ITEM.findall(items)]
    # Every item is a text literal: nothing in the list was skipped over by the pattern.
    assert ", ".join(f"'{v.replace(chr(39), chr(39) * 2)}'::text" for v in values) == items
    return values


def test_allowed_values_reads_the_list_postgres_prints() -> None:
    assert allowed_values("CHECK ((status = ANY (ARRAY['a'::text, 'it''s'::text])))", "status") == [
        "a",
        "it's",
    ]
    with pytest.raises(AssertionError):
        allowed_values("CHECK ((x > 0))", "x")
    with pytest.raises(AssertionError):
        allowed_values("CHECK ((status = ANY (ARRAY['a'::text, lower('B'::text)])))", "status")


async def test_every_check_list_equals_its_enum(db: asyncpg.Pool) -> None:
    rows = await db.fetch(
        "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) AS definition"
        "  FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid"
        " WHERE k.contype = 'c' AND c.relnamespace = 'public'::regnamespace"
    )
    checks = {(r["relname"], r["conname"]): r["definition"] for r in rows}
    # Any CHECK of a list of strings is an enum's copy and must be paired with it here.
    lists = {key for key, definition in checks.items() if _IN_LIST.fullmatch(definition)}
    assert lists == set(ENUM_CHECKS), "a CHECK of values with no enum paired in ENUM_CHECKS"
    for key, (enum, expression) in ENUM_CHECKS.items():
        values = allowed_values(checks[key], expression)
        assert sorted(values) == sorted(e.value for e in enum), f"{key} against {enum.__name__}"
        assert len(values) == len(set(values)), f"{key} lists a value twice"
