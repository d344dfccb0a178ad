"""Crew checkpoints in Postgres: every statement on `job_checkpoints`.

A running crew's state after each task it finished (and, when a task waits for a person,
that task's answer under review) is stored here by its worker, sealed with the keys of
`CREWQ_CHECKPOINT_KEY`: the state holds task outputs and agent conversations, which may
quote anything the job was given. A later attempt of the job resumes from the newest
checkpoint it can open. The crew process builds the state and the worker seals it; the
state's shape is the crew process's own (worker/crew/checkpoint.py), opaque here.

Only the attempt that runs the job now may write (compare-and-set on the job's attempt and
status), so a stale attempt, still finishing a task as another took over, cannot put an
older state in front of a newer one. A few checkpoints are kept per job (`KEEP`): when the
newest cannot be opened (a key dropped from CREWQ_CHECKPOINT_KEY too early) the one before
serves. They go with their job (ON DELETE CASCADE), and once it completes.
"""

import logging
from dataclasses import dataclass

from cryptography.fernet import InvalidToken

from shared.runtime.db import Executor
from shared.runtime.secret_box import SecretBox

log = logging.getLogger(__name__)

# Checkpoints kept per job: the newest serves; older ones stand in when it cannot be opened.
KEEP = 3


@dataclass(frozen=True)
class Checkpoint:
    """A crew's state as its crew process gave it."""

    tasks_done: int  # the crew's tasks it holds as finished, from the first
    task: str | None  # the name of the last of them
    awaiting: bool  # it also holds a task's answer waiting for a person
    state: bytes  # JSON; its shape is worker/crew/checkpoint.py's


@dataclass(frozen=True)
class Stored:
    bytes: int  # the state's size


@dataclass(frozen=True)
class NotStored:
    reason: str  # the attempt is no longer the job's running one


async def save(
    db: Executor, job_id: str, attempt: int, checkpoint: Checkpoint, box: SecretBox
) -> Stored | NotStored:
    """Seal and store a checkpoint of this attempt of the job, unless the job has moved on
    from it; older ones past `KEEP` are deleted in the same statement."""
    sealed = box.seal_bytes(checkpoint.state)
    row = await db.fetchrow(
        """
        WITH stored AS (
            INSERT INTO job_checkpoints (job_id, attempt, tasks_done, task, awaiting, sealed, bytes)
            SELECT $1, $2, $3, $4, $5, $6, $7 FROM jobs
             WHERE id = $1 AND attempt = $2 AND status = 'running'
            RETURNING id
        ), pruned AS (
            DELETE FROM job_checkpoints WHERE id IN (
                SELECT id FROM job_checkpoints WHERE job_id = $1
                 ORDER BY id DESC OFFSET $8 - 1)
               AND EXISTS (SELECT FROM stored)
        )
        SELECT id FROM stored
        """,
        job_id,
        attempt,
        checkpoint.tasks_done,
        checkpoint.task,
        checkpoint.awaiting,
        sealed,
        len(checkpoint.state),
        KEEP,
    )
    if row is None:
        return NotStored(f"attempt {attempt} of job {job_id} is no longer running")
    return Stored(len(checkpoint.state))


@dataclass(frozen=True)
class Opened:
    checkpoint: Checkpoint | None  # None: the job has none that opens
    unreadable: int  # newer checkpoints passed over: no key opened them


async def newest(db: Executor, job_id: str, box: SecretBox) -> Opened:
    """The job's newest checkpoint that opens with a key of `box`; each newer one passed
    over (no key opens it) is logged and counted in `unreadable`."""
    rows = await db.fetch(
        "SELECT id, tasks_done, task, awaiting, sealed FROM job_checkpoints"
        " WHERE job_id = $1 ORDER BY id DESC LIMIT $2",
        job_id,
        KEEP,
    )
    for passed, row in enumerate(rows):
        try:
            state = box.open_bytes(bytes(row["sealed"]))
        except InvalidToken:
            log.warning(
                "job %s: checkpoint %d opens with no key of CREWQ_CHECKPOINT_KEY; trying an"
                " older one",
                job_id,
                row["id"],
            )
            continue
        found = Checkpoint(row["tasks_done"], row["task"], row["awaiting"], state)
        return Opened(found, passed)
    return Opened(None, len(rows))


async def delete_all(db: Executor, job_id: str) -> int:
    """Forget the job's checkpoints (it completed, or is retried from its start)."""
    deleted = await db.fetch("DELETE FROM job_checkpoints WHERE job_id = $1 RETURNING id", job_id)
    return len(deleted)
