"""Each tenant's failed API requests (status >= 400): every statement on
`request_failures`. Kept `CREWQ_REQUEST_LOG_DAYS` (7), so that a customer can find the
request id of what went wrong, and quote it."""

from dataclasses import dataclass
from datetime import datetime

from shared.domain.owners import Owner
from shared.runtime.db import Executor


@dataclass(frozen=True)
class RequestFailure:
    tenant_id: str
    key_id: str | None
    at: datetime
    method: str
    path: str
    status: int
    code: str
    request_id: str


_COLUMNS = ("tenant_id", "key_id", "at", "method", "path", "status", "code", "request_id")


async def insert_many(db: Executor, failures: list[RequestFailure]) -> None:
    await db.executemany(
        f"INSERT INTO request_failures ({', '.join(_COLUMNS)})"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT DO NOTHING",
        [tuple(getattr(f, c) for c in _COLUMNS) for f in failures],
    )


async def recent(db: Executor, owner: Owner, limit: int) -> list[RequestFailure]:
    """The owner's failures, newest first: a test owner's are those of test keys (so a
    test key's log names no live job), a live owner's all the others."""
    rows = await db.fetch(
        f"SELECT {', '.join(_COLUMNS)} FROM request_failures f"
        " WHERE f.tenant_id = $1"
        "   AND EXISTS (SELECT FROM api_keys k WHERE k.id = f.key_id AND k.mode = 'test')"
        "       = NOT $3"
        " ORDER BY f.at DESC, f.id DESC LIMIT $2",
        owner.tenant_id,
        limit,
        owner.livemode,
    )
    return [RequestFailure(**dict(r)) for r in rows]


async def purge(db: Executor, older_than_days: float) -> int:
    deleted = await db.fetchval(
        """
        WITH gone AS (
            DELETE FROM request_failures WHERE at < now() - make_interval(days => $1)
            RETURNING 1)
        SELECT count(*) FROM gone
        """,
        older_than_days,
    )
    return int(deleted)
