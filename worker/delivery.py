"""Sending one webhook attempt: sign, POST, read a little of the answer.

2xx is success, anything else a failure; redirects are not followed; a request has a hard
timeout and the response body is read only up to a cap. When private addresses are not
allowed, the resolver drops them, so the check holds for the address actually connected to
(no DNS-rebinding window between a check and the connection).
"""

import asyncio
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from shared.deliveries import AttemptRecord, Due
from shared.signing import sign_headers
from shared.version import USER_AGENT
from shared.webhook_urls import (
    UrlRefused,
    check_url_syntax,
    is_ip_literal,
    refuse,
    refuse_address,
)


class PublicOnlyResolver(AbstractResolver):
    """Resolves names to public addresses only."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if refuse_address(r["host"]) is None]
        if not allowed:
            raise OSError(
                f"{host} resolves only to refused addresses: {refuse_address(results[0]['host'])}"
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True)
class Answer:
    record: AttemptRecord
    succeeded: bool
    gone: bool  # 410: the receiver asks never to be called again
    retry_after_s: float | None  # what the receiver asked for, if anything
    timed_out: bool


def make_session(*, timeout_s: float, allow_private: bool, limit: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=limit,
        resolver=None if allow_private else PublicOnlyResolver(),
        ttl_dns_cache=10,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        headers={"User-Agent": USER_AGENT},
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding",),
    )


# A receiver may ask for a pause, not park a delivery for years.
_MAX_RETRY_AFTER_S = 86400.0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (seconds or an HTTP date); None when absent or
    unreadable, whatever the receiver sent."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000" or no zone: HTTP dates are UTC
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), _MAX_RETRY_AFTER_S)


def _check_literal_address(url: str, *, allow_http: bool, allow_private: bool) -> None:
    """aiohttp skips the resolver for IP literals, so check those here; names are checked
    by `PublicOnlyResolver` against the addresses actually connected to."""
    host = check_url_syntax(url, allow_http=allow_http)
    if not allow_private and is_ip_literal(host):
        refuse([host])


async def send(
    session: aiohttp.ClientSession,
    due: Due,
    *,
    allow_http: bool,
    allow_private: bool,
    max_body_bytes: int,
    traceparent: str | None = None,
) -> Answer:
    body = orjson.dumps(due.payload)
    headers = sign_headers(due.secrets, due.event_id, datetime.now(UTC), body)
    headers["Content-Type"] = "application/json"
    if traceparent:
        headers["traceparent"] = traceparent
    started = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        _check_literal_address(due.url, allow_http=allow_http, allow_private=allow_private)
        async with session.post(due.url, data=body, headers=headers, allow_redirects=False) as resp:
            snippet = await resp.content.read(max_body_bytes)
            text = snippet.decode("utf-8", errors="replace")
            ok = 200 <= resp.status < 300
            return Answer(
                AttemptRecord(
                    elapsed_ms(), resp.status, None if ok else f"HTTP {resp.status}", text
                ),
                succeeded=ok,
                gone=resp.status == 410,
                retry_after_s=parse_retry_after(resp.headers.get("Retry-After")),
                timed_out=False,
            )
    except TimeoutError:
        return Answer(
            AttemptRecord(elapsed_ms(), None, "timed out waiting for the receiver", None),
            succeeded=False,
            gone=False,
            retry_after_s=None,
            timed_out=True,
        )
    except (aiohttp.ClientError, OSError, UrlRefused, asyncio.IncompleteReadError) as exc:
        return Answer(
            AttemptRecord(elapsed_ms(), None, f"{type(exc).__name__}: {exc}"[:500], None),
            succeeded=False,
            gone=False,
            retry_after_s=None,
            timed_out=False,
        )
