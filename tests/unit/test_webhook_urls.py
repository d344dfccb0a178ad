"""Reading webhook hosts as the connection will, and showing URLs in logs."""

import asyncio
import ipaddress
import socket
import time

import aiohttp.helpers
import pytest

from shared.webhooks.urls import (
    UrlRefused,
    embedded_ipv4,
    literal_address,
    make_resolver,
    public_addresses,
    redact,
    refuse_address,
    resolve,
)

NUMERIC_FORMS = {
    "127.1": "127.0.0.1",
    "2130706433": "127.0.0.1",
    "0177.0.0.1": "127.0.0.1",
    "0": "0.0.0.0",
    "10.1": "10.0.0.1",
    "127.0.0.1": "127.0.0.1",
    "::1": "::1",
    "::ffff:127.0.0.1": "::ffff:7f00:1",
}


@pytest.mark.parametrize(("host", "address"), NUMERIC_FORMS.items())
def test_numeric_hosts_read_as_the_os_reads_them(host: str, address: str) -> None:
    assert literal_address(host) == address


@pytest.mark.parametrize("host", [*NUMERIC_FORMS, "example.com", "0x7f.1", "1e3", "hooks.io"])
def test_every_host_aiohttp_connects_to_without_resolving_is_read_as_an_address(
    host: str,
) -> None:
    """aiohttp skips the resolver (and so the check on resolved addresses) for what it takes
    to be an address: `literal_address` must read every such host. A change in aiohttp's
    heuristic fails here."""
    assert (literal_address(host) is not None) == aiohttp.helpers.is_ip_address(host)


def test_numeric_hosts_no_os_can_read_are_refused() -> None:
    with pytest.raises(UrlRefused, match="not a valid address"):
        literal_address("99999999999")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/x?token=s3cret#frag", "https://hooks.example.com/x?…"),
        ("https://user:pw@hooks.example.com/x", "https://hooks.example.com/x"),
        ("https://hooks.example.com/x", "https://hooks.example.com/x"),
    ],
)
def test_logged_urls_carry_no_query_string_or_credentials(url: str, shown: str) -> None:
    assert redact(url) == shown


async def test_a_name_server_that_never_answers_cannot_hold_a_lookup_past_its_bound() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # receives, never answers
    silent.bind(("127.0.0.1", 0))
    try:
        resolver = make_resolver([f"127.0.0.1:{silent.getsockname()[1]}"], timeout_s=0.5)
        started = time.monotonic()
        lookups = [resolve(resolver, f"h{i}.example.com", 0.5) for i in range(5)]
        outcomes = await asyncio.gather(*lookups, return_exceptions=True)
        took = time.monotonic() - started
        assert all(isinstance(o, UrlRefused) for o in outcomes), outcomes
        assert "did not resolve within 0.5 s" in str(outcomes[0])
        assert took < 2  # concurrent, each bounded: not one after another, not forever
        # Nothing waited in the default executor, where asyncpg resolves its own hosts.
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.run_in_executor(None, lambda: 1), 0.5) == 1
    finally:
        silent.close()


# Every IPv6 form that wraps an IPv4 address, around the metadata service and loopback.
WRAPPED = {
    "::ffff:169.254.169.254": "169.254.169.254",  # IPv4-mapped
    "::169.254.169.254": "169.254.169.254",  # IPv4-compatible
    "2002:a9fe:a9fe::1": "169.254.169.254",  # 6to4
    "2002:7f00:1::1": "127.0.0.1",
    "64:ff9b::a9fe:a9fe": "169.254.169.254",  # NAT64, well-known prefix
    "64:ff9b::7f00:1": "127.0.0.1",
}


@pytest.mark.parametrize(("address", "wrapped"), WRAPPED.items())
def test_ipv6_addresses_that_wrap_an_internal_ipv4_are_refused(address: str, wrapped: str) -> None:
    assert ipaddress.IPv4Address(wrapped) in embedded_ipv4(ipaddress.IPv6Address(address))
    reason = refuse_address(address)
    assert reason is not None and (f"wraps {wrapped}" in reason or "reserved" in reason), reason


def test_teredo_addresses_are_read_for_their_server_and_their_client() -> None:
    # RFC 4380's example: server 65.54.227.120, client 192.0.2.45 (stored inverted).
    teredo = ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:3fff:fdd2")
    assert embedded_ipv4(teredo) == [
        ipaddress.IPv4Address("65.54.227.120"),
        ipaddress.IPv4Address("192.0.2.45"),
    ]
    assert refuse_address(str(teredo)) is not None
    assert refuse_address("2001:0:a9fe:a9fe::1") is not None  # server 169.254.169.254


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("2002:a9fe:a9fe::1", "wraps 169.254.169.254, a link-local address"),
        ("2002:7f00:1::1", "wraps 127.0.0.1, a loopback address"),
        ("2002:a00:1::1", "wraps 10.0.0.1, a private or reserved address"),
        ("64:ff9b::a9fe:a9fe", "wraps 169.254.169.254, a link-local address"),
        ("64:ff9b:1::808:808", "a local-use NAT64 address"),  # never public, whatever it wraps
        ("::ffff:127.0.0.1", "wraps 127.0.0.1, a loopback address"),
        ("::1", "a loopback address"),
        ("::", "the unspecified address"),
        ("0.0.0.0", "the unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("ff0e::1", "a multicast address"),
        ("fec0::1", "a site-local address"),
        ("fc00::1", "a private or reserved address"),
        ("240.0.0.1", "a private or reserved address"),
        ("255.255.255.255", "a private or reserved address"),
        ("198.18.0.1", "a private or reserved address"),
        ("100.64.0.1", "not a public address"),  # carrier-grade NAT
        ("192.88.99.1", "not a public address"),  # 6to4 relay anycast
        ("3fff::1", "not a public address"),  # documentation
    ],
)
def test_every_address_that_is_not_globally_routable_is_refused(address: str, reason: str) -> None:
    refused = refuse_address(address)
    assert refused is not None and reason in refused, refused


@pytest.mark.parametrize(
    "address",
    [
        "93.184.215.14",
        "2606:4700:4700::1111",
        "2002:5db8:d70e::1",  # 6to4 around 93.184.215.14
        "64:ff9b::5db8:d70e",  # NAT64 to 93.184.215.14
        "::ffff:93.184.215.14",
    ],
)
def test_public_addresses_pass_however_they_are_written(address: str) -> None:
    assert refuse_address(address) is None


def test_a_name_refused_for_where_it_leads_does_not_say_where_that_is() -> None:
    with pytest.raises(UrlRefused) as refused:
        public_addresses("db.corp.example", ["10.1.2.3", "::1", "2002:a9fe:a9fe::1"])
    assert str(refused.value) == "db.corp.example is not a public address"


def test_a_name_leading_partly_inside_keeps_only_its_public_addresses() -> None:
    addresses = ["10.1.2.3", "93.184.215.14", "2002:7f00:1::1", "2606:4700:4700::1111"]
    assert public_addresses("mixed.example", addresses) == [
        "93.184.215.14",
        "2606:4700:4700::1111",
    ]
