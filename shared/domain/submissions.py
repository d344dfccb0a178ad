"""Submitting a job: the defaults it takes, the checks it must pass, idempotency and the
tenant's bounds, as one call with a typed answer. The API only maps the answer to HTTP."""

import hashlib
from dataclasses import dataclass

import asyncpg

from schemas.jobs import Job, JobCreate
from shared.domain.crews import CrewRegistry
from shared.runtime.limits import json_size
from shared.runtime.settings import Settings
from shared.store import jobs
from shared.store.jobs import QuotaExceeded, TooManyPending
from shared.store.keys import Principal
from shared.webhooks.urls import UrlPolicy, UrlRefused


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool  # False: a replay of an earlier submission with the same idempotency key
    parked: bool  # waits for a slot of its tenant's, off the queue: not to be queued now

    @property
    def after(self) -> jobs.AfterCommit:
        """A new job is queued once its insert commits, unless it is parked (it is queued
        when its tenant has a free slot); a replay was queued by the first submission."""
        queued = self.created and not self.parked
        return jobs.queue_job(self.job.id) if queued else jobs.AfterCommit()


@dataclass(frozen=True)
class UnknownCrew:
    crew: str
    available: list[str]


@dataclass(frozen=True)
class MissingInputs:
    crew: str
    missing: list[str]
    required: list[str]


@dataclass(frozen=True)
class TooLarge:
    """Inputs and metadata together take more than a job may hold."""

    field: str  # the larger of the two: the one to shrink
    size: int  # bytes of both, as JSON
    limit: int


@dataclass(frozen=True)
class InvalidWebhookUrl:
    reason: str


@dataclass(frozen=True)
class IdempotencyKeyReused:
    """The key was used before with a different request body."""

    job_id: str


Refused = (
    TooLarge
    | UnknownCrew
    | MissingInputs
    | InvalidWebhookUrl
    | IdempotencyKeyReused
    | TooManyPending
    | QuotaExceeded
)


@dataclass(frozen=True)
class Checked:
    """A job that may be submitted (or made by a schedule's ticks), with its defaults."""

    crew: str  # as registered
    timeout_s: int
    max_retries: int


async def check(
    registry: CrewRegistry, settings: Settings, urls: UrlPolicy, body: JobCreate
) -> Checked | TooLarge | UnknownCrew | MissingInputs | InvalidWebhookUrl:
    """What any job must pass before it is stored, and the defaults it takes: a request
    without `timeout` or `max_retries` takes the crew's own, then the platform's. Inputs
    and metadata together (at any depth) are bounded by `job_max_input_bytes`: a job is
    stored, listed and sent to its crew whole, many times over."""
    inputs_size, metadata_size = json_size(body.inputs), json_size(body.metadata)
    if inputs_size + metadata_size > settings.job_max_input_bytes:
        field = "inputs" if inputs_size >= metadata_size else "metadata"
        return TooLarge(field, inputs_size + metadata_size, settings.job_max_input_bytes)
    spec = registry.get(body.crew)
    if spec is None:
        return UnknownCrew(body.crew, sorted(registry.crews))
    missing = spec.missing_inputs(body.inputs)
    if missing:
        return MissingInputs(spec.name, missing, spec.inputs)
    if body.webhook_url is not None:
        try:
            await urls.check(body.webhook_url)
        except UrlRefused as exc:
            return InvalidWebhookUrl(str(exc))
    timeout = body.timeout or spec.default_timeout or settings.job_default_timeout
    max_retries = next(
        n
        for n in (body.max_retries, spec.default_max_retries, settings.job_default_max_retries)
        if n is not None
    )
    return Checked(spec.name, timeout, max_retries)


async def submit(
    db: asyncpg.Pool,
    registry: CrewRegistry,
    settings: Settings,
    urls: UrlPolicy,
    principal: Principal,
    body: JobCreate,
    *,
    raw_body: bytes,
    idempotency_key: str | None,
    traceparent: str | None,
) -> Submitted | Refused:
    """Store a pending job for the principal's tenant (not queue it: the caller does, once this has
    committed, unless it is parked behind its tenant's cap), once it passed `check`. A
    repeated idempotency key answers the earlier job when the body is the same byte for
    byte, and is refused otherwise. A test key's job is a sandbox job: offline, outside
    the monthly quota."""
    checked = await check(registry, settings, urls, body)
    if not isinstance(checked, Checked):
        return checked
    inserted = await jobs.insert(
        db,
        jobs.NewJob(
            tenant_id=principal.tenant_id,
            crew=checked.crew,
            inputs=body.inputs,
            metadata=body.metadata,
            webhook_url=body.webhook_url,
            timeout_s=checked.timeout_s,
            max_retries=checked.max_retries,
            idempotency_key=idempotency_key,
            request_hash=hashlib.sha256(raw_body).digest() if idempotency_key else None,
            traceparent=traceparent,
            livemode=principal.livemode,
            monthly_limit=principal.allowance.jobs_per_month,
            input_timeout_s=body.input_timeout,
            input_default=body.input_default,
        ),
        settings.tenant_max_pending_jobs,
        settings.tenant_max_running_jobs,
    )
    if isinstance(inserted, TooManyPending | QuotaExceeded):
        return inserted
    if not inserted.same_request:
        return IdempotencyKeyReused(inserted.job.id)
    return Submitted(inserted.job, inserted.created, inserted.parked)
