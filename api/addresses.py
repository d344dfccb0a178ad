"""Where a request came from, believing proxy headers only from `CREWQ_TRUSTED_PROXIES`."""

import ipaddress
from collections.abc import Sequence

from aiohttp import web

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# Where IPv4-mapped IPv6 addresses live (RFC 4291): ::ffff:a.b.c.d is a.b.c.d.
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def unmapped(address: IpAddress) -> IpAddress:
    """An IPv4-mapped IPv6 address as the IPv4 address it is (a dual-stack socket shows IPv4
    peers so); any other address as it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def unmapped_network(network: IpNetwork) -> IpNetwork:
    """An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 network it is
    (`10.0.0.0/8`); any other network as it is."""
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        first = network.network_address.ipv4_mapped
        assert first is not None  # inside ::ffff:0:0/96
        return ipaddress.IPv4Network((first, network.prefixlen - _MAPPED.prefixlen))
    return network


def in_networks(address: IpAddress, networks: Sequence[IpNetwork]) -> bool:
    """Whether `address` is in one of `networks`, an IPv4 address and its IPv4-mapped IPv6
    form being one address: `ipaddress` compares them as unrelated (an IPv4 address is in no
    IPv6 network), so an allowlist entry written in one form never matched a client seen in
    the other. Both sides are compared in IPv4 form; an IPv6 network wider than the mapped
    range (`::/0`) still holds the mapped form of every IPv4 address, as it always did."""
    address = unmapped(address)
    mapped = (
        ipaddress.IPv6Address(int(_MAPPED.network_address) | int(address))
        if isinstance(address, ipaddress.IPv4Address)
        else None
    )
    return any(
        address in unmapped_network(network) or (mapped is not None and mapped in network)
        for network in networks
    )


def _address(text: str | None) -> IpAddress | None:
    try:
        return unmapped(ipaddress.ip_address((text or "").strip()))
    except ValueError:
        return None


def _trusted(address: IpAddress | None, proxies: Sequence[IpNetwork]) -> bool:
    return address is not None and in_networks(address, proxies)


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
