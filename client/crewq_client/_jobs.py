"""The `/v1/jobs` requests, built once for both clients."""

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypedDict

from crewq_client._request import ApiRequest, body, model, post, query
from crewq_client._request import get as _get
from schemas.events import EventList
from schemas.jobs import (
    Budget,
    Concurrency,
    InputDefault,
    Job,
    JobBatch,
    JobList,
    JobStatus,
    ResumeFrom,
)
from schemas.webhooks import DeliveryList


class JobOptions(TypedDict, total=False):
    """What `jobs.submit` takes besides the crew and its inputs: `JobCreate`'s fields."""

    webhook_url: str
    timeout: int
    max_retries: int
    input_timeout: int
    input_default: InputDefault
    delay: int
    run_at: datetime
    priority: int
    ttl: int
    concurrency: Concurrency
    budget: Budget
    metadata: Mapping[str, Any]


def new_idempotency_key() -> str:
    return f"crewq-client-{uuid.uuid4()}"


def submit(
    crew: str,
    inputs: Mapping[str, Any] | None,
    idempotency_key: str | None,
    options: JobOptions,
) -> ApiRequest[Job]:
    # The key is made once, here: every retry of this request sends the same one, so a
    # submission whose answer was lost is answered with the first job, never made twice.
    key = idempotency_key or new_idempotency_key()
    return post(
        "/v1/jobs",
        Job,
        body(crew=crew, inputs=dict(inputs or {}), **options),
        headers={"Idempotency-Key": key},
        idempotent=True,
    )


def get(job_id: str) -> ApiRequest[Job]:
    return _get(f"/v1/jobs/{job_id}", Job)


def page(
    *,
    status: JobStatus | None = None,
    crew: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    metadata: Mapping[str, str] | None = None,
    page_size: int | None = None,
) -> ApiRequest[JobList]:
    params = query(
        status=status,
        crew=crew,
        created_after=created_after,
        created_before=created_before,
        limit=page_size,
    )
    for key, value in (metadata or {}).items():
        params[f"metadata[{key}]"] = value
    return ApiRequest("GET", "/v1/jobs", model(JobList), params=params, idempotent=True)


def batch(ids: Sequence[str]) -> ApiRequest[JobBatch]:
    # A read, though a POST: safe to send again.
    return post("/v1/jobs/batch", JobBatch, {"ids": list(ids)}, idempotent=True)


def cancel(job_id: str) -> ApiRequest[Job]:
    return post(f"/v1/jobs/{job_id}/cancel", Job)


def retry(job_id: str, from_: ResumeFrom | None, budget: Budget | None) -> ApiRequest[Job]:
    fields = body(budget=budget)
    if from_ is not None:
        fields["from"] = from_.value
    return post(f"/v1/jobs/{job_id}/retry", Job, fields or None)


def answer_input(job_id: str, approve: bool, feedback: str) -> ApiRequest[Job]:
    return post(f"/v1/jobs/{job_id}/input", Job, {"approve": approve, "feedback": feedback})


def event_page(job_id: str, after: str | None, page_size: int | None) -> ApiRequest[EventList]:
    return ApiRequest(
        "GET",
        f"/v1/jobs/{job_id}/events",
        model(EventList),
        params=query(after=after, limit=page_size),
        headers={"Accept": "application/json"},
        idempotent=True,
    )


def deliveries(job_id: str, page_size: int | None) -> ApiRequest[DeliveryList]:
    return ApiRequest(
        "GET",
        f"/v1/jobs/{job_id}/deliveries",
        model(DeliveryList),
        params=query(limit=page_size),
        idempotent=True,
    )
