"""Bulk operations in Postgres: every statement on `bulk_operations`.

A bulk cancel or retry freezes its match when asked (the ids of the jobs the filter
matched then, `jobs.matching`), so jobs submitted meanwhile are never touched. Workers do
the work (worker/bulk.py): `take_batch` locks one running operation no other worker holds
(`FOR UPDATE SKIP LOCKED`) and hands out its next ids; each job is then moved by the same
per-job function its single-job route calls (`jobs.request_cancel`, `jobs.restart`), each
in its own short transaction through the `Move` table; `record_batch` counts the batch and
ends the operation after its last one, in the transaction that held the lock. A worker
that dies mid-batch leaves the batch to be done again: every move is compare-and-set, so
a job moved already is simply not moved twice.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from schemas.bulk import BulkKind, BulkOperation, BulkStatus, JobSelection
from shared.domain.owners import Owner
from shared.runtime.db import Conn, Executor
from shared.runtime.ids import new_id


def to_operation(row: asyncpg.Record) -> BulkOperation:
    return BulkOperation(
        id=row["id"],
        kind=BulkKind(row["kind"]),
        dry_run=False,
        status=BulkStatus(row["status"]),
        filter=JobSelection.model_validate(row["filter"], strict=False),
        matched=row["matched"],
        processed=row["done"],
        changed=row["changed"],
        livemode=row["livemode"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )


async def create(
    db: Executor,
    owner: Owner,
    kind: BulkKind,
    selection: JobSelection,
    job_ids: list[str],
    monthly_limit: int | None,
) -> BulkOperation:
    """An operation over `job_ids`; one matching nothing is done at once."""
    row = await db.fetchrow(
        "INSERT INTO bulk_operations (id, tenant_id, livemode, kind, filter, job_ids,"
        " monthly_limit, matched, status, finished_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
        "  CASE WHEN $8 = 0 THEN 'done' ELSE 'running' END,"
        "  CASE WHEN $8 = 0 THEN now() END) RETURNING *",
        new_id("bulk"),
        owner.tenant_id,
        owner.livemode,
        kind,
        selection.model_dump(mode="json", exclude_none=True),
        job_ids,
        monthly_limit,
        len(job_ids),
    )
    assert row is not None
    return to_operation(row)


async def get(db: Executor, owner: Owner, operation_id: str) -> BulkOperation | None:
    row = await db.fetchrow(
        "SELECT * FROM bulk_operations WHERE id = $1 AND tenant_id = $2 AND livemode = $3",
        operation_id,
        owner.tenant_id,
        owner.livemode,
    )
    return to_operation(row) if row else None


@dataclass(frozen=True)
class Batch:
    """The next ids of an operation one worker holds until `record_batch`."""

    conn: Conn  # in the transaction holding the operation's row
    operation_id: str
    owner: Owner
    kind: BulkKind
    monthly_limit: int | None
    job_ids: list[str]
    done: int  # processed before this batch


@asynccontextmanager
async def take_batch(pool: asyncpg.Pool, size: int) -> AsyncIterator[Batch | None]:
    """Hold one running operation no other worker holds, and its next `size` ids; None
    when there is none. The hold ends when the block does (with `record_batch`'s count
    committed, or nothing should the block raise)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT id, tenant_id, livemode, kind, monthly_limit, done,"
            " job_ids[done + 1 : done + $1] AS batch"
            "  FROM bulk_operations WHERE status = 'running'"
            " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
            size,
        )
        if row is None:
            yield None
            return
        yield Batch(
            conn,
            row["id"],
            Owner(row["tenant_id"], row["livemode"]),
            BulkKind(row["kind"]),
            row["monthly_limit"],
            list(row["batch"]),
            row["done"],
        )


async def record_batch(batch: Batch, changed: int) -> BulkOperation:
    """Count the batch (compare-and-set on how many were done before it), and end the
    operation after its last."""
    row = await batch.conn.fetchrow(
        "UPDATE bulk_operations SET done = done + $3, changed = changed + $4,"
        " status = CASE WHEN done + $3 >= matched THEN 'done' ELSE 'running' END,"
        " finished_at = CASE WHEN done + $3 >= matched THEN now() END"
        " WHERE id = $1 AND done = $2 RETURNING *",
        batch.operation_id,
        batch.done,
        len(batch.job_ids),
        changed,
    )
    assert row is not None  # the row is locked: no other worker counted it
    return to_operation(row)


async def purge(db: Executor, older_than_days: float) -> int:
    """Forget operations done this long ago (each holds its match's ids)."""
    deleted = await db.fetch(
        "DELETE FROM bulk_operations WHERE status = 'done'"
        " AND finished_at < now() - make_interval(days => $1::int) RETURNING id",
        max(1, int(older_than_days)),
    )
    return len(deleted)
