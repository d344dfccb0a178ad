"""Every crewq Prometheus metric, defined once on prometheus_client's default registry, and
the ways a process serves them: the API on its own `GET /metrics` (`api/metrics.py`),
workers and dispatchers on a port of their own (`shared/runtime/ops_server.py`,
`CREWQ_METRICS_PORT`).

Each process keeps its own numbers (no multiprocess mode): Prometheus scrapes each one and
sums. Every process exposes every unlabelled metric, at 0 where it does not own it (the API's
`crewq_jobs_running` stays 0): sum `crewq_jobs_running` (each worker's own), and take the
`max` of what every worker samples of the one queue (`crewq_queue_depth`,
`crewq_jobs_waiting`) and every dispatcher of the one outbox (`crewq_webhook_backlog`).
Crew processes are not scraped: what they report (LLM calls) is counted by their worker.

Labels are kept to small, fixed sets: crew and model names (what is deployed), outcomes
(the StrEnums below), route templates. Never job ids, tenants or raw paths: each distinct
value is a series kept forever by the scraping Prometheus.
"""

from enum import StrEnum

from aiohttp import web
from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from schemas.jobs import ErrorCode
from shared.runtime.version import VERSION

# No `*_created` series: a timestamp per labelled series doubles what each scrape carries,
# and Prometheus derives counter resets on its own.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Role(StrEnum):
    API = "api"
    WORKER = "worker"
    DISPATCHER = "dispatcher"


