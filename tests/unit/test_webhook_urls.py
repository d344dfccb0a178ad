"""Reading webhook hosts as the connection will, and showing URLs in logs."""

import asyncio
import socket
import time

import aiohttp.helpers
import pytest

from shared.webhook_urls import UrlRefused, literal_address, make_resolver, redact, resolve

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
