"""The OpenAPI document states what the API refuses: what every body refuses wherever in it,
the crews a job may name with the inputs each needs, and the links from an answer that
makes a resource to the operations on it."""

from typing import Any

import jsonschema_rs
import pytest
from aiohttp import web
from cryptography.fernet import Fernet

from api.app import create_app
from api.bodies import MAX_SAFE_NUMBER
from api.context import CREWS
from api.openapi import build
from api.operations import Call, Link, Operation, operation
from schemas.account import Scope
from schemas.fields import URL_PATTERN
from schemas.jobs import Job
from shared.runtime.settings import Settings
from shared.runtime.supervisor import Supervisor
from shared.webhooks.urls import check_url_syntax


def _app() -> web.Application:
    # Built, not started: no connection is opened.
    return create_app(Settings(secret_key=Fernet.generate_key().decode()), Supervisor())


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Draft202012Validator:
    # `#/components/schemas/...` refs resolve against the whole document. (The validator
    # schemathesis itself judges values with.)
    return jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})


def test_a_job_body_names_a_registered_crew_and_the_inputs_it_needs() -> None:
    app = _app()
    doc = build(app)
    body = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    valid = _validator(doc, body["schema"])
    crews = app[CREWS].crews
    assert crews, "the repository's crews load"
    for name, spec in crews.items():
        inputs = {needed: "x" for needed in spec.inputs}
        assert valid.is_valid({"crew": name, "inputs": inputs})
        if spec.inputs:
            assert not valid.is_valid({"crew": name, "inputs": {}})
    assert not valid.is_valid({"crew": "no-such-crew"})


def test_every_body_bounds_numbers_and_refuses_nul_wherever_they_are() -> None:
    doc = build(_app())
    body = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    valid = _validator(doc, body["schema"])
    crew = body["schema"]["anyOf"][0]
    job = {"crew": crew["properties"]["crew"]["const"]}
    needed = {name: "x" for name in crew["properties"]["inputs"].get("required", [])}
    assert valid.is_valid({**job, "inputs": {**needed, "a": [MAX_SAFE_NUMBER, {"b": "c"}]}})
    assert not valid.is_valid({**job, "inputs": {**needed, "a": [MAX_SAFE_NUMBER + 1]}})
    assert not valid.is_valid({**job, "inputs": {**needed, "a": -MAX_SAFE_NUMBER - 1.5}})
    assert not valid.is_valid({**job, "inputs": {**needed, "a": {"b": "c\x00"}}})
    assert not valid.is_valid({**job, "inputs": {**needed, "a\x00": 1}})
    # Metadata: objects and arrays nest at most five deep.
    assert valid.is_valid({**job, "inputs": needed, "metadata": {"a": [[[[1]]]]}})
    assert not valid.is_valid({**job, "inputs": needed, "metadata": {"a": [[[[[[1]]]]]]}})
    webhook = doc["paths"]["/v1/webhooks"]["post"]["requestBody"]["content"]["application/json"]
    valid = _validator(doc, webhook["schema"])
    assert not valid.is_valid({"url": "https://example.test", "description": "a\x00"})
    assert not valid.is_valid({"url": "0"})


@pytest.mark.parametrize(
    "url",
    ["https://example.test", "http://0", "https://a-b.c:8443/x?y=1#z", "https://h/ sp\u00e9"],
)
def test_a_url_the_document_takes_passes_the_policy_syntax(url: str) -> None:
    assert jsonschema_rs.Draft202012Validator({"pattern": URL_PATTERN}).is_valid(url)
    check_url_syntax(url, allow_http=True)


def test_links_lead_from_a_made_resource_to_the_operations_on_it() -> None:
    paths = build(_app())["paths"]
    links = paths["/v1/jobs"]["post"]["responses"]["202"]["links"]
    assert links["cancel_job"] == {
        "operationId": "cancel_job",
        "parameters": {"job_id": "$response.body#/id"},
    }
    created = paths["/v1/webhooks"]["post"]["responses"]["201"]["links"]
    assert created["delete_webhook"]["parameters"] == {"endpoint_id": "$response.body#/id"}
    key = paths["/v1/account/api-keys"]["post"]["responses"]["201"]["links"]
    assert key["revoke_key"]["parameters"] == {"key_id": "$response.body#/id"}


def test_a_link_to_no_documented_operation_is_refused_when_the_document_is_built() -> None:
    app = _app()

    @operation(Operation("x", Scope.JOBS_READ, {200: Job}, links=[Link("no_such_op")]))
    async def leads_nowhere(request: web.Request, call: Call[None]) -> web.Response:
        return web.Response()

    app.router.add_get("/v1/nowhere", leads_nowhere)
    with pytest.raises(ValueError, match="no_such_op"):
        build(app)
    with pytest.raises(ValueError, match="none has a body"):
        Operation("x", Scope.JOBS_READ, {204: None}, links=[Link("get_job")])
