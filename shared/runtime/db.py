"""Postgres: the asyncpg pool and the numbered SQL migrations."""

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, TypeVar

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy
from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from shared.runtime.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# A connection, whether opened alone or borrowed from a pool; or anything that runs queries.
Conn = asyncpg.Connection | PoolConnectionProxy
Executor = Conn | asyncpg.Pool

# Serialises concurrent `crewq migrate` runs (several replicas starting at once).
_MIGRATION_LOCK = 0x63726577  # "crew"


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pool(
    dsn: str,
    *,
    role: str,
    min_size: int = 1,
    max_size: int = 10,
    statement_cache_size: int = 100,
) -> asyncpg.Pool:
    """A pool whose connections show in `pg_stat_activity` as `crewq-<role>`.

    `statement_cache_size=0` makes asyncpg use unnamed prepared statements only, which a
    pooler in transaction mode can carry (asyncpg #339); PgBouncer 1.21 and later also
    carries named ones when its `max_prepared_statements` is set."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        statement_cache_size=statement_cache_size,
        reset=_keep_session,
        init=_init_connection,
        server_settings={"application_name": f"crewq-{role}"},
        # Fail fast when Postgres is unreachable, so the API answers 503 instead of hanging.
        timeout=5,
        # A query never waits forever on a broken network path.
        command_timeout=30,
    )
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a released connection needs beyond asyncpg's own roll-back of an open
    transaction: nothing. crewq keeps no session state on pooled connections (its advisory
    locks are transaction locks; LISTEN and migrations have connections of their own), so
    asyncpg's default reset (`SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL`) would be one more round trip on every release for nothing; behind a pooler in
    transaction mode it would run on whichever session the pooler happened to lend."""


async def pool_for(settings: Settings, role: str, default_size: int) -> asyncpg.Pool:
    """A role's pool as the settings size it: CREWQ_DATABASE_POOL_SIZE, else the role's own
    default, with CREWQ_DATABASE_STATEMENT_CACHE."""
    return await create_pool(
        settings.require_database_url,
        role=role,
        max_size=settings.database_pool_size or default_size,
        statement_cache_size=settings.database_statement_cache,
    )


async def ping(db: Executor) -> None:
    """One round trip: raises when Postgres does not answer."""
    await db.fetchval("SELECT 1")


# --- migrations ---
#
# Two kinds of numbered file in shared/store/migrations/ (docs/migrations.md says when to use
# which):
# `NNNN_name.sql` runs in one transaction, recorded in the same transaction, so it is applied
# whole or not at all. `NNNN_name.nontransactional.sql` runs statement by statement, each
# committing on its own, for what Postgres refuses inside a transaction (CREATE INDEX
# CONCURRENTLY, which builds an index without blocking writers); it is recorded only after
# its last statement succeeds, so a failed run is run again from its first statement, and
# each of its statements must be safe to run twice.

NONTRANSACTIONAL_SUFFIX = ".nontransactional.sql"

# A concurrent index build must say IF NOT EXISTS (a rerun then skips an index built whole),
# and its name is what a rerun checks for a broken build left behind (see `_apply_alone`).
_CONCURRENT_INDEX = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?P<guard>IF\s+NOT\s+EXISTS\s+)?"
    r"(?P<name>\"(?:[^\"]|\"\")+\"|[A-Za-z_][\w$]*)",
    re.IGNORECASE,
)
_CONCURRENT_DROP = re.compile(
    r"DROP\s+INDEX\s+CONCURRENTLY\s+(?P<guard>IF\s+EXISTS\s+)?", re.IGNORECASE
)


@dataclass(frozen=True)
class Migration:
    number: int
    name: str  # the file's name, as recorded in schema_migrations
    sql: str
    transactional: bool

    @property
    def statements(self) -> list[str]:
        """The SQL split into statements (comments kept, empty ones dropped)."""
        return split_statements(self.sql)


def read_migration(name: str, sql: str) -> Migration:
    """One migration file, refused when a rerun of it could not be safe."""
    number = int(name.split("_", 1)[0])
    transactional = not name.endswith(NONTRANSACTIONAL_SUFFIX)
    if not transactional:
        for statement in split_statements(sql):
            code = _code_of(statement)
            for pattern in (_CONCURRENT_INDEX, _CONCURRENT_DROP):
                found = pattern.match(code)
                if found and not found["guard"]:
                    raise ValueError(
                        f"{name}: a nontransactional migration may run again after a failure;"
                        f" write IF NOT EXISTS / IF EXISTS in: {code}"
                    )
    return Migration(number, name, sql, transactional)


