"""The worker's crew processes, real ones, with no Postgres: a child is offered to a job
only once warm, and one let go is replaced at once, in the background."""

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest_asyncio

from shared.domain.crews import CrewRegistry
from shared.runtime.settings import OFFLINE_MODEL
from worker.crew.pool import CrewPool
from worker.crew.protocol import CrewFinished, RunRequest, Step
from worker.crew.tls import share_default_context

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


async def test_a_used_up_child_serves_on_until_its_successor_is_warm(pool: CrewPool) -> None:
    [first] = crew_processes()
    done = await run_echo(pool, "one")
    assert "one" in done.result.raw
    # max_jobs=1: that child is used up, and its successor is starting though no job has
    # asked for it yet. Held stopped, it cannot finish warming up.
    async with asyncio.timeout(30):
        while len(crew_processes()) < 2:
            await asyncio.sleep(0.01)
    [successor] = [p for p in crew_processes() if p.pid != first.pid]
    successor.suspend()
    try:
        # The next job does not wait for that warm-up: the used-up child takes it.
        async with asyncio.timeout(60):
            done = await run_echo(pool, "two")
        assert "two" in done.result.raw and first.is_running()
    finally:
        successor.resume()
    # Once the successor is warm, it takes the jobs, and the used-up child is gone.
    async with asyncio.timeout(120):
        while not all(t.done() for t in pool._warming):  # the pool's own view of warm-ups
            await asyncio.sleep(0.1)
    done = await run_echo(pool, "three")
    assert "three" in done.result.raw
    _, alive = await asyncio.to_thread(psutil.wait_procs, [first], 10)
    assert not alive, "the used-up child was not let go"
    # (max_jobs=1: that job used the successor up in turn, and its own successor starts.)
    assert successor.pid in {p.pid for p in crew_processes()}


async def test_children_killed_while_idle_or_warming_never_fail_the_next_job(
    pool: CrewPool,
) -> None:
    await run_echo(pool, "one")  # max_jobs=1: its replacement is warming now
    await asyncio.sleep(0.2)
    for child in crew_processes():  # what an OOM killer or an operator might do
        child.kill()
    done = await run_echo(pool, "after the kill")
    assert "after the kill" in done.result.raw


def crewai_lock_files() -> set[Path]:
    """The file locks CrewAI's default lock backend leaves in the temp folder."""
    return set(Path(tempfile.gettempdir()).glob("crewai:*.lock"))


async def test_each_crew_process_keeps_crewai_files_of_its_own() -> None:
    """CrewAI writes each kickoff's task outputs to SQLite under a polled file lock; shared
    by the crew processes, it made concurrent kickoffs wait on each other."""
    locks_before = crewai_lock_files()
    crews = CrewPool(2, max_jobs=10, max_rss_mb=2048)
    await crews.start()
    try:
        await asyncio.gather(run_echo(crews, "left"), run_echo(crews, "right"))
        base = crews._storage
        assert base is not None
        files = sorted(base.glob("*/latest_kickoff_task_outputs.db"))
        assert len(files) == 2 and files[0].parent != files[1].parent
        assert crewai_lock_files() == locks_before
    finally:
        await crews.close()
    assert not base.exists()
