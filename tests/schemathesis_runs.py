"""Running schemathesis's CLI against a live platform, as both OpenAPI tests do: the
platform started with the fuzzing limits, an admin key, the options every run shares, and
the answer read for how many operations it tested."""

import asyncio
import os
import re
import sys
from pathlib import Path

from tests.harness import FUZZ_ENV, Platform


async def start_fuzzed(stack: Platform, tenant: str) -> str:
    """Start the API, a worker and a dispatcher with the fuzzing limits; an admin key."""
    await stack.start_api(**FUZZ_ENV)
    await stack.start_worker(**FUZZ_ENV)
    await stack.start_dispatcher(**FUZZ_ENV)
    admin, _, _ = await stack.new_tenant(tenant, ["admin"])
    return admin


async def run(
    stack: Platform,
    admin: str,
    tmp_path: Path,
    *options: str,
    examples: str,
    before_run: tuple[str, ...] = (),
) -> str:
    """`schemathesis run` with `options` and those every run shares; its output, once it
    has exited 0 (asserted here, with the end of the output to read on failure)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        *before_run,
        "run",
        f"{stack.base_url}/openapi.json",
        *options,
        "--max-examples",
        os.environ.get("CREWQ_SCHEMATHESIS_EXAMPLES", examples),
        "--seed",
        "1",
        # One worker: with two, hypothesis's threads parse its source concurrently, which
        # CPython 3.11 before 3.11.9 can fail ("AST constructor recursion depth mismatch").
        "--workers",
        "1",
        "--header",
        f"Authorization: Bearer {admin}",
        # Above the 15 s that `POST /v1/webhooks/{id}/test` may wait for its attempt.
        "--request-timeout",
        "30",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-8000:]
    return text


def tested(text: str) -> int:
    """How many operations the run says it tested (0 when it says nothing)."""
    found = re.search(r"Tested: (\d+)", text)
    return int(found.group(1)) if found else 0
