"""Schemathesis at its strictest against the live API: negative cases as well as positive
ones, every check, NUL bytes in generated strings, and the stateful phase, which follows the
document's OpenAPI links from the answer that made a resource to the operations on it. Each
failure it can report is a place where the document and the API disagree."""

import os
import re
import time
from pathlib import Path

import pytest

from tests import schemathesis_runs
from tests.harness import Platform

# What positive_data_acceptance takes by default (schemathesis's own list), and the one
# answer each of three operations gives to a request no schema can tell from a valid one.
_ACCEPTED = '"2xx", "3xx", "401", "403", "404", "409", "429", "5xx"'

CONFIG = f"""
[generation]
allow-x00 = true

[phases.stateful]
max-steps = {{steps}}

# Only the links the document declares drive the stateful phase: links inferred from
# Location headers or guessed from parameter names would test a guess, not the document.
[phases.stateful.inference]
algorithms = []

# An HTTP client cannot open a WebSocket: any request it sends, however valid its
# parameters, is not an upgrade, and gets the documented 426. (Declaring the upgrade
# headers would not help: the 101 that answers them leaves the client's connection a
# WebSocket, which its next request cannot reuse.)
[[operations]]
include-operation-id = "stream_tenant_events"
checks.positive_data_acceptance.expected-statuses = [{_ACCEPTED}, "426"]

# The key under test must live through the run: ids seen in answers feed the generation of
# others' parameters, and `GET /v1/account/api-keys/current` answers this key's own id.
# Revoking stays tested through its link: each key `POST /v1/account/api-keys` makes.
[[operations]]
include-operation-id = "revoke_key"
phases.coverage.extra-data-sources.responses = false
phases.fuzzing.extra-data-sources.responses = false
phases.examples.extra-data-sources.responses = false

# A job's `run_at` must not have passed (400 naming it), and `delay` and `run_at` exclude
# each other: no schema can say which times have passed, and the document does not state
# the exclusion.
[[operations]]
include-operation-id = "create_job"
checks.positive_data_acceptance.expected-statuses = [{_ACCEPTED}, "400"]

# `after` must name an event of the job: a well-formed id of no such event is refused
# with 400, and no schema can say which ids exist.
[[operations]]
include-operation-id = "job_events"
checks.positive_data_acceptance.expected-statuses = [{_ACCEPTED}, "400"]

# An allowlist's entries must be networks (host bits clear), which its pattern cannot say of
# every string of their characters (400 naming the entry), and `If-Match` must name the
# allowlist's current version (412), which no schema can know. No answer's values feed its
# body: the caller's address that a refusal names would confirm locking the key under test
# out of every operation after it.
[[operations]]
include-operation-id = "update_security"
checks.positive_data_acceptance.expected-statuses = [{_ACCEPTED}, "400", "412"]
phases.coverage.extra-data-sources.responses = false
phases.fuzzing.extra-data-sources.responses = false
phases.examples.extra-data-sources.responses = false

# A cron expression must parse (fields in range) and a time zone must exist: no schema
# can say which strings do, and the others are refused with the 400 naming the field.
[[operations]]
include-operation-id = "create_schedule"
checks.positive_data_acceptance.expected-statuses = [{_ACCEPTED}, "400"]
"""


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_the_api_matches_its_openapi_document_strictly(
    own_stack: Platform, tmp_path: Path
) -> None:
    stack = own_stack
    admin = await schemathesis_runs.start_fuzzed(stack, "schemathesis-strict")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(steps=os.environ.get("CREWQ_SCHEMATHESIS_STEPS", "10")))
    started = time.monotonic()
    text = await schemathesis_runs.run(
        stack,
        admin,
        tmp_path,
        "--mode",
        "all",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        examples="20",
        before_run=("--config-file", str(config)),
    )
    print(f"schemathesis took {time.monotonic() - started:.0f} s")
    print(text)
    # It did test: every documented operation, and the links between them.
    assert schemathesis_runs.tested(text) >= 30, text[-3000:]
    links = re.search(r"API Links:\s+(\d+) covered / (\d+) selected", text)
    assert links is not None and int(links.group(2)) >= 20, text[-3000:]
    assert int(links.group(1)) >= int(links.group(2)) // 2, text[-3000:]
