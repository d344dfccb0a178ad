"""Which webhook URLs crewq may call (SSRF protection).

Checked when a URL is given to the API and again at delivery time against the address the
connection actually uses, so a name that later resolves somewhere private (DNS rebinding)
is still refused.
"""

import asyncio
import ipaddress
import socket

from yarl import URL

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
    so aiohttp, which sends the requests) reads it: it normalises forms, such as unusual
    digits, that `urllib.parse` would keep as a name."""
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


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def refuse(addresses: list[str]) -> None:
    for address in addresses:
        reason = refuse_address(address)
        if reason:
            raise UrlRefused(reason)


async def check_url(url: str, *, allow_http: bool, allow_private: bool) -> None:
    """Refuse a URL that is malformed, not https (unless allowed), or that names or
    resolves to a loopback, private, link-local or metadata address (unless allowed)."""
    host = check_url_syntax(url, allow_http=allow_http)
    if allow_private:
        return
    if host.lower() in _METADATA_HOSTS or host.lower().endswith(".internal"):
        raise UrlRefused(f"{host} is an internal host name")
    if is_ip_literal(host):
        refuse([host])
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UrlRefused(f"{host} does not resolve: {exc}") from exc
    refuse(sorted({str(info[4][0]) for info in infos}))
