"""Submitting a job: the defaults it takes, the checks it must pass, idempotency and the
tenant's bounds, as one call with a typed answer. The API only maps the answer to HTTP."""

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from schemas.jobs import Budget, ConcurrencyStrategy, Job, JobCreate
from shared.domain.crews import CrewRegistry
from shared.runtime.limits import json_size
from shared.runtime.settings import Settings
from shared.store import job_submission, jobs
from shared.store.job_submission import ConcurrencyBusy, TooManyPending
from shared.store.keys import Principal
from shared.store.usage import QuotaExceeded
from shared.webhooks.urls import UrlPolicy, UrlRefused


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool  # False: a replay of an earlier submission with the same idempotency key
    parked: bool  # waits for a slot of its tenant's, off the queue: not to be queued now
    scheduled: bool = False  # starts later: queued by a worker when it comes due
    # What its concurrency strategy did to the other jobs of its key (cancel_running,
    # replace_pending): running jobs whose workers are to be told to stop them.
    cleared: job_submission.KeyCleared | None = None

    @property
    def after(self) -> jobs.AfterCommit:
        """A new job is queued once its insert commits, unless it is parked (it is queued
        when its tenant has a free slot); a replay was queued by the first submission. The
        jobs its strategy withdrew are counted."""
        queued = self.created and not self.parked and not self.scheduled
        mine = jobs.queue_job(self.job.id) if queued else jobs.AfterCommit()
        return mine + self.cleared.after if self.cleared else mine


def budget_of(asked: Budget | None, crew: Budget | None, settings: Settings) -> Budget | None:
    """A job's limits, each the request's, else the crew's, else the platform's; None when
    none is set anywhere."""
    platform = Budget(
        max_tokens=settings.job_max_tokens,
        max_cost_usd=settings.job_max_cost_usd,
        max_llm_calls=settings.job_max_llm_calls,
    )
    limits = {
        name: next(
            (
                value
                for source in (asked, crew, platform)
                if source is not None and (value := getattr(source, name)) is not None
            ),
            None,
        )
        for name in Budget.model_fields
    }
    return Budget(**limits) if any(v is not None for v in limits.values()) else None


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


@dataclass(frozen=True)
class StartInThePast:
    """`run_at` lies further in the past than a clock's skew explains."""

    run_at: datetime


# How far in the past a `run_at` may be: a client's clock a little behind, or a request
# delayed on its way. Further back is a mistake, not "as soon as possible".
RUN_AT_GRACE = timedelta(seconds=60)


Refused = (
    StartInThePast
    | TooLarge
    | UnknownCrew
    | MissingInputs
    | InvalidWebhookUrl
    | IdempotencyKeyReused
    | TooManyPending
    | QuotaExceeded
    | ConcurrencyBusy
)


@dataclass(frozen=True)
class Checked:
    """A job that may be submitted (or made by a schedule's ticks), with its defaults."""

    crew: str  # as registered
    timeout_s: int
    max_retries: int
    budget: Budget | None  # the request's limits, else the crew's, else the platform's
    run_after: datetime | None  # when it may start; None: now
    expires_at: datetime | None  # when it expires unstarted (ttl)


async def check(
    registry: CrewRegistry, settings: Settings, urls: UrlPolicy, body: JobCreate
) -> Checked | TooLarge | UnknownCrew | MissingInputs | InvalidWebhookUrl | StartInThePast:
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
    now = datetime.now(UTC)
    if body.run_at is not None and body.run_at < now - RUN_AT_GRACE:
        return StartInThePast(body.run_at)
    starts = body.run_at or (now + timedelta(seconds=body.delay) if body.delay else None)
    expires = (starts or now) + timedelta(seconds=body.ttl) if body.ttl else None
    timeout = body.timeout or spec.default_timeout or settings.job_default_timeout
    max_retries = next(
        n
        for n in (body.max_retries, spec.default_max_retries, settings.job_default_max_retries)
        if n is not None
    )
    budget = budget_of(body.budget, spec.budget, settings)
    return Checked(spec.name, timeout, max_retries, budget, starts, expires)


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
    concurrency = body.concurrency
    strategy = concurrency.strategy if concurrency else None
    inserted = await job_submission.insert(
        db,
        job_submission.NewJob(
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
            budget=checked.budget,
            run_after=checked.run_after,
            expires_at=checked.expires_at,
            priority=body.priority,
            concurrency_key=concurrency.key if concurrency else None,
            concurrency_limit=concurrency.limit if concurrency else None,
            concurrency_reject=strategy is ConcurrencyStrategy.REJECT,
        ),
        settings.tenant_max_pending_jobs,
        settings.tenant_max_running_jobs,
    )
    if isinstance(inserted, TooManyPending | QuotaExceeded | ConcurrencyBusy):
        return inserted
    if not inserted.same_request:
        return IdempotencyKeyReused(inserted.job.id)
    cleared = None
    if inserted.created and concurrency and strategy in _CLEARING:
        running = strategy is ConcurrencyStrategy.CANCEL_RUNNING
        cleared = await job_submission.clear_key(
            db, principal.owner, concurrency.key, inserted.job.id, running=running
        )
    return Submitted(inserted.job, inserted.created, inserted.parked, inserted.scheduled, cleared)


# The strategies that cancel the key's other jobs once the new one is in.
_CLEARING = frozenset({ConcurrencyStrategy.CANCEL_RUNNING, ConcurrencyStrategy.REPLACE_PENDING})
