"""Postgres: the asyncpg pool and the numbered SQL migrations."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TypeVar

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


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        # Fail fast when Postgres is unreachable, so the API answers 503 instead of hanging.
        timeout=5,
        # A query never waits forever on a broken network path.
        command_timeout=30,
    )
    return pool


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
    dsn: str, channel: str, on_notify: Callable[[str], None], on_connect: Callable[[], None]
) -> None:
    """Hold a LISTEN connection on `channel` until cancelled, re-opening it whenever it
    drops. `on_notify` gets each payload; `on_connect` runs on every (re)connection, since
    notifications sent while nobody listened are lost."""
    while True:
        try:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.add_listener(channel, lambda *args: on_notify(str(args[3])))
                on_connect()
                while not conn.is_closed():
                    await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("LISTEN %s lost (%s); reconnecting", channel, exc)
        await asyncio.sleep(1)


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
