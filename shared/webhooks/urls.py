"""Which webhook URLs crewq may call (SSRF protection), and how they appear in logs.

Checked when a URL is given to the API and again at delivery time against the address the
connection actually uses, so a name that later resolves somewhere private (DNS rebinding)
is still refused. Names are resolved with aiodns under a hard time limit, never in the
default thread pool: a name server that never answers must not stall other tenants'
checks, nor asyncpg's reconnects, which resolve in that pool too.
"""

import asyncio
import contextlib
import ipaddress
import logging
import socket
from dataclasses import dataclass

import aiodns
from yarl import URL

from shared.runtime.settings import Settings

log = logging.getLogger(__name__)

# Cloud metadata services that are not inside the ranges `is_private` covers.
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 ranges whose addresses carry an IPv4 address in their last 32 bits, and reach it.
# IPv4-compatible (RFC 4291, deprecated; `::` and `::1` are in it too, and refused as such)
# and the NAT64 well-known prefix (RFC 6052), where a NAT64 gateway connects to the IPv4.
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
# NAT64 local-use (RFC 8215): where it embeds the IPv4 depends on the prefix length each
# network picks, so it cannot be unwrapped; it is never globally reachable, so it is refused
# whatever it carries.
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")
# Not globally reachable (IANA special-purpose registries), yet not in the tables of every
# Python this runs on (3.11's `is_global` passes them): the 6to4 relay anycast (RFC 7526),
# IPv6 documentation (RFC 9637) and SRv6 SIDs (RFC 9602).
_NOT_GLOBAL = (
    ipaddress.IPv4Network("192.88.99.0/24"),
    ipaddress.IPv6Network("3fff::/20"),
    ipaddress.IPv6Network("5f00::/16"),
)


class UrlRefused(ValueError):
    """The URL may not receive webhooks; the message says why."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address wraps, and so may lead to: IPv4-mapped, IPv4-
    compatible, 6to4 (RFC 3056), Teredo (RFC 4380: its server and its client) and NAT64
    (RFC 6052)."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _IPV4_COMPATIBLE or ip in _NAT64_WELL_KNOWN:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _not_public(ip: IpAddress) -> str | None:
    """Why `ip` itself is not a public unicast address, or None when it is. Every flag is
    asked, not only `is_global`: which ranges that one covers differs between Python
    versions (3.11 passes multicast and site-local addresses)."""
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (this includes cloud metadata services)"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "a site-local address"
    if ip.is_private or ip.is_reserved:
        return "a private or reserved address"
    if not ip.is_global or any(ip in network for network in _NOT_GLOBAL):
        return "not a public address"
    return None


def refuse_address(address: str) -> str | None:
    """Why an IP address must not be called, or None when it is public. An IPv6 address that
    wraps an IPv4 one is refused unless the IPv4 is public too. The reason names the address
    (and what it wraps): show it only to whoever wrote that address, never for a name
    resolved on their behalf."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip in _NAT64_LOCAL_USE:
        return f"{address} is a local-use NAT64 address"
    # Mapped and NAT64 addresses are judged by the IPv4 they reach alone: as IPv6 they sit
    # in ranges Python calls reserved. Any other must be public as IPv6 and in what it wraps.
    translated = isinstance(ip, ipaddress.IPv6Address) and (
        ip.ipv4_mapped is not None or ip in _NAT64_WELL_KNOWN
    )
    if not translated and (reason := _not_public(ip)):
        return f"{address} is {reason}"
    if isinstance(ip, ipaddress.IPv6Address):
        for wrapped in embedded_ipv4(ip):
            if reason := _not_public(wrapped):
                return f"{address} wraps {wrapped}, {reason}"
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
    """Refuse a host written as an address: the reason may name it, the tenant wrote it."""
    for address in addresses:
        reason = refuse_address(address)
        if reason:
            raise UrlRefused(reason)


def public_addresses(host: str, addresses: list[str]) -> list[str]:
    """Those of the addresses `host` resolved to that are public; UrlRefused when none is.
    The refusal says only that the host is not public: what an internal name resolves to
    is the platform's to know, not the tenant's, so it is logged here instead."""
    reasons = {address: refuse_address(address) for address in addresses}
    public = [address for address, reason in reasons.items() if reason is None]
    if not public:
        log.warning("webhook host %s refused: %s", host, "; ".join(map(str, reasons.values())))
        raise UrlRefused(f"{host} is not a public address")
    return public


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
        if address is not None:
            refuse([address])
            return
        addresses = await resolve(self.resolver, host, self.dns_timeout_s)
        if len(public_addresses(host, addresses)) < len(addresses):
            # Some public, some not: the dispatcher would call only the public ones, but a
            # URL that points partly inside is refused outright, without saying where.
            log.warning("webhook host %s refused: resolves to %s", host, ", ".join(addresses))
            raise UrlRefused(f"{host} is not a public address")


def origin(url: str) -> str:
    """The receiver a URL reaches, as the dispatcher's per-endpoint limit and circuit breaker
    count receivers: scheme, host and port, so that no path, query string, userinfo, letter
    case, default port, trailing dot or numeric form of an address makes a URL a receiver of
    its own. A URL that cannot be read is its own origin (it is refused when sent anyway)."""
    try:
        parsed = URL(url)
    except ValueError:
        return url
    if not parsed.scheme or not parsed.raw_host:
        return url
    host = parsed.raw_host.lower().rstrip(".")  # raw: IDNA-encoded, one spelling per name
    with contextlib.suppress(UrlRefused):  # not an address after all: the name it is
        host = literal_address(host) or host
    if ":" in host:
        host = f"[{host}]"
    return f"{parsed.scheme.lower()}://{host}:{parsed.port}"


def redact(url: str) -> str:
    """A URL as logs show it: no query string or fragment (they may carry tokens), no
    credentials."""
    try:
        parsed = URL(url)
    except ValueError:
        return "<unparseable URL>"
    shown = parsed.with_query(None).with_fragment(None).with_user(None)
    return str(shown) + ("?…" if parsed.raw_query_string else "")
