"""Sending an `ApiRequest`, retried when the server says "later" (429, 503) or the
connection broke: bounded attempts, `Retry-After` honoured, otherwise exponential backoff
with full jitter so that many clients do not retry in step."""

import asyncio
import random
import time
from dataclasses import dataclass

import httpx

from crewq_client._request import ApiRequest, T
from crewq_client.errors import ConnectionFailed, error_from, retry_after_of

RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts`: sends of one request at most (1: never retry). `backoff`: the first
    backoff's upper bound in seconds, doubled each time up to `max_backoff`. A server's
    `Retry-After` is waited as given, up to `max_retry_after` (more: the error is raised)."""

    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0

    def backoff_for(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max_backoff, backoff·2^(attempt-1))]."""
        return random.uniform(0, min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))


NO_RETRY = RetryPolicy(attempts=1)


def _retry_delay(
    policy: RetryPolicy,
    attempt: int,
    request: ApiRequest[T],
    response: httpx.Response | None,
    error: httpx.TransportError | None,
) -> float | None:
    """How long to wait before sending again, or None: do not."""
    if attempt >= policy.attempts:
        return None
    if error is not None:
        # A request that may have reached the server is sent again only when that is safe.
        never_sent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
        return policy.backoff_for(attempt) if never_sent or request.idempotent else None
    assert response is not None
    if response.status_code not in RETRY_STATUSES:
        return None
    after = retry_after_of(response)
    if after is None:
        return policy.backoff_for(attempt)
    return after if after <= policy.max_retry_after else None


def _outcome(request: ApiRequest[T], response: httpx.Response) -> T:
    if response.status_code >= 400:
        raise error_from(response)
    return request.read(response)


def _build(http: httpx.Client | httpx.AsyncClient, request: ApiRequest[T]) -> httpx.Request:
    return http.build_request(
        request.method,
        request.path,
        params=request.params or None,
        json=request.json,
        headers=dict(request.headers),
    )


def send(http: httpx.Client, request: ApiRequest[T], policy: RetryPolicy) -> T:
    attempt = 0
    while True:
        attempt += 1
        try:
            response = http.send(_build(http, request))
        except httpx.TransportError as exc:
            delay = _retry_delay(policy, attempt, request, None, exc)
            if delay is None:
                raise ConnectionFailed(f"{request.method} {request.path}: {exc!r}") from exc
            time.sleep(delay)
            continue
        delay = _retry_delay(policy, attempt, request, response, None)
        if delay is None:
            return _outcome(request, response)
        response.close()
        time.sleep(delay)


async def send_async(http: httpx.AsyncClient, request: ApiRequest[T], policy: RetryPolicy) -> T:
    attempt = 0
    while True:
        attempt += 1
        try:
            response = await http.send(_build(http, request))
        except httpx.TransportError as exc:
            delay = _retry_delay(policy, attempt, request, None, exc)
            if delay is None:
                raise ConnectionFailed(f"{request.method} {request.path}: {exc!r}") from exc
            await asyncio.sleep(delay)
            continue
        delay = _retry_delay(policy, attempt, request, response, None)
        if delay is None:
            return _outcome(request, response)
        await response.aclose()
        await asyncio.sleep(delay)
