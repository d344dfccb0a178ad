"""The migrator (shared/runtime/db.py `migrate`) against real Postgres: nontransactional migrations
run statement by statement outside a transaction, a failed one is left unrecorded and runs
again cleanly, replicas migrating at once neither deadlock nor apply anything twice, and
the functions the previous release calls stay callable as it calls them (migration 0008).

Each test adds migrations of its own, numbered 9000 and up, in a folder of its own, to a
database on which crewq's migrations are already applied."""

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from shared.runtime.db import _MIGRATION_LOCK, TenantLock, _migration_files, migrate
from shared.store import job_sweeps
from tests.integration.factories import submit, tenant


def folder_of(tmp_path: Path, **files: str) -> Path:
    """A migrations folder holding `files` (name with `.` written `__`, since keyword
    arguments cannot hold dots: `n9001_x__sql` is `9001_x.sql`)."""
    folder = tmp_path / f"migrations-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    for key, sql in files.items():
        (folder / key.removeprefix("n").replace("__", ".")).write_text(sql)
    return folder


async def recorded(conn: asyncpg.Connection) -> set[int]:
    return {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}


async def index_valid(conn: asyncpg.Connection, name: str) -> bool | None:
    """None: no such index; else whether queries may use it."""
    valid: bool | None = await conn.fetchval(
        "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)", name
    )
    return valid


CONCURRENT = """
-- Statements with `;` inside a string, a comment and a function body: each is sent alone.
CREATE TABLE IF NOT EXISTS probe (x int, note text DEFAULT 'a;b');
/* a comment; with a semicolon */
CREATE INDEX CONCURRENTLY IF NOT EXISTS probe_x ON probe (x);
CREATE OR REPLACE FUNCTION probe_twice(v int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    RETURN v * 2;
END;
$$;
"""


async def test_a_nontransactional_migration_runs_statement_by_statement_outside_a_transaction(
    db_url: str, tmp_path: Path
) -> None:
    applied = await migrate(
        db_url, folder_of(tmp_path, n9001_probe__nontransactional__sql=CONCURRENT)
    )
    assert applied == ["9001_probe.nontransactional.sql"]
    conn = await asyncpg.connect(db_url)
    try:
        assert await index_valid(conn, "probe_x") is True
        assert await conn.fetchval("SELECT probe_twice(21)") == 42
        assert 9001 in await recorded(conn)
    finally:
        await conn.close()
    # Applied once: a second run finds nothing to do.
    assert (
        await migrate(db_url, folder_of(tmp_path, n9001_probe__nontransactional__sql=CONCURRENT))
        == []
    )


async def test_the_same_sql_as_an_ordinary_migration_fails_in_its_transaction(
    db_url: str, tmp_path: Path
) -> None:
    # What makes the kind necessary: Postgres refuses CONCURRENTLY inside a transaction.
    with pytest.raises(asyncpg.ActiveSQLTransactionError):
        await migrate(db_url, folder_of(tmp_path, n9001_probe__sql=CONCURRENT))
    conn = await asyncpg.connect(db_url)
    try:
        assert 9001 not in await recorded(conn)
        assert await conn.fetchval("SELECT to_regclass('probe')") is None  # rolled back whole
    finally:
        await conn.close()


