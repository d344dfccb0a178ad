"""Sending one webhook attempt: sign, POST, read a little of the answer.

2xx is success, anything else a failure; redirects are not followed; a request has a hard
timeout and the response body is read only up to a cap. Names are resolved with aiodns
within `dns_timeout_s`; when private addresses are not allowed the resolver drops them, so
the check holds for the address actually connected to (no DNS-rebinding window between a
check and the connection).
"""

import asyncio
import errno
import ipaddress
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiodns
import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from shared.runtime.version import USER_AGENT
from shared.store.deliveries import AttemptRecord, Due
from shared.webhooks.signing import sign_headers
from shared.webhooks.urls import (
    UrlRefused,
    check_url_syntax,
    literal_address,
    public_addresses,
    refuse,
    resolve,
)
from worker.dispatcher.amp import body_of


def _refused(reason: str) -> OSError:
    # aiohttp shows a resolver's error by its strerror: give it the reason.
    return OSError(errno.EACCES, reason)


class BoundedResolver(AbstractResolver):
    """Resolves names with aiodns within a time limit, to public addresses only unless
    private ones are allowed."""

    def __init__(self, resolver: aiodns.DNSResolver, timeout_s: float, *, public_only: bool):
        self._resolver = resolver
        self._timeout_s = timeout_s
        self._public_only = public_only

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await resolve(self._resolver, host, self._timeout_s)
        except UrlRefused as exc:
            raise _refused(str(exc)) from exc
        if self._public_only:
            # The tenant reads the attempt's error: it must not learn what an internal name
            # resolves to (`public_addresses` logs that here instead).
            try:
                addresses = public_addresses(host, addresses)
            except UrlRefused as exc:
                raise _refused(str(exc)) from exc
        wanted = {socket.AF_INET: 4, socket.AF_INET6: 6}.get(family)
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in addresses
            if wanted is None or ipaddress.ip_address(a).version == wanted
        ]

    async def close(self) -> None:
        self._resolver.cancel()


@dataclass(frozen=True)
class Answer:
    record: AttemptRecord
    succeeded: bool
    gone: bool  # 410: the receiver asks never to be called again
    retry_after_s: float | None  # what the receiver asked for, if anything
    timed_out: bool


def make_session(
    *,
    timeout_s: float,
    allow_private: bool,
    limit: int,
    resolver: aiodns.DNSResolver,
    dns_timeout_s: float,
) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=limit,
        resolver=BoundedResolver(resolver, dns_timeout_s, public_only=not allow_private),
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
    """aiohttp skips the resolver for hosts it takes for addresses, so check those here, as
    the OS will read them; names are checked by `BoundedResolver` against the addresses
    actually connected to."""
    host = check_url_syntax(url, allow_http=allow_http)
    address = literal_address(host)
    if not allow_private and address is not None:
        refuse([address])


async def send(
    session: aiohttp.ClientSession,
    due: Due,
    *,
    allow_http: bool,
    allow_private: bool,
    max_body_bytes: int,
    traceparent: str | None = None,
) -> Answer:
    body = body_of(due)
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
