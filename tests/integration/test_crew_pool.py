"""The worker's crew processes, real ones, with no Postgres: a child is offered to a job
only once warm, and one let go is replaced at once, in the background."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest_asyncio

from shared.crews import CrewRegistry
from shared.settings import OFFLINE_MODEL
from worker.crew_pool import CrewPool
from worker.crew_protocol import CrewFinished, RunRequest, Step
from worker.tls import share_default_context

ECHO = CrewRegistry.load([Path(__file__).parent.parent / "crews"]).crews["echo"]


def crew_processes() -> list[psutil.Process]:
    """The forkserver's children: the crew processes of this test's pool."""
    return [
        child
        for server in psutil.Process().children()
        if "forkserver" in " ".join(server.cmdline())
        for child in server.children()
    ]


async def no_steps(step: Step) -> None:
    pass


async def run_echo(pool: CrewPool, message: str) -> CrewFinished:
    async with pool.slots:
        outcome = await pool.run(
            RunRequest("job", "tenant", ECHO, {"message": message}, OFFLINE_MODEL, 1, 1.0),
            timeout=60,
            stop=asyncio.Event(),
            on_step=no_steps,
        )
    assert isinstance(outcome, CrewFinished), outcome
    return outcome


@pytest_asyncio.fixture
async def pool() -> AsyncIterator[CrewPool]:
    share_default_context()
    crews = CrewPool(1, max_jobs=1, max_rss_mb=2048)
    await crews.start()
    yield crews
    await crews.close()


async def test_a_child_let_go_is_replaced_warm_before_the_next_job(pool: CrewPool) -> None:
    [first] = crew_processes()
    done = await run_echo(pool, "one")
    assert "one" in done.result.raw
    # max_jobs=1: that child is gone, and its replacement is already starting (and warming
    # up) though no job has asked for it yet.
    await asyncio.sleep(0.5)
    [replacement] = crew_processes()
    assert replacement.pid != first.pid
    done = await run_echo(pool, "two")
    assert "two" in done.result.raw
    # The second job ran in that replacement, not in a child started for it.
    assert replacement.pid not in {p.pid for p in crew_processes()}


async def test_children_killed_while_idle_or_warming_never_fail_the_next_job(
    pool: CrewPool,
) -> None:
    await run_echo(pool, "one")  # max_jobs=1: its replacement is warming now
    await asyncio.sleep(0.2)
    for child in crew_processes():  # what an OOM killer or an operator might do
        child.kill()
    done = await run_echo(pool, "after the kill")
    assert "after the kill" in done.result.raw
