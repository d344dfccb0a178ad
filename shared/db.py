"""Postgres: the asyncpg pool and the numbered SQL migrations."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from enum import IntEnum
from importlib import resources
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

from shared.settings import Settings

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


def _migration_files() -> list[tuple[int, str, str]]:
    folder = resources.files("shared") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            found.append((number, entry.name, entry.read_text()))
    numbers = [n for n, _, _ in found]
    if len(numbers) != len(set(numbers)):
        raise RuntimeError(f"two migrations share a number: {sorted(e for _, e, _ in found)}")
    return sorted(found)


async def ping(db: Executor) -> None:
    """One round trip: raises when Postgres does not answer."""
    await db.fetchval("SELECT 1")


async def pending_migrations(db: Executor) -> list[str]:
    """The migrations this code has that the database has not applied (read only)."""
    exists = await db.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = (
        {r["version"] for r in await db.fetch("SELECT version FROM schema_migrations")}
        if exists
        else set()
    )
    return [name for number, name, _ in _migration_files() if number not in done]


async def migrate(dsn: str) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction; return their names."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for number, name, sql in _migration_files():
            if number in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", number, name
                )
            log.info("applied migration %s", name)
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        await conn.close()
    return applied


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
