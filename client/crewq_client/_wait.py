"""`jobs.wait`: poll the job with a growing interval until it has ended or the time is up.
Polling, not the event stream: one short request at a time survives any proxy, and the
deadline is exact."""

import time

from crewq_client.errors import WaitTimeout
from schemas.jobs import TERMINAL_STATUSES, Job

FIRST_POLL_S = 0.25
MAX_POLL_S = 2.0


class Poll:
    def __init__(self, timeout: float | None, first: float = FIRST_POLL_S) -> None:
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.interval = first

    def after(self, job: Job) -> float | None:
        """None: the job has ended. Else how long to sleep before reading it again; raises
        `WaitTimeout` once the deadline has passed."""
        if job.status in TERMINAL_STATUSES:
            return None
        delay = self.interval
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                assert self.timeout is not None
                raise WaitTimeout(job, self.timeout)
            delay = min(delay, left)
        self.interval = min(MAX_POLL_S, self.interval * 1.5)
        return delay
