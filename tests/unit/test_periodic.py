"""The periodic supervised loop, and the one definition of a transient error it uses."""

import asyncio

import asyncpg
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.runtime.periodic import every, skip_transient
from shared.runtime.supervisor import Supervisor
from shared.runtime.transient import is_transient


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.PostgresConnectionError("server closed the connection"),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.TooManyConnectionsError("too many clients"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        RedisConnectionError("Connection reset by peer"),
        RedisTimeoutError("Timeout reading from socket"),
    ],
)
def test_postgres_or_redis_away_is_transient(error: Exception) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.UndefinedTableError("relation does not exist"),
        ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        ValueError("a bug"),
        KeyError("job_id"),
    ],
)
def test_anything_else_is_not(error: Exception) -> None:
    assert not is_transient(error)


async def test_a_transient_error_is_told_and_the_next_tick_runs() -> None:
    calls = 0
    told: list[Exception] = []
    second = asyncio.Event()

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RedisConnectionError("redis restarting")
        second.set()

    loop = asyncio.create_task(every(0.01, step, on_transient=told.append))
    await asyncio.wait_for(second.wait(), 2)
    assert not loop.done()
    loop.cancel()
    await asyncio.wait([loop])
    assert [str(e) for e in told] == ["redis restarting"]
    assert isinstance(told[0], RedisConnectionError)


async def test_it_sleeps_its_interval_between_steps() -> None:
    starts: list[float] = []
    clock = asyncio.get_running_loop().time

    async def step() -> None:
        starts.append(clock())

    loop = asyncio.create_task(every(0.2, step, on_transient=lambda exc: None))
    await asyncio.sleep(0.3)
    loop.cancel()
    await asyncio.wait([loop])
    assert len(starts) == 2 and starts[1] - starts[0] >= 0.2


async def test_any_other_error_ends_the_task_and_the_supervisor_sees_it() -> None:
    told: list[Exception] = []
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("wrong type in redis")

    supervisor = Supervisor()
    task = supervisor.start("recovery", every(0.01, step, on_transient=told.append))
    await asyncio.wait_for(supervisor.wait(asyncio.Event()), 2)
    assert supervisor.failure == "recovery" and supervisor.exit_code == 1
    assert isinstance(task.exception(), ValueError)
    assert calls == 1 and told == []  # not retried, not told as transient


@pytest.mark.parametrize("where", ["asleep", "in a step"])
async def test_cancelling_stops_it_asleep_or_in_a_step(where: str) -> None:
    calls = 0
    started = asyncio.Event()

    async def step() -> None:
        nonlocal calls
        calls += 1
        started.set()
        if where == "in a step":
            await asyncio.Event().wait()

    told: list[Exception] = []
    loop = asyncio.create_task(every(3600, step, on_transient=told.append))
    await asyncio.wait_for(started.wait(), 2)
    await asyncio.sleep(0.01)
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert loop.cancelled() and calls == 1 and told == []


async def test_skip_transient_runs_one_step_and_says_whether_it_succeeded() -> None:
    told: list[Exception] = []

    async def fine() -> None:
        return

    async def away() -> None:
        raise asyncpg.PostgresConnectionError("the database system is shutting down")

    async def broken() -> None:
        raise asyncpg.UndefinedColumnError("column does not exist")

    assert await skip_transient(fine, told.append) is True
    assert await skip_transient(away, told.append) is False
    assert [type(e) for e in told] == [asyncpg.PostgresConnectionError]
    with pytest.raises(asyncpg.UndefinedColumnError):
        await skip_transient(broken, told.append)
    assert len(told) == 1
