"""Which webhook URLs crewq may call (SSRF protection).

Checked when a URL is given to the API and again at delivery time against the address the
connection actually uses, so a name that later resolves somewhere private (DNS rebinding)
is still refused.
"""

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

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
    """The URL's host, after checking its scheme and shape."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise UrlRefused("the URL must start with https://")
    if parts.scheme == "http" and not allow_http:
        raise UrlRefused("plain http:// is not allowed; use https://")
    if not parts.hostname:
        raise UrlRefused("the URL has no host")
    if parts.username or parts.password:
        raise UrlRefused("credentials in the URL are not allowed; sign requests instead")
    return parts.hostname


async def check_url(url: str, *, allow_http: bool, allow_private: bool) -> None:
    """Refuse a URL that is malformed, not https (unless allowed), or that names or
    resolves to a loopback, private, link-local or metadata address (unless allowed)."""

    host = check_url_syntax(url, allow_http=allow_http)
    if allow_private:
        return
    if host.lower() in _METADATA_HOSTS or host.lower().endswith(".internal"):
        raise UrlRefused(f"{host} is an internal host name")
    try:
        ipaddress.ip_address(host)
        addresses = [host]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise UrlRefused(f"{host} does not resolve: {exc}") from exc
        addresses = sorted({str(info[4][0]) for info in infos})
    for address in addresses:
        reason = refuse_address(address)
        if reason:
            raise UrlRefused(reason)
