"""The body of `PUT /v1/account/security`: which allowlists it takes, how it writes them, and
that its documented schema admits every one it takes (schemathesis generates from it)."""

import ipaddress

import jsonschema_rs
import pytest
from pydantic import ValidationError

from schemas.account import MAX_ALLOWED_IPS, AccountSecurityUpdate

VALID = ["203.0.113.0/24", "198.51.100.7", "2001:db8::/32", "::ffff:10.0.0.0/104", "0.0.0.0/0"]


def _body(ips: list[str], confirm: str | None = None) -> AccountSecurityUpdate:
    return AccountSecurityUpdate.model_validate(
        {"ip_allowlist": {"ips": ips}, "confirm_lockout": confirm}
    )


def test_networks_and_addresses_are_taken_as_ipaddress_writes_them() -> None:
    body = _body(VALID, "::ffff:203.0.113.10")
    # (How an IPv4-mapped one is written differs between Python versions.)
    mapped = str(ipaddress.ip_network("::ffff:10.0.0.0/104"))
    assert body.ip_allowlist.ips == [
        "203.0.113.0/24",
        "198.51.100.7/32",
        "2001:db8::/32",
        mapped,
        "0.0.0.0/0",
    ]
    assert body.confirm_lockout == str(ipaddress.ip_address("::ffff:203.0.113.10"))
    assert _body([]).ip_allowlist.ips == []


@pytest.mark.parametrize(
    "ips",
    [
        ["10.1.2.3/8"],  # host bits set: a typo of /32 or of 10.0.0.0/8?
        ["localhost"],
        ["10.0.0.0/33"],
        [" 10.0.0.0/8"],
        ["10.0.0.0/8\x00"],
        [f"10.0.{i}.0/24" for i in range(MAX_ALLOWED_IPS + 1)],
    ],
)
def test_anything_but_a_bounded_list_of_networks_is_refused(ips: list[str]) -> None:
    with pytest.raises(ValidationError):
        _body(ips)


def test_a_confirmation_must_be_an_address() -> None:
    for bad in ("10.0.0.0/8", "me", ""):
        with pytest.raises(ValidationError):
            _body(["10.0.0.0/8"], bad)


def test_the_documented_schema_admits_every_allowlist_the_route_takes() -> None:
    schema = AccountSecurityUpdate.model_json_schema()
    valid = jsonschema_rs.Draft202012Validator(schema)
    assert valid.is_valid({"ip_allowlist": {"ips": VALID}, "confirm_lockout": "203.0.113.10"})
    assert not valid.is_valid({"ip_allowlist": {"ips": ["localhost"]}})
    assert not valid.is_valid({"ip_allowlist": {"ips": ["10.0.0.0/8"]}, "lock": True})
