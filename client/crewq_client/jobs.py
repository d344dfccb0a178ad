"""`client.jobs`: submit, read, list, cancel, retry and answer jobs; wait for one; follow its
events live."""

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Unpack

from crewq_client import _jobs, _paging
from crewq_client._jobs import JobOptions
from crewq_client._sse import follow, follow_async
from crewq_client._wait import Poll
from schemas.events import Event
from schemas.jobs import Budget, Job, JobBatch, JobStatus, ResumeFrom
from schemas.webhooks import Delivery

if TYPE_CHECKING:
    from crewq_client._client import AsyncClient, Client

__all__ = ["AsyncJobs", "JobOptions", "Jobs"]

DEFAULT_PAGE_SIZE = 100


class Jobs:
    def __init__(self, client: "Client") -> None:
        self._client = client

    def submit(
        self,
        crew: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[JobOptions],
    ) -> Job:
        """Submit a job. An Idempotency-Key is made unless given, and kept over retries, so
        a submission is never made twice; submitting again with the same key and body
        answers the first job."""
        return self._client.send(_jobs.submit(crew, inputs, idempotency_key, options))

    def get(self, job_id: str) -> Job:
        return self._client.send(_jobs.get(job_id))

    def list(
        self,
        *,
        status: JobStatus | None = None,
        crew: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        metadata: Mapping[str, str] | None = None,
        limit: int | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[Job]:
        """Jobs newest first, page after page as the caller iterates; `limit` at most."""
        first = _jobs.page(
            status=status,
            crew=crew,
            created_after=created_after,
            created_before=created_before,
            metadata=metadata,
            page_size=page_size if limit is None else min(page_size, limit),
        )
        return _paging.items(self._client.send, first, limit)

    def batch(self, ids: Sequence[str]) -> JobBatch:
        """Up to 100 jobs at once, in the order asked; ids not the caller's are absent."""
        return self._client.send(_jobs.batch(ids))

    def cancel(self, job_id: str) -> Job:
        return self._client.send(_jobs.cancel(job_id))

    def retry(
        self, job_id: str, *, from_: ResumeFrom | None = None, budget: Budget | None = None
    ) -> Job:
        """Run a failed or cancelled job again: after its last finished task (checkpoint,
        the default) or from the start."""
        return self._client.send(_jobs.retry(job_id, from_, budget))

    def answer_input(self, job_id: str, *, approve: bool = True, feedback: str = "") -> Job:
        """Answer a job in `awaiting_input`."""
        return self._client.send(_jobs.answer_input(job_id, approve, feedback))

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once it has ended (completed, failed, cancelled, expired); raises
        `WaitTimeout` after `timeout` seconds (None: no limit)."""
        poll = Poll(timeout)
        while True:
            job = self.get(job_id)
            if (delay := poll.after(job)) is None:
                return job
            time.sleep(delay)

    def events(self, job_id: str, after: str | None = None) -> Iterator[Event]:
        """The job's events oldest first (after the event `after`), then live as they
        happen, until the job ends; a dropped connection is resumed where it broke."""
        return follow(self._client.http, job_id, after, self._client.retry)

    def event_history(self, job_id: str, after: str | None = None) -> Iterator[Event]:
        """The events the job has had so far, oldest first, page after page (not live)."""
        first = _jobs.event_page(job_id, after, DEFAULT_PAGE_SIZE)
        return _paging.items(self._client.send, first, None, cursor="after")

    def deliveries(self, job_id: str) -> Iterator[Delivery]:
        """The webhooks this job's events owed, newest first, with every attempt."""
        first = _jobs.deliveries(job_id, DEFAULT_PAGE_SIZE)
        return _paging.items(self._client.send, first, None)


class AsyncJobs:
    """`Jobs`, awaited: the same requests, sent by an `AsyncClient`."""

    def __init__(self, client: "AsyncClient") -> None:
        self._client = client

    async def submit(
        self,
        crew: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[JobOptions],
    ) -> Job:
        return await self._client.send(_jobs.submit(crew, inputs, idempotency_key, options))

    async def get(self, job_id: str) -> Job:
        return await self._client.send(_jobs.get(job_id))

    def list(
        self,
        *,
        status: JobStatus | None = None,
        crew: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        metadata: Mapping[str, str] | None = None,
        limit: int | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AsyncIterator[Job]:
        first = _jobs.page(
            status=status,
            crew=crew,
            created_after=created_after,
            created_before=created_before,
            metadata=metadata,
            page_size=page_size if limit is None else min(page_size, limit),
        )
        return _paging.items_async(self._client.send, first, limit)

    async def batch(self, ids: Sequence[str]) -> JobBatch:
        return await self._client.send(_jobs.batch(ids))

    async def cancel(self, job_id: str) -> Job:
        return await self._client.send(_jobs.cancel(job_id))

    async def retry(
        self, job_id: str, *, from_: ResumeFrom | None = None, budget: Budget | None = None
    ) -> Job:
        return await self._client.send(_jobs.retry(job_id, from_, budget))

    async def answer_input(self, job_id: str, *, approve: bool = True, feedback: str = "") -> Job:
        return await self._client.send(_jobs.answer_input(job_id, approve, feedback))

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        poll = Poll(timeout)
        while True:
            job = await self.get(job_id)
            if (delay := poll.after(job)) is None:
                return job
            await asyncio.sleep(delay)

    def events(self, job_id: str, after: str | None = None) -> AsyncIterator[Event]:
        return follow_async(self._client.http, job_id, after, self._client.retry)

    def event_history(self, job_id: str, after: str | None = None) -> AsyncIterator[Event]:
        first = _jobs.event_page(job_id, after, DEFAULT_PAGE_SIZE)
        return _paging.items_async(self._client.send, first, None, cursor="after")

    def deliveries(self, job_id: str) -> AsyncIterator[Delivery]:
        first = _jobs.deliveries(job_id, DEFAULT_PAGE_SIZE)
        return _paging.items_async(self._client.send, first, None)
