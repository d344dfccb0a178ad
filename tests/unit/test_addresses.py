"""Tenant IP allowlists and trusted proxies compare an IPv4 address and its IPv4-mapped
IPv6 form (`::ffff:a.b.c.d`) as the one address they are (issue 19)."""

import ipaddress

import pytest
from aiohttp.test_utils import make_mocked_request

from api.addresses import IpNetwork, client_address, in_networks, unmapped_network


def _networks(*cidrs: str) -> list[IpNetwork]:
    return [ipaddress.ip_network(c) for c in cidrs]


@pytest.mark.parametrize(
    ("client", "allowlist"),
    [
        ("10.1.2.3", "::ffff:10.0.0.0/104"),  # entry written mapped, client seen as IPv4
        ("::ffff:10.1.2.3", "10.0.0.0/8"),  # entry written IPv4, client seen mapped
        ("::ffff:10.1.2.3", "::ffff:10.0.0.0/104"),
        ("10.1.2.3", "10.0.0.0/8"),
        ("203.0.113.7", "::ffff:203.0.113.7/128"),
        ("203.0.113.7", "::/0"),  # holds every mapped address, as it always did
        ("2001:db8::1", "2001:db8::/32"),
    ],
)
def test_an_address_is_in_an_allowlist_whichever_form_either_is_written_in(
    client: str, allowlist: str
) -> None:
    assert in_networks(ipaddress.ip_address(client), _networks(allowlist))


@pytest.mark.parametrize(
    ("client", "allowlist"),
    [
        ("10.1.2.3", "::ffff:192.168.0.0/112"),
        ("::ffff:10.1.2.3", "192.168.0.0/16"),
        ("10.1.2.3", "2001:db8::/32"),
        ("::a01:203", "10.0.0.0/8"),  # IPv4-compatible is not IPv4-mapped: another address
    ],
)
def test_addresses_outside_the_allowlist_stay_outside(client: str, allowlist: str) -> None:
    assert not in_networks(ipaddress.ip_address(client), _networks(allowlist))


def test_mapped_networks_are_stored_as_the_ipv4_networks_they_are() -> None:
    assert unmapped_network(ipaddress.ip_network("::ffff:10.0.0.0/104")) == (
        ipaddress.ip_network("10.0.0.0/8")
    )
    assert unmapped_network(ipaddress.ip_network("::ffff:0:0/96")) == (
        ipaddress.ip_network("0.0.0.0/0")
    )
    for other in ("2001:db8::/32", "::/0", "10.0.0.0/8"):
        assert unmapped_network(ipaddress.ip_network(other)) == ipaddress.ip_network(other)


def test_a_peer_seen_mapped_is_the_ipv4_client_and_a_mapped_proxy_entry_is_trusted() -> None:
    request = make_mocked_request("GET", "/", headers={"X-Forwarded-For": "198.51.100.1"})
    request._transport_peername = ("::ffff:10.0.0.2", 1234)
    assert str(client_address(request, [])) == "10.0.0.2"
    assert str(client_address(request, _networks("10.0.0.0/8"))) == "198.51.100.1"
    assert str(client_address(request, _networks("::ffff:10.0.0.0/104"))) == "198.51.100.1"
