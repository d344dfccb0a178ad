"""Workers and dispatchers in Postgres: each registers itself when it starts, heartbeats
while it lives and signs off when it stops, so any API replica (and `crewq doctor`) can
tell who is alive without reaching them. Every statement on `processes` is here."""

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from schemas.health import ProcessInfo, ProcessReport, ProcessRole, ProcessState
from shared.runtime.db import Executor, storable
from shared.runtime.ops_server import Presence
from shared.runtime.periodic import every
from shared.runtime.version import VERSION

log = logging.getLogger(__name__)

# Rows of processes gone this long are deleted by the retention loop.
_FORGET_AFTER_S = 86400.0


def new_id(configured: str | None = None) -> str:
    """A process's id: the one configured, else host, pid and a random suffix (a restarted
    container may get the same pid)."""
    return configured or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Registration:
    id: str
    role: ProcessRole
    concurrency: int
    report: ProcessReport


async def register(db: Executor, me: Registration) -> None:
    """Insert (or, for a restarted id, reset) this process's row."""
    await db.execute(
        """
        INSERT INTO processes (id, role, host, pid, version, concurrency, report)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (id) DO UPDATE
           SET role = EXCLUDED.role, host = EXCLUDED.host, pid = EXCLUDED.pid,
               version = EXCLUDED.version, concurrency = EXCLUDED.concurrency,
               report = EXCLUDED.report, running = 0, started_at = now(),
               last_seen_at = now(), stopped_at = NULL
        """,
        me.id,
        me.role,
        socket.gethostname(),
        os.getpid(),
        VERSION,
        me.concurrency,
        # Crew errors quote user code: what Postgres cannot store must not crash a worker.
        storable(me.report.model_dump(mode="json")),
    )


async def beat(db: Executor, process_id: str, running: int) -> bool:
    """Say this process lives, running `running` things. False when its row is gone (a
    retention run took it for dead): the caller registers again."""
    row = await db.fetchval(
        "UPDATE processes SET last_seen_at = now(), running = $2, stopped_at = NULL"
        " WHERE id = $1 RETURNING id",
        process_id,
        running,
    )
    return row is not None


async def sign_off(db: Executor, process_id: str) -> None:
    await db.execute(
        "UPDATE processes SET stopped_at = now(), running = 0 WHERE id = $1", process_id
    )


def _info(r: asyncpg.Record) -> ProcessInfo:
    return ProcessInfo(
        id=r["id"],
        role=r["role"],
        host=r["host"],
        pid=r["pid"],
        version=r["version"],
        concurrency=r["concurrency"],
        running=r["running"],
        started_at=r["started_at"],
        last_seen_at=r["last_seen_at"],
        report=ProcessReport.model_validate(r["report"]),
    )


async def alive(db: Executor, dead_after_s: float) -> list[ProcessInfo]:
    """Processes seen within `dead_after_s` that have not signed off, oldest first."""
    rows = await db.fetch(
        """
        SELECT * FROM processes
         WHERE stopped_at IS NULL AND last_seen_at > now() - make_interval(secs => $1)
         ORDER BY role, started_at
        """,
        float(dead_after_s),
    )
    return [_info(r) for r in rows]


@dataclass(frozen=True)
class Gone:
    """A process no longer alive, and how it went."""

    info: ProcessInfo
    state: ProcessState


async def gone(db: Executor, dead_after_s: float, within_s: float) -> list[Gone]:
    """Processes that signed off (`stopped`) or fell silent for `dead_after_s` (`silent`)
    and were last seen within `within_s`, most recently seen first: what an operator looks
    for after an outage, while the rows of long-gone processes wait for retention."""
    rows = await db.fetch(
        """
        SELECT *, stopped_at IS NOT NULL AS signed_off FROM processes
         WHERE (stopped_at IS NOT NULL OR last_seen_at <= now() - make_interval(secs => $1))
           AND last_seen_at > now() - make_interval(secs => $2)
         ORDER BY last_seen_at DESC
        """,
        float(dead_after_s),
        float(within_s),
    )
    return [
        Gone(_info(r), ProcessState.STOPPED if r["signed_off"] else ProcessState.SILENT)
        for r in rows
    ]


async def forget_gone(db: Executor, older_than_s: float = _FORGET_AFTER_S) -> int:
    """Delete the rows of processes not seen for `older_than_s`."""
    deleted = await db.fetch(
        "DELETE FROM processes WHERE last_seen_at < now() - make_interval(secs => $1) RETURNING id",
        float(older_than_s),
    )
    return len(deleted)


async def keep_registered(
    pool: asyncpg.Pool,
    me: Registration,
    interval_s: float,
    running: Callable[[], int],
    presence: Presence,
) -> None:
    """Register, then heartbeat every `interval_s` until cancelled (signing off then),
    marking each beat recorded on `presence` (what the process' `/health` answers). A lost
    connection is logged and retried at the next beat: being unseen for a while makes the
    process look dead to `/health/debug`, which is what it then is to Postgres."""
    registered = False

    async def heartbeat() -> None:
        nonlocal registered
        if not registered or not await beat(pool, me.id, running()):
            await register(pool, me)
            registered = True
        presence.beat(me.id)

    try:
        await every(
            interval_s,
            heartbeat,
            on_transient=lambda exc: log.warning(
                "%s %s: heartbeat not recorded (%s)", me.role, me.id, exc
            ),
        )
    finally:
        if registered:
            try:
                async with asyncio.timeout(2):
                    await sign_off(pool, me.id)
            except Exception as exc:  # stopping anyway; it will look dead soon enough
                log.warning("%s %s: not signed off (%s)", me.role, me.id, exc)
