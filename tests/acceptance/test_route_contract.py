"""Every operation `/openapi.json` documents enforces what it documents: without a key it
is refused 401 (unless public), and a key holding every scope but the one it names is
refused 403 naming that scope, while a key holding only that scope is let through. So the
scope a route documents is the scope it enforces; schemathesis, run with an admin key,
cannot see this."""

import re
from typing import Any

from schemas.account import Scope
from tests.harness import Platform

_METHODS = ("get", "post", "put", "patch", "delete")
# Path parameters are filled with an id that names nothing: authentication and the scope
# come before any look-up, and past them the operation answers 404 for it.
_PLAUSIBLE_ID = "x_0000000000000000"


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, item in document["paths"].items():
        for method in _METHODS:
            if method in item:
                url = re.sub(r"\{[^}]+\}", _PLAUSIBLE_ID, path)
                found.append((method.upper(), url, item[method]))
    return found


def _documented_scope(op: dict[str, Any]) -> Scope | None:
    """The scope the operation's security requirement names (none: public or any key)."""
    named = {
        scope for requirement in op.get("security", []) for s in requirement.values() for scope in s
    }
    assert len(named) <= 1, op
    return Scope(named.pop()) if named else None


async def test_every_operation_enforces_the_scope_it_documents(stack: Platform) -> None:
    assert stack.http is not None
    async with stack.http.get("/openapi.json") as resp:
        document = await resp.json()
    operations = _operations(document)
    assert len(operations) >= 30, "the document lost its operations"

    # A key of every scope but one (admin grants all, so it is left out too), and a key of
    # that one scope alone.
    without: dict[Scope, str] = {}
    only: dict[Scope, str] = {}
    for scope in Scope:
        others = [s.value for s in Scope if s not in (scope, Scope.ADMIN)]
        without[scope], _, _ = await stack.new_tenant("contract", others)
        only[scope], _, _ = await stack.new_tenant("contract", [scope.value])

    checked_scopes = 0
    for method, url, op in operations:
        public = op.get("security") == []
        async with stack.http.request(method, url) as resp:
            body = await resp.json() if resp.content_type == "application/json" else None
            if public:
                assert resp.status not in (401, 403), (method, url, resp.status, body)
            else:
                assert resp.status == 401, (method, url, resp.status, body)
                assert body is not None and body["error"]["code"] == "UNAUTHENTICATED", body
        documented = _documented_scope(op)
        if public or documented is None:
            continue
        checked_scopes += 1
        status, body, headers = await stack.request(method, url, key=without[documented])
        assert status == 403, (method, url, documented, status, body)
        assert body["error"]["code"] == "INSUFFICIENT_SCOPE", (method, url, body)
        assert body["error"]["details"] == {"required_scope": documented.value}, (method, url, body)
        assert f'scope="{documented.value}"' in headers["WWW-Authenticate"], (method, url)
        status, body, _ = await stack.request(method, url, key=only[documented])
        assert status not in (401, 403), (method, url, documented, status, body)
    assert checked_scopes >= 25, checked_scopes


async def test_a_405_allows_only_the_methods_of_its_own_path(stack: Platform) -> None:
    # Each path is also matched by a route with a parameter, whose methods are not its own.
    for method, path, allowed in (
        ("DELETE", "/v1/jobs/batch", "POST"),
        ("POST", "/v1/account/api-keys/current", "GET,HEAD"),
        ("PUT", "/v1/jobs/job_x", "GET,HEAD"),
    ):
        status, body, headers = await stack.request(method, path)
        assert status == 405 and body["error"]["code"] == "METHOD_NOT_ALLOWED", (path, body)
        assert headers["Allow"] == allowed, (method, path, headers["Allow"])


async def test_an_empty_date_time_is_refused_not_read_as_absent(stack: Platform) -> None:
    for name in ("created_before", "created_after"):
        status, body, _ = await stack.request("GET", f"/v1/jobs?{name}=")
        assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR", body
        assert name in body["error"]["details"], body
