"""The long-lived tasks of a process, supervised: the first to end stops the process.

Each role runs a few tasks for its whole life (consuming the queue, listening for cancels,
recovery, the dispatcher's pump, the API's event listener). Each either runs until it is
cancelled or has hit a bug, so the first one to end for any other reason (by raising, or
by returning) is logged with its traceback and makes its role shut down and exit non-zero,
so that compose or Kubernetes restarts it. procrastinate's worker watches its side tasks
the same way (`_monitor_side_tasks`), but then returns normally, which leaves a worker that
lost its listener looking healthy; a crewq process that lost a task never does.
"""

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._ended = asyncio.Event()
        self._stopping = False
        self.failure: str | None = None  # the task whose end stopped the process

    def start(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return  # only crewq's own shutdown cancels these
        error = task.exception()  # read here, so no exception goes unseen
        if self._stopping and error is None:
            return
        if self.failure is None:
            self.failure = task.get_name()
        if error is not None:
            log.error("task %r failed; stopping", task.get_name(), exc_info=error)
        else:
            log.error("task %r ended on its own; stopping", task.get_name())
        self._ended.set()

    async def wait(self, stopping: asyncio.Event) -> None:
        """Until `stopping` is set or a supervised task ends (then `failure` names it)."""
        stop_wait = asyncio.ensure_future(stopping.wait())
        ended_wait = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({stop_wait, ended_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            ended_wait.cancel()

    async def stop(self) -> None:
        """Cancel every task still running and wait for them to end."""
        self._stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    @property
    def exit_code(self) -> int:
        return 1 if self.failure else 0
