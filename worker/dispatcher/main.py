"""The webhook dispatcher process: delivers the outbox.

It wakes on Postgres NOTIFY (a new event leaves within milliseconds), on the next
scheduled retry, or on a slow poll as a fallback. One slow or dead receiver cannot delay
the others: each receiver (a URL's origin: scheme, host, port; so no path or query string
makes a new one) gets at most `per_endpoint` requests in flight, and a circuit breaker
stops claiming its deliveries for a while after repeated failures; claims skip such
receivers, so their rows stay queued in Postgres instead of occupying the dispatcher. Claims go
round the tenants, so one tenant's backlog cannot delay another's. Its pump and listener
are supervised: should one end, the dispatcher finishes what it has in flight and exits
non-zero, to be restarted.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg

from schemas.health import ProcessReport
from schemas.webhooks import DeliveryStatus, DisabledReason
from shared.runtime import fingerprints, metrics
from shared.runtime.db import is_connection_error, listen, pool_for, with_db_retry
from shared.runtime.logs import log_context
from shared.runtime.periodic import every
from shared.runtime.role import Life
from shared.runtime.secret_box import SecretBox
from shared.runtime.settings import Settings
from shared.runtime.tracing import current_traceparent, span_from
from shared.runtime.transient import is_transient
from shared.store import deliveries, endpoints, processes
from shared.store.deliveries import DELIVERIES_CHANNEL, AttemptRecord
from shared.webhooks.urls import make_resolver, redact
from worker.dispatcher.delivery import Answer, make_session, send

log = logging.getLogger(__name__)

# Per the Standard Webhooks spec: after these, wait at least the receiver's Retry-After.
_THROTTLE_STATUSES = frozenset({429, 502, 504})
# An attempt's record must be in before this much is left of its lease.
_RECORD_MARGIN_S = 5.0


class EndpointGuard:
    """Per-receiver concurrency limit and circuit breaker, in this dispatcher's memory.
    Keyed by origin (`shared.webhooks.urls.origin`), never by the URL itself: URLs that differ
    only in path or query string reach the same server and share one limit and one breaker."""

    def __init__(self, per_endpoint: int, threshold: int, cooldown_s: float) -> None:
        self.per_endpoint = per_endpoint
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.in_flight: dict[str, int] = defaultdict(int)
        self.failures: dict[str, int] = defaultdict(int)
        self.open_until: dict[str, float] = {}

    def blocked(self) -> list[str]:
        now = time.monotonic()
        full = [origin for origin, n in self.in_flight.items() if n >= self.per_endpoint]
        tripped = [origin for origin, until in self.open_until.items() if until > now]
        return full + tripped

    def seconds_until_reopen(self) -> float | None:
        """Until the first open circuit closes again, if any is open."""
        now = time.monotonic()
        waits = [until - now for until in self.open_until.values() if until > now]
        return min(waits) if waits else None

    def admit(self, origin: str) -> bool:
        if (
            self.in_flight[origin] >= self.per_endpoint
            or self.open_until.get(origin, 0) > time.monotonic()
        ):
            return False
        self.in_flight[origin] += 1
        return True

    def done(self, origin: str, succeeded: bool) -> None:
        self.in_flight[origin] -= 1
        if self.in_flight[origin] <= 0:
            del self.in_flight[origin]
        if succeeded:
            self.failures.pop(origin, None)
            self.open_until.pop(origin, None)
            return
        self.failures[origin] += 1
        if self.failures[origin] >= self.threshold:
            self.open_until[origin] = time.monotonic() + self.cooldown_s
            log.warning("circuit open for %s after %d failures", origin, self.failures[origin])


def next_attempt_delay(settings: Settings, attempt: int, answer: Answer) -> float | None:
    """Seconds until the next attempt after attempt number `attempt` failed, or None when
    the schedule is used up."""
    schedule = settings.webhook_backoff
    if answer.gone or attempt >= len(schedule):
        return None
    delay = schedule[attempt] * random.uniform(0.8, 1.2)
    if answer.timed_out or answer.record.status_code in _THROTTLE_STATUSES:
        delay = max(delay, settings.webhook_throttle_min_delay, answer.retry_after_s or 0.0)
    return delay


def _outcome(answer: Answer) -> metrics.WebhookOutcome:
    if answer.succeeded:
        return metrics.WebhookOutcome.SUCCEEDED
    if answer.timed_out:
        return metrics.WebhookOutcome.TIMED_OUT
    if answer.record.status_code is not None:
        return metrics.WebhookOutcome.REJECTED
    return metrics.WebhookOutcome.UNREACHABLE


class Dispatcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.life = Life(metrics.Role.DISPATCHER, settings)
        self.box = SecretBox.from_setting(settings.secret_key)
        self.guard = EndpointGuard(
            settings.webhook_endpoint_concurrency,
            settings.webhook_breaker_threshold,
            settings.webhook_breaker_cooldown,
        )
        self.wake = asyncio.Event()
        self.stopping = self.life.stopping
        self.in_flight: set[asyncio.Task[None]] = set()
        self.delivered = 0
        self._db: asyncpg.Pool | None = None  # opened by start_up
        self._session: aiohttp.ClientSession | None = None

    @property
    def lease_s(self) -> float:
        return self.settings.webhook_timeout + 30

    async def _deliver(
        self,
        db: asyncpg.Pool,
        session: aiohttp.ClientSession,
        due: deliveries.Due,
        claimed_at: float,
    ) -> None:
        settings = self.settings
        succeeded = False
        try:
            with span_from(due.traceparent, "webhook.deliver", **{"crewq.delivery_id": due.id}):
                answer = await send(
                    session,
                    due,
                    allow_http=settings.webhook_allow_http,
                    allow_private=settings.webhook_allow_private,
                    max_body_bytes=settings.webhook_max_response_bytes,
                    traceparent=current_traceparent() if due.traceparent else None,
                )
            succeeded = answer.succeeded
            metrics.webhook_attempt(_outcome(answer), answer.record.duration_ms / 1000)
        finally:
            # Whatever happened, the receiver's slot is free again.
            self.guard.done(due.origin, succeeded)
        await self._record(db, due, answer, claimed_at)
        if answer.succeeded:
            self.delivered += 1
        log.info(
            "delivery %s attempt %d to %s: %s in %d ms",
            due.id,
            due.attempt,
            redact(due.url),
            answer.record.status_code or answer.record.error,
            answer.record.duration_ms,
        )

    async def _record(
        self, db: asyncpg.Pool, due: deliveries.Due, answer: Answer, claimed_at: float
    ) -> None:
        """Record the attempt before its lease runs out (another dispatcher would then send
        the delivery again): a lost connection is retried until then, and no longer. An
        attempt that cannot be stored as it is (what a receiver sent may be anything) is
        stored as a failure saying so: never left to be re-sent every lease, forever."""

        async def record(attempt: AttemptRecord, succeeded: bool) -> bool:
            delay = None if succeeded else next_attempt_delay(self.settings, due.attempt, answer)
            if succeeded:
                status, retry_at = DeliveryStatus.SUCCEEDED, None
            elif delay is None:
                status, retry_at = DeliveryStatus.FAILED, None
            else:
                status = DeliveryStatus.PENDING
                retry_at = datetime.now(UTC) + timedelta(seconds=delay)
            return await endpoints.record_attempt(
                db,
                due,
                attempt,
                status,
                retry_at,
                disable=DisabledReason.GONE if answer.gone else None,
                disable_after_s=self.settings.webhook_disable_after,
            )

        try:
            await self._within_lease(
                due, claimed_at, lambda: record(answer.record, answer.succeeded)
            )
        except Exception as exc:  # not the connection: what the receiver sent
            log.error("delivery %s: attempt not storable, recorded as failed", due.id, exc_info=exc)
            failure = AttemptRecord(
                answer.record.duration_ms,
                answer.record.status_code,
                f"the attempt could not be stored: {type(exc).__name__}",
                None,
            )
            await self._within_lease(due, claimed_at, lambda: record(failure, False))

    async def _within_lease(
        self, due: deliveries.Due, claimed_at: float, record: Callable[[], Awaitable[bool]]
    ) -> None:
        """Run `record`, retrying a lost connection, until only `_RECORD_MARGIN_S` of the
        lease is left; then give up: the lease runs out and another claim makes the delivery
        again (at least once). Any other error is raised."""
        left = max(0.0, claimed_at + self.lease_s - _RECORD_MARGIN_S - time.monotonic())
        try:
            async with asyncio.timeout(left):
                await with_db_retry(record, left)
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            log.warning(
                "delivery %s: attempt %d not recorded before its lease ran out (%s)",
                due.id,
                due.attempt,
                exc,
            )

    def _start(
        self,
        db: asyncpg.Pool,
        session: aiohttp.ClientSession,
        due: deliveries.Due,
        claimed_at: float,
    ) -> None:
        with log_context(tenant_id=due.tenant_id):  # the task copies the context
            task = asyncio.create_task(self._deliver(db, session, due, claimed_at))
        self.in_flight.add(task)

        def finished(t: asyncio.Task[None]) -> None:
            self.in_flight.discard(t)
            self.wake.set()
            if not t.cancelled() and t.exception() is not None:
                log.error("delivery %s crashed", due.id, exc_info=t.exception())

        task.add_done_callback(finished)

    async def _seconds_until_due(self, db: asyncpg.Pool) -> float:
        """How long to sleep unless woken. Rows of blocked URLs do not count: they are due
        but not claimable, and counting them would poll Postgres in a tight loop for as long
        as a URL is full or its circuit open. A finished delivery wakes the pump anyway."""
        wait = await deliveries.seconds_until_due(db, self.guard.blocked())
        waits = [self.settings.dispatcher_poll_interval, wait, self.guard.seconds_until_reopen()]
        return max(0.0, min(w for w in waits if w is not None))

    async def _sample_backlog(self, db: asyncpg.Pool) -> None:
        """Keep the webhook backlog gauges current for scrapes."""

        async def sample() -> None:
            owed = await deliveries.backlog(db)
            metrics.webhooks_owed(owed.due, owed.pending - owed.due, owed.oldest_due_s)

        await every(
            self.settings.process_heartbeat_interval,
            sample,
            on_transient=lambda exc: log.debug("webhook backlog not counted: %s", exc),
        )

    async def _pump(self, db: asyncpg.Pool, session: aiohttp.ClientSession) -> None:
        """Claim and start deliveries until cancelled."""
        while True:
            self.wake.clear()
            free = self.settings.dispatcher_concurrency - len(self.in_flight)
            timeout = self.settings.dispatcher_poll_interval
            try:
                if free > 0:
                    claimed_at = time.monotonic()
                    batch = await deliveries.claim(
                        db,
                        free,
                        self.lease_s,
                        self.guard.blocked(),
                        per_url=self.guard.per_endpoint,
                        busy=self.guard.in_flight,
                        box=self.box,
                    )
                    for due in batch:
                        if self.guard.admit(due.origin):
                            self._start(db, session, due, claimed_at)
                        else:  # its circuit opened while we claimed; put it back untouched
                            await deliveries.defer(
                                db, due, datetime.now(UTC) + timedelta(seconds=1)
                            )
                    if len(batch) == free:
                        continue
                timeout = await self._seconds_until_due(db)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("dispatcher cannot reach postgres (%s)", exc)
                timeout = 1.0
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that
            # arrives as the wake-up does (cpython #86296), and the pump would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(timeout, 0.01)):
                    await self.wake.wait()

    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT (exit 0) or until a supervised task ends (exit 1)."""
        return await self.life.run(self)

    async def start_up(self, life: Life) -> None:
        settings = self.settings
        self._db = db = await pool_for(settings, "dispatcher", default_size=10)
        self._session = session = make_session(
            timeout_s=settings.webhook_timeout,
            allow_private=settings.webhook_allow_private,
            limit=settings.dispatcher_concurrency,
            resolver=make_resolver(settings.webhook_dns_servers, settings.webhook_dns_timeout),
            dns_timeout_s=settings.webhook_dns_timeout,
        )
        life.register(
            db,
            processes.new_id(),
            settings.dispatcher_concurrency,
            ProcessReport(fingerprints=fingerprints.of_config(settings, providers=False)),
            lambda: len(self.in_flight),
        )
        life.supervisor.start("pump", self._pump(db, session))
        life.supervisor.start("backlog gauges", self._sample_backlog(db))
        # Wake on each new delivery, and after a reconnection for those owed meanwhile.
        life.supervisor.start(
            "listener",
            listen(
                settings.direct_database_url,
                {DELIVERIES_CHANNEL: lambda _: self.wake.set()},
                self.wake.set,
                role="dispatcher",
            ),
        )
        log.info("dispatcher ready (concurrency %d)", settings.dispatcher_concurrency)

    async def wind_down(self, failed: bool) -> None:
        # Claims stop with the pump, cancelled next; deliveries in flight finish in `close`.
        self._stop()

    async def close(self) -> None:
        assert self._db is not None and self._session is not None
        if self.in_flight:
            await asyncio.wait(self.in_flight, timeout=self.settings.webhook_timeout + 1)
        await self._session.close()
        await self._db.close()
        log.info("dispatcher stopped after %d deliveries", self.delivered)

    def _stop(self) -> None:
        self.stopping.set()
        self.wake.set()


async def serve(settings: Settings) -> int:
    service = Dispatcher(settings)
    return await service.life.serve(service)
