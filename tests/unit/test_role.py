"""A role's life (shared/runtime/role.py): started, stopped on a signal or on the end of a
supervised
task, in order, with the exit code that says which; the ops port open throughout."""

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import aiohttp
import pytest

from shared.runtime import metrics
from shared.runtime.role import Life
from shared.runtime.settings import Settings


@pytest.fixture
async def signals_restored() -> AsyncIterator[None]:
    yield
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)


class Recorder:
    """A role that notes what happens to it, and whether its ops port answers meanwhile."""

    def __init__(self, task: str) -> None:
        self.task = task  # "signal": SIGTERM once started; "raises"; "returns"
        self.seen: list[str] = []
        self.port: int | None = None

    async def _forever(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            self.seen.append("task cancelled")

    async def _broken(self) -> None:
        raise ValueError("a bug")

    async def _returns(self) -> None:
        return

    async def start_up(self, life: Life) -> None:
        self.port = life.metrics_port
        self.seen.append("start_up")
        life.supervisor.start("heartbeat", self._forever())
        if self.task == "signal":
            asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)
        elif self.task == "raises":
            life.supervisor.start("pump", self._broken())
        else:
            life.supervisor.start("pump", self._returns())

    async def wind_down(self, failed: bool) -> None:
        # Still running: what a drain needs (heartbeats, cancels) keeps going meanwhile.
        self.seen.append(f"wind_down failed={failed}")
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{self.port}/livez") as resp,
        ):
            self.seen.append(f"livez {resp.status}")

    async def close(self) -> None:
        self.seen.append("close")


def _settings() -> Settings:
    return Settings(metrics_host="127.0.0.1", metrics_port=0)


async def _port_closed(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


async def test_a_signal_stops_it_in_order_and_exits_zero(signals_restored: None) -> None:
    role = Recorder("signal")
    code = await asyncio.wait_for(Life(metrics.Role.DISPATCHER, _settings()).serve(role), 10)
    assert code == 0
    assert role.seen == [
        "start_up",
        "wind_down failed=False",
        "livez 200",
        "task cancelled",
        "close",
    ]
    assert role.port is not None and role.port > 0 and await _port_closed(role.port)


@pytest.mark.parametrize("task", ["raises", "returns"])
async def test_a_supervised_task_ending_stops_it_and_exits_one(
    task: str, signals_restored: None
) -> None:
    role = Recorder(task)
    life = Life(metrics.Role.WORKER, _settings())
    code = await asyncio.wait_for(life.serve(role), 10)
    assert code == 1 and life.supervisor.failure == "pump"
    assert role.seen == [
        "start_up",
        "wind_down failed=True",
        "livez 200",
        "task cancelled",
        "close",
    ]


async def test_a_failed_start_up_is_raised_and_nothing_wound_down(signals_restored: None) -> None:
    class Broken(Recorder):
        async def start_up(self, life: Life) -> None:
            self.port = life.metrics_port
            raise RuntimeError("postgres refused")

    role = Broken("signal")
    with pytest.raises(RuntimeError, match="postgres refused"):
        await Life(metrics.Role.API, _settings()).serve(role)
    assert role.seen == []
    assert role.port is not None and await _port_closed(role.port)


def test_workers_and_dispatchers_register_the_api_does_not() -> None:
    settings = _settings()
    worker = Life(metrics.Role.WORKER, settings).presence
    dispatcher = Life(metrics.Role.DISPATCHER, settings).presence
    assert worker is not None and worker.role == "worker"
    assert dispatcher is not None and dispatcher.role == "dispatcher"
    assert Life(metrics.Role.API, settings).presence is None