def _migration_files(folder: Traversable | None = None) -> list[Migration]:
    folder = folder or resources.files("shared.store") / "migrations"
    found = [
        read_migration(entry.name, entry.read_text())
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    numbers = [m.number for m in found]
    if len(numbers) != len(set(numbers)):
        raise RuntimeError(f"two migrations share a number: {sorted(m.name for m in found)}")
    return sorted(found, key=lambda m: m.number)


def split_statements(sql: str) -> list[str]:
    """`sql` cut at each `;` that ends a statement: not one inside a quoted string or
    identifier, a dollar-quoted body or a comment. Statements holding only comments and
    whitespace are dropped. Postgres runs a string of several statements as one implicit
    transaction, so a nontransactional migration must send them one at a time."""
    statements: list[str] = []
    start = i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif c == "/" and sql.startswith("/*", i):
            depth, i = 1, i + 2  # Postgres block comments nest
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c in "'\"":
            # E'…' strings also take backslash escapes; '' (or "") is a quote inside.
            backslashes = c == "'" and i > 0 and sql[i - 1] in "eE" and not _in_word(sql, i - 1)
            i += 1
            while i < n:
                if backslashes and sql[i] == "\\":
                    i += 2
                elif sql[i] == c:
                    if sql.startswith(c * 2, i):
                        i += 2
                    else:
                        break
                else:
                    i += 1
            i += 1
        elif c == "$" and (tag := _DOLLAR_TAG.match(sql, i)) and not _in_word(sql, i):
            end = sql.find(tag[0], tag.end())
            i = n if end < 0 else end + len(tag[0])
        elif c == ";":
            statements.append(sql[start : i + 1])
            start = i = i + 1
        else:
            i += 1
    statements.append(sql[start:])
    return [s.strip() for s in statements if _code_of(s)]


_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][\w]*)?\$")


def _in_word(sql: str, i: int) -> bool:
    # `$1` or `a$b`: a parameter or part of an identifier, not the start of a dollar quote.
    return i > 0 and (sql[i - 1].isalnum() or sql[i - 1] in "_$")


def _code_of(statement: str) -> str:
    """The statement without its leading comments and whitespace, and without a final `;`."""
    code = statement.strip()
    while code.startswith(("--", "/*")):
        if code.startswith("--"):
            end = code.find("\n")
            code = "" if end < 0 else code[end + 1 :].lstrip()
        else:
            end = code.find("*/")
            code = "" if end < 0 else code[end + 2 :].lstrip()
    return code.rstrip(";").strip()


async def pending_migrations(db: Executor) -> list[str]:
    """The migrations this code has that the database has not applied (read only)."""
    exists = await db.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = (
        {r["version"] for r in await db.fetch("SELECT version FROM schema_migrations")}
        if exists
        else set()
    )
    return [m.name for m in _migration_files() if m.number not in done]


