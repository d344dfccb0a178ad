"""Schemathesis against the live API: every documented operation, fuzzed from
`/openapi.json`, must answer without a server error and as its schema says."""

from pathlib import Path

import pytest

from tests import schemathesis_runs
from tests.harness import Platform

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance"
)


@pytest.mark.slow
# Over 40 operations at 25 examples each: past the default 300 s on a loaded machine.
@pytest.mark.timeout(420)
async def test_the_api_matches_its_openapi_document(own_stack: Platform, tmp_path: Path) -> None:
    stack = own_stack
    admin = await schemathesis_runs.start_fuzzed(stack, "schemathesis")
    text = await schemathesis_runs.run(
        stack,
        admin,
        tmp_path,
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        # A test event waits for the dispatcher; revoking the key under test stops the run.
        "--exclude-path",
        "/v1/account/api-keys/{key_id}",
        examples="25",
    )
    # It did test: every documented operation but the one excluded.
    assert schemathesis_runs.tested(text) >= 25, text[-3000:]