class JobOutcome(StrEnum):
    """How a job ended for good (an attempt that will be retried is not an end)."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # never started: its ttl ran out


class LlmOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class TokenKind(StrEnum):
    PROMPT = "prompt"
    COMPLETION = "completion"


class WebhookOutcome(StrEnum):
    SUCCEEDED = "succeeded"  # the receiver answered 2xx
    REJECTED = "rejected"  # it answered, with any other status
    TIMED_OUT = "timed_out"  # no full answer within the webhook timeout
    UNREACHABLE = "unreachable"  # no answer at all: DNS, connection, TLS, refused address


# Crews run for seconds to hours (MAX_TIMEOUT_S is 2 h): the default buckets stop at 10 s.
JOB_DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
# From "picked up at once" to "waited behind an hour of work".
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600)
# Up to past the longest webhook timeout anyone should configure.
WEBHOOK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

BUILD = Info("crewq_build", "crewq's version and the role of this process.")

JOBS_SUBMITTED = Counter("crewq_jobs_submitted_total", "Jobs the API accepted, by crew.", ["crew"])
JOBS_STARTED = Counter(
    "crewq_jobs_started_total",
    "Job attempts a worker started running, by crew (a retried job counts each attempt).",
    ["crew"],
)
JOBS_FINISHED = Counter(
    "crewq_jobs_finished_total",
    "Jobs that reached a final state, by crew and outcome (completed, failed, cancelled).",
    ["crew", "outcome"],
)
JOB_RETRIES = Counter(
    "crewq_job_retries_total",
    "Failed job attempts that were scheduled for another try, by crew and error code.",
    ["crew", "reason"],
)
JOB_TIMEOUTS = Counter(
    "crewq_job_timeouts_total", "Job attempts stopped for running past their timeout.", ["crew"]
)
JOB_DURATION = Histogram(
    "crewq_job_duration_seconds",
    "From a job's first start to its final state (retries included), by crew and outcome.",
    ["crew", "outcome"],
    buckets=JOB_DURATION_BUCKETS,
)
JOB_QUEUE_WAIT = Histogram(
    "crewq_job_queue_wait_seconds",
    "How long a job attempt waited between becoming due (submitted, or its retry delay over)"
    " and starting, by crew.",
    ["crew"],
    buckets=QUEUE_WAIT_BUCKETS,
)
QUEUE_DEPTH = Gauge(
    "crewq_queue_depth", "Jobs queued and not yet started, as last measured by this process."
)
JOBS_RUNNING = Gauge("crewq_jobs_running", "Job attempts this process is running now.")
JOBS_WAITING = Gauge(
    "crewq_jobs_waiting",
    "Pending jobs as last counted in Postgres by this process: `due` (free to start now) or"
    " `parked` (behind their tenant's running cap).",
    ["state"],
)
JOB_OLDEST_DUE = Gauge(
    "crewq_job_oldest_due_seconds",
    "How long the longest-waiting due job has waited (0: none), as last measured here.",
)
WEBHOOK_BACKLOG = Gauge(
    "crewq_webhook_backlog",
    "Webhook deliveries owed as last counted in Postgres by this process: `due` now, or"
    " `scheduled` for a later retry.",
    ["state"],
)
WEBHOOK_OLDEST_DUE = Gauge(
    "crewq_webhook_oldest_due_seconds",
    "How long the most overdue webhook delivery has been due (0: none), as last measured here.",
)

LLM_CALLS = Counter(
    "crewq_llm_calls_total", "Calls crews made to LLMs, by model and outcome.", ["model", "outcome"]
)
LLM_TOKENS = Counter(
    "crewq_llm_tokens_total",
    "Tokens LLMs reported, by model and kind (prompt, completion).",
    ["model", "kind"],
)
LLM_THROTTLED = Histogram(
    "crewq_llm_throttled_seconds",
    "How long LLM calls waited for their model's shared limit (or a provider's Retry-After)"
    " before they were sent, by model; only calls that waited.",
    ["model"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
LLM_UNTHROTTLED = Counter(
    "crewq_llm_unthrottled_total",
    "LLM calls sent without their model's limit because the limiter's Redis was away.",
    ["model"],
)

WEBHOOK_ATTEMPTS = Counter(
    "crewq_webhook_attempts_total", "Webhook delivery attempts, by outcome.", ["outcome"]
)
# Labelled by outcome: timed-out attempts all sit at the timeout and would otherwise hide
# how fast receivers that do answer are.
WEBHOOK_DELIVERY = Histogram(
    "crewq_webhook_delivery_seconds",
    "How long one webhook attempt took, from sending to its answer or giving up, by outcome.",
    ["outcome"],
    buckets=WEBHOOK_BUCKETS,
)

HTTP_REQUESTS = Counter(
    "crewq_http_requests_total",
    "HTTP requests the API answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "crewq_http_request_duration_seconds",
    "How long the API took to answer, by method and route template (event streams excluded).",
    ["method", "route"],
)


class CheckpointProblem(StrEnum):
    """Why a checkpoint was not written or not read (the job runs on regardless)."""

    NO_KEY = "no_key"  # CREWQ_CHECKPOINT_KEY is not set on this worker
    TOO_LARGE = "too_large"  # past CREWQ_CHECKPOINT_MAX_BYTES
    WRITE_FAILED = "write_failed"  # Postgres refused or was unreachable
    UNREADABLE = "unreadable"  # no key of CREWQ_CHECKPOINT_KEY opens it, or it is not a state
    NOT_RESTORED = "not_restored"  # the crew no longer matches it (its tasks changed)


CHECKPOINTS = Counter("crewq_checkpoints_total", "Crew checkpoints stored, by crew.", ["crew"])
CHECKPOINT_PROBLEMS = Counter(
    "crewq_checkpoint_problems_total",
    "Checkpoints not written or not read, by crew and why; the job ran on without them.",
    ["crew", "problem"],
)
CHECKPOINT_BYTES = Histogram(
    "crewq_checkpoint_bytes",
    "Size of each stored crew checkpoint before sealing.",
    buckets=(1024, 4096, 16384, 65536, 262144, 1048576, 4194304),
)
CHECKPOINT_WRITE = Histogram(
    "crewq_checkpoint_write_seconds",
    "Time to seal and store one crew checkpoint.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
RESUMES = Counter(
    "crewq_job_resumes_total", "Attempts that resumed a crew from its checkpoint.", ["crew"]
)


LLM_COST = Counter(
    "crewq_llm_cost_usd_total",
    "What model calls cost (US dollars, at each model's price), by model.",
    ["model"],
)


class TickOutcome(StrEnum):
    """What one fired tick of a schedule came to."""

    JOB = "job"  # its job was made
    SKIPPED = "skipped"  # missed during an outage, and its schedule skips missed ticks
    REFUSED = "refused"  # the tenant's pending bound or monthly quota refused the job


SCHEDULE_TICKS = Counter(
    "crewq_schedule_ticks_total", "Schedule ticks fired, by what came of each.", ["outcome"]
)
SCHEDULE_DRIFT = Histogram(
    "crewq_schedule_drift_seconds",
    "How late a schedule's job was made after its tick was due.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60),
)
BULK_JOBS = Counter(
    "crewq_bulk_jobs_total",
    "Jobs a bulk operation handled, by kind and whether it changed them.",
    ["kind", "changed"],
)


def schedule_tick(outcome: TickOutcome, drift_s: float | None) -> None:
    SCHEDULE_TICKS.labels(outcome.value).inc()
    if drift_s is not None:
        SCHEDULE_DRIFT.observe(max(0.0, drift_s))


def bulk_handled(kind: str, changed: bool) -> None:
    BULK_JOBS.labels(kind, "true" if changed else "false").inc()


def checkpoint_stored(crew: str, size: int, seconds: float) -> None:
    CHECKPOINTS.labels(crew).inc()
    CHECKPOINT_BYTES.observe(size)
    CHECKPOINT_WRITE.observe(seconds)


def checkpoint_problem(crew: str, problem: CheckpointProblem) -> None:
    CHECKPOINT_PROBLEMS.labels(crew, problem.value).inc()


def identify(role: Role) -> None:
    """Set `crewq_build_info{version, role}` for this process; call once at start."""
    BUILD.info({"version": VERSION, "role": role.value})


def job_submitted(crew: str) -> None:
    JOBS_SUBMITTED.labels(crew).inc()


def job_started(crew: str, queue_wait_s: float) -> None:
    JOBS_STARTED.labels(crew).inc()
    # The wait is measured against Postgres' clock: a little skew must not go negative.
    JOB_QUEUE_WAIT.labels(crew).observe(max(0.0, queue_wait_s))


def job_finished(crew: str, outcome: JobOutcome, duration_s: float | None) -> None:
    """A job's final state; `duration_s` None when it never ran (cancelled while queued)."""
    JOBS_FINISHED.labels(crew, outcome.value).inc()
    if duration_s is not None:
        JOB_DURATION.labels(crew, outcome.value).observe(max(0.0, duration_s))


