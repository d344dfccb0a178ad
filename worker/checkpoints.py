"""A worker's side of crew checkpoints: sealing and storing the states its crew processes
report, and finding the one an attempt resumes from.

A checkpoint never fails a job. One that cannot be stored (no CREWQ_CHECKPOINT_KEY, past
CREWQ_CHECKPOINT_MAX_BYTES, Postgres unreachable) is skipped, and a later attempt resumes
from the one before it or from the first task; one that cannot be opened is passed over for
the one before it. Each is a log line and `crewq_checkpoint_problems_total{problem}`.
"""

import logging
import time

import asyncpg

from shared.runtime import metrics
from shared.runtime.metrics import CheckpointProblem
from shared.runtime.secret_box import SecretBox
from shared.store import checkpoints, job_attempts
from shared.store.checkpoints import Checkpoint

log = logging.getLogger(__name__)


class CheckpointKeeper:
    def __init__(self, db: asyncpg.Pool, box: SecretBox | None, max_bytes: int) -> None:
        self.db = db
        self.box = box  # None: CREWQ_CHECKPOINT_KEY is not set, and no checkpoint is kept
        self.max_bytes = max_bytes

    @property
    def enabled(self) -> bool:
        return self.box is not None

    def _problem(self, claim: job_attempts.Claim, problem: CheckpointProblem, detail: str) -> None:
        log.warning("job %s: checkpoint %s: %s", claim.job_id, problem.value, detail)
        metrics.checkpoint_problem(claim.crew, problem)

    async def keep(self, claim: job_attempts.Claim, checkpoint: Checkpoint) -> bool:
        """Seal and store the state this attempt's crew reported; False when it was not."""
        if self.box is None:
            self._problem(claim, CheckpointProblem.NO_KEY, "CREWQ_CHECKPOINT_KEY is not set")
            return False
        size = len(checkpoint.state)
        if size > self.max_bytes:
            self._problem(
                claim,
                CheckpointProblem.TOO_LARGE,
                f"{size} bytes after task {checkpoint.task!r}, past"
                f" CREWQ_CHECKPOINT_MAX_BYTES ({self.max_bytes}); a resume starts earlier",
            )
            return False
        started = time.perf_counter()
        try:
            stored = await checkpoints.save(
                self.db, claim.job_id, claim.attempt, checkpoint, self.box
            )
        except (asyncpg.PostgresError, OSError) as exc:
            self._problem(claim, CheckpointProblem.WRITE_FAILED, f"{type(exc).__name__}: {exc}")
            return False
        if isinstance(stored, checkpoints.NotStored):
            log.info("job %s: checkpoint not stored: %s", claim.job_id, stored.reason)
            return False
        metrics.checkpoint_stored(claim.crew, size, time.perf_counter() - started)
        return True

    async def newest(self, claim: job_attempts.Claim) -> Checkpoint | None:
        """The state this attempt resumes from; None: it runs the crew from the start."""
        if self.box is None:
            return None
        opened = await checkpoints.newest(self.db, claim.job_id, self.box)
        for _ in range(opened.unreadable):
            self._problem(
                claim,
                CheckpointProblem.UNREADABLE,
                "no key of CREWQ_CHECKPOINT_KEY opens it; an older one serves",
            )
        return opened.checkpoint

    def not_restored(self, claim: job_attempts.Claim, reason: str) -> None:
        """The crew process could not take up the state it was given: it ran from the start."""
        self._problem(claim, CheckpointProblem.NOT_RESTORED, reason)
