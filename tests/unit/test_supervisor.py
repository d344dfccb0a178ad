"""The supervisor: the first long-lived task to end stops its process, with its error."""

import asyncio
import logging

import pytest

from shared.runtime.supervisor import Supervisor


async def forever() -> None:
    await asyncio.Event().wait()


async def test_a_task_that_raises_stops_the_process_with_its_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("wrong type in redis")

    supervisor = Supervisor()
    survivor = supervisor.start("listener", forever())
    supervisor.start("consume", broken())
    await asyncio.wait_for(supervisor.wait(asyncio.Event()), 2)
    assert supervisor.failure == "consume" and supervisor.exit_code == 1
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "consume" in record.getMessage() and record.exc_info is not None
    assert "wrong type in redis" in str(record.exc_info[1])
    await supervisor.stop()
    assert survivor.cancelled()


async def test_a_task_that_returns_is_a_failure_too() -> None:
    async def gives_up() -> None:
        return

    supervisor = Supervisor()
    supervisor.start("pump", gives_up())
    await asyncio.wait_for(supervisor.wait(asyncio.Event()), 2)
    assert supervisor.failure == "pump" and supervisor.exit_code == 1


async def test_a_requested_stop_cancels_everything_and_exits_zero() -> None:
    supervisor = Supervisor()
    tasks = [supervisor.start(f"t{i}", forever()) for i in range(3)]
    stopping = asyncio.Event()
    stopping.set()
    await asyncio.wait_for(supervisor.wait(stopping), 2)
    await supervisor.stop()
    assert all(t.cancelled() for t in tasks)
    assert supervisor.failure is None and supervisor.exit_code == 0
