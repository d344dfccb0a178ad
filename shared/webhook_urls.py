"""Which webhook URLs crewq may call (SSRF protection), and how they appear in logs.

Checked when a URL is given to the API and again at delivery time against the address the
connection actually uses, so a name that later resolves somewhere private (DNS rebinding)
is still refused. Names are resolved with aiodns under a hard time limit, never in the
default thread pool: a name server that never answers must not stall other tenants'
checks, nor asyncpg's reconnects, which resolve in that pool too.
"""

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import aiodns
from yarl import URL

from shared.settings import Settings

# Cloud metadata services that are not inside the ranges `is_private` covers.
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


class UrlRefused(ValueError):
    """The URL may not receive webhooks; the message says why."""


def refuse_address(address: str) -> str | None:
    """Why an IP address must not be called, or None when it is public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return f"{address} is a loopback address"
    if ip.is_link_local:
        return f"{address} is a link-local address (this includes cloud metadata services)"
    if ip.is_private or ip.is_reserved or ip.is_multicast or ip.is_unspecified:
        return f"{address} is a private or reserved address"
    if not ip.is_global:
        return f"{address} is not a public address"
    return None


def check_url_syntax(url: str, *, allow_http: bool) -> str:
    """The URL's host, after checking its scheme and shape. The host is read as yarl (and
    so aiohttp, which sends the requests) reads it."""
    try:
        parsed = URL(url)
    except ValueError as exc:
        raise UrlRefused(f"not a valid URL: {exc}") from exc
    if parsed.scheme not in ("https", "http"):
        raise UrlRefused("the URL must start with https://")
    if parsed.scheme == "http" and not allow_http:
        raise UrlRefused("plain http:// is not allowed; use https://")
    if not parsed.host:
        raise UrlRefused("the URL has no host")
    if parsed.user or parsed.password:
        raise UrlRefused("credentials in the URL are not allowed; sign requests instead")
    return parsed.host


def literal_address(host: str) -> str | None:
    """The address a numeric host connects to, or None for a name. aiohttp takes any host
    holding a colon, or only digits and dots, for an address and connects to it without a
    resolver (`aiohttp.helpers.is_ip_address`); the OS then reads `127.1`, `2130706433`,
    `0177.0.0.1` or `0` as inet_aton does. So does this, so no such form escapes the check."""
    if ":" not in host and not host.replace(".", "").isdigit():
        return None
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        pass
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError as exc:
        raise UrlRefused(f"{host} is not a valid address") from exc


def refuse(addresses: list[str]) -> None:
    for address in addresses:
        reason = refuse_address(address)
        if reason:
            raise UrlRefused(reason)


def make_resolver(nameservers: list[str], timeout_s: float) -> aiodns.DNSResolver:
    """A resolver whose every look-up ends within `timeout_s` (one try per server)."""
    return aiodns.DNSResolver(nameservers=nameservers or None, timeout=timeout_s, tries=1)


async def resolve(resolver: aiodns.DNSResolver, host: str, timeout_s: float) -> list[str]:
    """Every address `host` resolves to; UrlRefused when it does not within `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            answer = await resolver.getaddrinfo(host, port=None, type=socket.SOCK_STREAM)
    except TimeoutError as exc:
        raise UrlRefused(f"{host} did not resolve within {timeout_s:g} s") from exc
    except aiodns.error.DNSError as exc:
        raise UrlRefused(f"{host} does not resolve: {exc.args[-1]}") from exc
    addresses = sorted({node.addr[0].decode() for node in answer.nodes})
    if not addresses:
        raise UrlRefused(f"{host} has no address")
    return addresses


@dataclass(frozen=True)
class UrlPolicy:
    """Which webhook URLs this process accepts, and how it resolves their hosts."""

    allow_http: bool
    allow_private: bool
    resolver: aiodns.DNSResolver
    dns_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> "UrlPolicy":
        """Call within the running event loop: the resolver belongs to it."""
        return cls(
            allow_http=settings.webhook_allow_http,
            allow_private=settings.webhook_allow_private,
            resolver=make_resolver(settings.webhook_dns_servers, settings.webhook_dns_timeout),
            dns_timeout_s=settings.webhook_dns_timeout,
        )

    async def check(self, url: str) -> None:
        """Refuse a URL that is malformed, not https (unless allowed), or that names or
        resolves to a loopback, private, link-local or metadata address (unless allowed)."""
        host = check_url_syntax(url, allow_http=self.allow_http)
        if self.allow_private:
            return
        if host.lower() in _METADATA_HOSTS or host.lower().endswith(".internal"):
            raise UrlRefused(f"{host} is an internal host name")
        address = literal_address(host)
        refuse([address] if address else await resolve(self.resolver, host, self.dns_timeout_s))


def redact(url: str) -> str:
    """A URL as logs show it: no query string or fragment (they may carry tokens), no
    credentials."""
    try:
        parsed = URL(url)
    except ValueError:
        return "<unparseable URL>"
    shown = parsed.with_query(None).with_fragment(None).with_user(None)
    return str(shown) + ("?…" if parsed.raw_query_string else "")