async def test_a_failed_concurrent_build_is_not_recorded_and_a_rerun_rebuilds_it(
    db_url: str, tmp_path: Path
) -> None:
    migrations = folder_of(
        tmp_path,
        n9001_probe__sql="CREATE TABLE probe (x int); INSERT INTO probe VALUES (1), (1);",
        n9002_unique__nontransactional__sql=(
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS probe_x ON probe (x);\n"
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS probe_x_again ON probe (x);\n"
        ),
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await migrate(db_url, migrations)
    conn = await asyncpg.connect(db_url)
    try:
        assert await recorded(conn) >= {9001}
        assert 9002 not in await recorded(conn)
        # The failed build leaves its index behind, invalid; IF NOT EXISTS alone would keep it.
        assert await index_valid(conn, "probe_x") is False
        assert await index_valid(conn, "probe_x_again") is None  # never reached
        await conn.execute("DELETE FROM probe WHERE ctid = (SELECT max(ctid) FROM probe)")
    finally:
        await conn.close()

    assert await migrate(db_url, migrations) == ["9002_unique.nontransactional.sql"]
    conn = await asyncpg.connect(db_url)
    try:
        assert await index_valid(conn, "probe_x") is True
        assert await index_valid(conn, "probe_x_again") is True
        assert 9002 in await recorded(conn)
        with pytest.raises(asyncpg.UniqueViolationError):  # the rebuilt index is enforced
            await conn.execute("INSERT INTO probe VALUES (1)")
    finally:
        await conn.close()


async def test_a_rerun_keeps_what_the_failed_run_built_whole(db_url: str, tmp_path: Path) -> None:
    migrations = folder_of(
        tmp_path,
        n9001_probe__sql="CREATE TABLE probe (x int);",
        n9002_then_fail__nontransactional__sql=(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS probe_x ON probe (x);\n"
            "SELECT 1 / (SELECT count(*) FROM probe);\n"  # fails while probe is empty
        ),
    )
    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate(db_url, migrations)
    conn = await asyncpg.connect(db_url)
    try:
        built = await conn.fetchval("SELECT to_regclass('probe_x')::oid")
        assert await index_valid(conn, "probe_x") is True
        await conn.execute("INSERT INTO probe VALUES (1)")
    finally:
        await conn.close()
    assert await migrate(db_url, migrations) == ["9002_then_fail.nontransactional.sql"]
    conn = await asyncpg.connect(db_url)
    try:
        # A valid index is not dropped and built again on the rerun.
        assert await conn.fetchval("SELECT to_regclass('probe_x')::oid") == built
    finally:
        await conn.close()


def test_a_nontransactional_migration_must_be_safe_to_run_again(tmp_path: Path) -> None:
    for sql in (
        "CREATE INDEX CONCURRENTLY probe_x ON probe (x);",
        "-- a comment first\nCREATE UNIQUE INDEX CONCURRENTLY probe_x ON probe (x);",
        "DROP INDEX CONCURRENTLY probe_x;",
    ):
        with pytest.raises(ValueError, match="IF NOT EXISTS / IF EXISTS"):
            _migration_files(folder_of(tmp_path, n9001_x__nontransactional__sql=sql))
    # An ordinary migration may not say CONCURRENTLY at all (Postgres refuses it), so only
    # the nontransactional kind is read this strictly.
    assert _migration_files(folder_of(tmp_path, n9001_x__sql="DROP INDEX CONCURRENTLY probe_x;"))


async def test_a_replica_waiting_to_migrate_does_not_hold_up_a_concurrent_build(
    db_url: str, tmp_path: Path
) -> None:
    """One replica builds an index concurrently while holding the migration lock; another
    starts migrating meanwhile. A build waits for every transaction holding an older
    snapshot: a replica blocked inside `SELECT pg_advisory_lock(…)` would hold one, and
    the two would deadlock. The waiting replica polls instead."""
    holder = await asyncpg.connect(db_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        waiting = asyncio.create_task(
            migrate(db_url, folder_of(tmp_path, n9001_probe__sql="CREATE TABLE probe (x int);"))
        )
        await asyncio.sleep(1.5)  # the other replica is waiting for the lock by now
        assert not waiting.done()
        # Postgres reports a deadlock after deadlock_timeout (1 s) when there is one.
        await asyncio.wait_for(
            holder.execute("CREATE INDEX CONCURRENTLY probe_events ON events (type)"), 10
        )
        assert await index_valid(holder, "probe_events") is True
        assert not waiting.done()  # still waiting: the lock is held
        await holder.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        assert await asyncio.wait_for(waiting, 10) == ["9001_probe.sql"]
    finally:
        await holder.close()


async def test_the_previous_release_still_submits_and_folds_through_the_unversioned_functions(
    db: asyncpg.Pool,
) -> None:
    """API processes of the release before migration 0008 call crewq_submit_job and
    crewq_fold_job_counts by position until they are replaced: this is their call."""
    tenant_id = await tenant(db)
    first = await submit(db, tenant_id)  # this release: crewq_submit_job_v1, by name
    row = await db.fetchrow(
        "SELECT s.outcome, s.bound, s.decided_at, (s.job).* FROM crewq_submit_job($1, $2, $3,"
        " $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) s",
        int(TenantLock.JOBS),
        "job_previous_release",
        tenant_id,
        first.crew,
        {},
        {},
        None,
        60,
        0,
        None,
        None,
        None,
        True,
        None,
        100,
        1,  # a cap of one, taken by the first job: this one is parked
    )
    assert row is not None
    assert (row["outcome"], row["id"], row["status"]) == (
        "created",
        "job_previous_release",
        "pending",
    )
    assert row["parked_at"] is not None
    counts = await db.fetchrow(
        "SELECT pending, busy FROM crewq_fold_job_counts($1, $2)", int(TenantLock.JOBS), tenant_id
    )
    assert counts is not None
    assert (counts["pending"], counts["busy"]) == (2, 1)
    # Both releases' folds drain the one table of changes, so they agree.
    assert await job_sweeps.fold_counts(db) == 0
    versioned = await db.fetchrow(
        "SELECT pending, busy FROM crewq_fold_job_counts_v1(p_lock_purpose => $1,"
        " p_tenant_id => $2)",
        int(TenantLock.JOBS),
        tenant_id,
    )
    assert versioned is not None
    assert (versioned["pending"], versioned["busy"]) == (2, 1)
