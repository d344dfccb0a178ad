"""Issue 19, finding 7 (SSRF), reproduced over real HTTP against production's URL policy
(webhooks only to public https://): IPv6 forms that wrap an internal IPv4 address are
refused, at registration and again at delivery, and no refusal tells a tenant what an
internal name resolves to."""

import json
import uuid

from tests.acceptance.test_webhooks import register
from tests.fakes import Receiver
from tests.harness import Platform

REFUSED_URL = "https://[2002:a9fe:a9fe::1]/"  # the audit's: 6to4 around the metadata service
PRODUCTION_URLS = {"CREWQ_WEBHOOK_ALLOW_HTTP": "false", "CREWQ_WEBHOOK_ALLOW_PRIVATE": "false"}

# What the audit sent, and every other IPv6 form that carries an IPv4 address, each wrapping
# the metadata service or loopback; and addresses that are not globally routable at all.
REFUSED = {
    "https://[2002:a9fe:a9fe::1]/": "wraps 169.254.169.254",  # 6to4
    "https://[2002:7f00:1::1]/": "wraps 127.0.0.1",
    "https://[64:ff9b::a9fe:a9fe]/": "wraps 169.254.169.254",  # NAT64
    "https://[::ffff:a9fe:a9fe]/": "wraps 169.254.169.254",  # IPv4-mapped
    "https://[::a9fe:a9fe]/": "reserved",  # IPv4-compatible
    "https://[2001:0:a9fe:a9fe::1]/": "reserved",  # Teredo, server 169.254.169.254
    "https://[64:ff9b:1::a9fe:a9fe]/": "local-use NAT64",
    "https://[fec0::1]/": "site-local",
    "https://[ff0e::1]/": "multicast",
    "https://224.0.0.1/": "multicast",
    "https://100.64.0.1/": "not a public address",
}


async def test_ipv6_forms_wrapping_internal_addresses_are_refused_at_registration(
    own_stack: Platform,
) -> None:
    await own_stack.start_api(**PRODUCTION_URLS)
    for url, reason in REFUSED.items():
        status, body, _ = await own_stack.request("POST", "/v1/webhooks", json={"url": url})
        assert status == 422, (url, body)
        assert body["error"]["code"] == "INVALID_WEBHOOK_URL", (url, body)
        assert reason in body["error"]["details"]["reason"], (url, body)
        assert body["error"]["request_id"], body
    # A job's own webhook_url goes through the same check.
    status, body, _ = await own_stack.request(
        "POST",
        "/v1/jobs",
        json={"crew": "echo", "inputs": {"message": "x"}, "webhook_url": REFUSED_URL},
    )
    assert status == 422 and body["error"]["code"] == "INVALID_WEBHOOK_URL", body
    # Public addresses still pass, wrapped or not (literals: no DNS, no dispatcher running).
    for url in ("https://[2002:5db8:d70e::1]/hooks", "https://[64:ff9b::5db8:d70e]/hooks"):
        await register(own_stack, own_stack.key, url)
    conn = await own_stack.db()
    try:
        assert await conn.fetchval("SELECT count(*) FROM webhook_endpoints") == 2
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 0
    finally:
        await conn.close()


async def test_refusing_an_internal_name_does_not_say_what_it_resolves_to(
    own_stack: Platform,
) -> None:
    api = await own_stack.start_api(**PRODUCTION_URLS)
    status, body, _ = await own_stack.request(
        "POST", "/v1/webhooks", json={"url": "https://localhost/hooks"}
    )
    assert status == 422 and body["error"]["code"] == "INVALID_WEBHOOK_URL", body
    assert body["error"]["details"]["reason"] == "localhost is not a public address", body
    text = json.dumps(body)
    assert "127.0.0.1" not in text and "::1" not in text, text
    # The operator still learns where it led, from the server's log.
    await api.wait_for_log("webhook host localhost refused")
    assert "127.0.0.1 is a loopback address" in api.log()


async def test_urls_that_lead_inside_are_refused_again_when_delivered(
    own_stack: Platform, receiver: Receiver
) -> None:
    """URLs that passed at registration (here: an API still allowing private addresses, as
    a name that resolved publicly then and privately now would) are checked again by the
    dispatcher before it connects. The receiver listens on 127.0.0.1: nothing reaches it."""
    await own_stack.start_api()
    await own_stack.start_dispatcher(**PRODUCTION_URLS)
    port, names = receiver.port, [f"ssrf-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
    cases = {
        f"https://localhost:{port}/hooks/{names[0]}": "localhost is not a public address",
        f"https://[2002:7f00:1::1]:{port}/hooks/{names[1]}": "wraps 127.0.0.1, a loopback",
        f"https://[64:ff9b::7f00:1]:{port}/hooks/{names[2]}": "wraps 127.0.0.1, a loopback",
    }
    for url, reason in cases.items():
        hook = await register(own_stack, own_stack.key, url)
        status, result, _ = await own_stack.request("POST", f"/v1/webhooks/{hook['id']}/test")
        assert status == 200, result
        assert not result["succeeded"] and result["status_code"] is None, result
        assert reason in result["error"], (url, result)
        if "localhost" in url:
            assert "127.0.0.1" not in result["error"] and "::1" not in result["error"], result
    assert all(receiver.at(name) == [] for name in names)