async def migrate(dsn: str, folder: Traversable | None = None) -> list[str]:
    """Apply the migrations (of shared/store/migrations/, or `folder`) not yet applied, in number
    order; return their names. Holds the migration lock throughout, so replicas starting at
    once apply each migration once."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await _take_migration_lock(conn)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in _migration_files(folder):
            if migration.number in done:
                continue
            if migration.transactional:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await _record(conn, migration)
            else:
                await _apply_alone(conn, migration)
                await _record(conn, migration)
            log.info("applied migration %s", migration.name)
            applied.append(migration.name)
    finally:
        # Closing ends the session, which releases its lock anyway; this only says so sooner.
        with contextlib.suppress(Exception):
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        await conn.close()
    return applied


async def _take_migration_lock(conn: asyncpg.Connection) -> None:
    """The session's migration lock, polled for rather than waited for in one statement: a
    session blocked inside `SELECT pg_advisory_lock(…)` holds a snapshot, CREATE INDEX
    CONCURRENTLY in the session holding the lock waits for every older snapshot to go, and
    the two would deadlock (Postgres would then abort one of them)."""
    waiting = False
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _MIGRATION_LOCK):
        if not waiting:
            log.info("another process is migrating; waiting for it")
            waiting = True
        await asyncio.sleep(0.2)


async def _record(conn: asyncpg.Connection, migration: Migration) -> None:
    await conn.execute(
        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
        migration.number,
        migration.name,
    )


async def _apply_alone(conn: asyncpg.Connection, migration: Migration) -> None:
    """Each statement of a nontransactional migration in a transaction of its own.

    A CREATE INDEX CONCURRENTLY that failed (a duplicate for a unique index, a deadlock, a
    cancelled or killed run) leaves its index behind, marked invalid: not used by queries,
    but still updated by every write, and IF NOT EXISTS would skip it on the rerun. So
    before each concurrent build, an invalid index of that name is dropped (concurrently)
    and built again. No other process builds it meanwhile: the migration lock is held."""
    for statement in migration.statements:
        index = _CONCURRENT_INDEX.match(_code_of(statement))
        if index is not None:
            name = index["name"]
            broken = await conn.fetchval(
                "SELECT NOT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)",
                name,
            )
            if broken:
                log.warning(
                    "%s: dropping index %s, left invalid by a failed build", migration.name, name
                )
                await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        await conn.execute(statement)


async def listen(
    dsn: str,
    channels: Mapping[str, Callable[[str], None]],
    on_connect: Callable[[], None],
    *,
    role: str,
) -> None:
    """Hold one LISTEN connection on `channels` until cancelled, re-opening it whenever it
    drops. Each channel's callback gets its payloads; `on_connect` runs on every
    (re)connection, since notifications sent while nobody listened are lost. Only a lost
    connection is retried: anything else is a bug and ends the task (its supervisor stops
    the process)."""
    while True:
        try:
            conn = await asyncpg.connect(
                dsn, server_settings={"application_name": f"crewq-{role}-listen"}
            )
            try:
                for channel, callback in channels.items():
                    await conn.add_listener(channel, _payload_to(callback))
                on_connect()
                while not conn.is_closed():
                    await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            log.warning("LISTEN %s lost (%s); reconnecting", ", ".join(channels), exc)
        await asyncio.sleep(1)


def _payload_to(callback: Callable[[str], None]) -> Callable[..., None]:
    # asyncpg calls listeners with (connection, pid, channel, payload).
    return lambda *args: callback(str(args[3]))


def is_connection_error(exc: BaseException) -> bool:
    """Postgres unreachable or the connection dropped: worth retrying, unlike a SQL error."""
    return isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        # asyncpg's answer on a pooled connection the server terminated mid-use.
        | asyncpg.InternalClientError
        | asyncpg.exceptions.OperatorInterventionError
        | asyncpg.TooManyConnectionsError
        | ConnectionError
        | OSError
        | TimeoutError,
    )


def db_retrying(max_seconds: float = 600) -> AsyncRetrying:
    """Retry a state write through a Postgres outage, so a finished crew's outcome is not lost."""
    return AsyncRetrying(
        retry=retry_if_exception(is_connection_error),
        wait=wait_exponential_jitter(initial=0.2, max=5),
        stop=stop_after_delay(max_seconds),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )


async def with_db_retry(operation: Callable[[], Awaitable[T]], max_seconds: float = 600) -> T:
    async for attempt in db_retrying(max_seconds):
        with attempt:
            return await operation()
    raise AssertionError("unreachable")  # AsyncRetrying re-raises the last error


class TenantLock(IntEnum):
    """What a per-tenant advisory lock serialises (the first key of the two-key form)."""

    JOBS = 1  # submitting, parking, starting a job, and handing a freed slot on
    ENDPOINTS = 3  # counting webhook endpoints against their bound


async def lock_tenant(conn: Conn, purpose: TenantLock, tenant_id: str) -> None:
    """Serialise `purpose` for one tenant until the transaction ends. An advisory lock, not a
    row lock on `tenants`: a row lock would conflict with the FOR KEY SHARE every insert of
    a job, event or delivery takes on its tenant, and deadlock with them."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", int(purpose), tenant_id)


def storable(value: Any) -> Any:
    """`value` with every string made storable in Postgres text and jsonb: U+0000 removed
    (Postgres cannot hold it) and lone surrogates (which UTF-8 cannot encode) replaced by
    U+FFFD, in keys and values at any depth. A crew's output or a receiver's answer may
    hold either."""
    if isinstance(value, str):
        if value.isascii():
            return value.replace("\x00", "")
        return (
            value.encode("utf-16", "surrogatepass").decode("utf-16", "replace").replace("\x00", "")
        )
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value
