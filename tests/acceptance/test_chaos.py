"""Nothing lost, nothing run twice at once, every outcome delivered, under a string of
process kills and Redis and Postgres failures (see tests/chaos.py)."""

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos import run_chaos
from tests.harness import Services

pytestmark = pytest.mark.slow


async def test_chaos_loses_nothing_and_delivers_every_outcome(
    services: Services, workdir: Path, measure: Callable[[str, float], None]
) -> None:
    report = await run_chaos(services, workdir, jobs=200)
    print("\n".join(report.lines()))
    measure("chaos: 200 jobs, all faults, last job finished after", report.seconds_to_last_finish)
    assert report.statuses == {"completed": 200}, report.lines()
    assert report.unfinished == 0
    assert report.completed_attempts == {1: 200}, "a job completed more than once, or never"
    assert report.terminal_events == {1: 200}, "a job owed more than one outcome"
    assert report.received_outcomes == 200, "an outcome never reached the receiver"
    assert report.outcome_ids_per_job == {1: 200}, "an outcome arrived under two webhook-ids"
    assert len(report.faults) == 4
