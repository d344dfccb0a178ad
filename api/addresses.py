"""Where a request came from, believing proxy headers only from `CREWQ_TRUSTED_PROXIES`."""

import ipaddress
from collections.abc import Sequence

from aiohttp import web

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str | None) -> IpAddress | None:
    try:
        return ipaddress.ip_address((text or "").strip())
    except ValueError:
        return None


def _trusted(address: IpAddress | None, proxies: Sequence[IpNetwork]) -> bool:
    return address is not None and any(address in network for network in proxies)


def client_address(request: web.Request, proxies: Sequence[IpNetwork]) -> IpAddress | None:
    """The peer, or when the peer is a trusted proxy, the right-most X-Forwarded-For entry
    that is not one: entries left of it were written by the client and prove nothing."""
    peer = _address(request.remote)
    if not _trusted(peer, proxies):
        return peer
    hops = [h for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return peer  # a hop we cannot read: go no further than what we know
        if not _trusted(address, proxies):
            return address
    return peer


def came_over_tls(request: web.Request, proxies: Sequence[IpNetwork]) -> bool:
    if request.secure:
        return True
    proto = request.headers.get("X-Forwarded-Proto", "")
    return _trusted(_address(request.remote), proxies) and proto.lower() == "https"