def job_retried(crew: str, reason: ErrorCode) -> None:
    JOB_RETRIES.labels(crew, reason.value).inc()


def job_timed_out(crew: str) -> None:
    JOB_TIMEOUTS.labels(crew).inc()


def jobs_waiting(due: int, parked: int, oldest_due_s: float | None) -> None:
    JOBS_WAITING.labels("due").set(due)
    JOBS_WAITING.labels("parked").set(parked)
    JOB_OLDEST_DUE.set(oldest_due_s or 0.0)


def webhooks_owed(due: int, scheduled: int, oldest_due_s: float | None) -> None:
    WEBHOOK_BACKLOG.labels("due").set(due)
    WEBHOOK_BACKLOG.labels("scheduled").set(scheduled)
    WEBHOOK_OLDEST_DUE.set(oldest_due_s or 0.0)


def llm_called(model: str, prompt_tokens: int, completion_tokens: int, *, failed: bool) -> None:
    """One LLM call a crew process reported (counted here, in its worker: crew processes
    are not scraped)."""
    outcome = LlmOutcome.FAILED if failed else LlmOutcome.SUCCEEDED
    LLM_CALLS.labels(model, outcome.value).inc()
    # Counters refuse to go down (ValueError); a provider's odd usage report must not
    # fail the job that made the call.
    for kind, tokens in (
        (TokenKind.PROMPT, prompt_tokens),
        (TokenKind.COMPLETION, completion_tokens),
    ):
        if tokens > 0:
            LLM_TOKENS.labels(model, kind.value).inc(tokens)


def llm_throttled(model: str, waited_s: float) -> None:
    LLM_THROTTLED.labels(model).observe(max(0.0, waited_s))


def webhook_attempt(outcome: WebhookOutcome, duration_s: float) -> None:
    WEBHOOK_ATTEMPTS.labels(outcome.value).inc()
    WEBHOOK_DELIVERY.labels(outcome.value).observe(max(0.0, duration_s))


def render() -> tuple[bytes, str]:
    """The default registry in Prometheus' text format: (body, Content-Type).

    Always the classic 0.0.4 format, which every scraper reads; not negotiated, because
    prometheus_client's negotiation (`choose_encoder`) raises on a malformed version in
    `Accept`, and on the public API that would be a 500 anyone can provoke."""
    return generate_latest(REGISTRY), CONTENT_TYPE_PLAIN_0_0_4


async def metrics_handler(request: web.Request) -> web.Response:
    body, content_type = render()
    # Not `content_type=`: aiohttp refuses one carrying parameters (version, charset).
    return web.Response(body=body, headers={"Content-Type": content_type})
