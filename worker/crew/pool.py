"""Warm child processes that run crews and can be killed.

An asyncio timeout cannot stop a crew running in a thread; killing its process can. Each
crew runs in a child started by the forkserver (which has already imported CrewAI and its
providers); a child serves many jobs in turn and is recycled after `max_jobs` jobs or past
`max_rss_mb`, so a long-lived worker stays flat. Plain fork() of a process that has run a
crew can hang on CrewAI's threads, so children never come from fork(), and a child's
warm-up kickoff happens in the child, never in the forkserver.

A child is offered to a job only once it has said it is warm (`Ready`). A child that is
let go (killed by a timeout or a cancel, crashed, past its memory) is replaced at once, in
the background, so the next job finds a warm one instead of paying for the warm-up itself;
one that has run its `max_jobs` serves on until its successor is warm.
"""

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import psutil

from shared.domain.crews import CrewSpec
from worker.crew.protocol import (
    Accepted,
    CheckCrews,
    CrewFailed,
    CrewFinished,
    CrewsChecked,
    InputNeeded,
    Ready,
    RunRequest,
    Step,
    child_entry,
)

log = logging.getLogger(__name__)

# Longest one step of a crew may take to record before it is dropped.
_STEP_BUDGET_S = 2.0
# Longest a new crew process may take to warm up (on a loaded machine, several at once).
_WARM_UP_TIMEOUT_S = 120.0
# Crew processes a job is offered to, one after another, while each dies before taking it.
_HANDOVER_TRIES = 3


class NoCrewProcess(OSError):
    """A crew process could not be started, or died before it was warm."""


@dataclass(frozen=True)
class TimedOut:
    """The crew ran past its timeout; its process was killed."""


@dataclass(frozen=True)
class Stopped:
    """The caller asked the crew to stop; its process was killed."""


@dataclass(frozen=True)
class Crashed:
    """The crew process died or could not be reached."""

    message: str


Outcome = CrewFinished | CrewFailed | InputNeeded | TimedOut | Stopped | Crashed


@dataclass
class _Child:
    process: BaseProcess
    conn: Connection
    storage: Path  # CrewAI's files of this process alone (crew_process.use_private_storage)
    jobs_run: int = 0
    accepted: bool = False  # the job last sent was acknowledged (`Accepted`)
    # Started when it had run its `max_jobs`: it serves on until this one is warm.
    successor: "asyncio.Task[_Child] | None" = None

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid


class CrewPool:
    def __init__(self, size: int, *, max_jobs: int, max_rss_mb: int) -> None:
        self._ctx = multiprocessing.get_context("forkserver")
        self._size = size
        self._max_jobs = max_jobs
        self._max_rss = max_rss_mb * 1024 * 1024
        self._idle: list[_Child] = []
        self._warming: set[asyncio.Task[_Child]] = set()  # replacements on their way
        self._storage: Path | None = None  # the children's CrewAI files, from start()
        # Held for a job's whole attempt, from before it is claimed in Postgres: a job is
        # never marked running while it waits for a crew process.
        self.slots = asyncio.Semaphore(size)

    def _spawn(self) -> _Child:
        """Start a child and wait until it is warm (blocking: run it in a thread)."""
        assert self._storage is not None, "start() first"
        parent_conn, child_conn = self._ctx.Pipe()
        storage = self._storage / uuid.uuid4().hex
        process = self._ctx.Process(
            target=child_entry, args=(child_conn, str(storage)), name="crewq-crew", daemon=True
        )
        process.start()
        child_conn.close()
        child = _Child(process, parent_conn, storage)
        try:
            if not parent_conn.poll(_WARM_UP_TIMEOUT_S):
                raise NoCrewProcess(f"crew process not warm after {_WARM_UP_TIMEOUT_S:.0f} s")
            ready = parent_conn.recv()
        except (EOFError, OSError) as exc:
            self._bury(child)
            if isinstance(exc, NoCrewProcess):
                raise
            raise NoCrewProcess(f"crew process exited with code {process.exitcode}") from exc
        assert isinstance(ready, Ready), ready
        if ready.error:
            log.warning("crew process %d warmed up with an error: %s", child.pid, ready.error)
        log.debug("crew process %d warm in %.2f s", child.pid, ready.warm_up_s)
        return child

    def _replace(self) -> "asyncio.Task[_Child]":
        """Warm a child in the background for one let go or used up."""
        task = asyncio.create_task(asyncio.to_thread(self._spawn))
        self._warming.add(task)
        return task

    def _let_go_superseded(self, _: object = None) -> None:
        """Ask each idle child whose successor is warm to exit (it ends on its own, and the
        forkserver reaps it); run when a successor is done, so none lingers idle."""
        for child in [c for c in self._idle if self._superseded(c)]:
            self._idle.remove(child)
            with contextlib.suppress(OSError):
                child.conn.send(None)
            child.conn.close()
            shutil.rmtree(child.storage, ignore_errors=True)

    @staticmethod
    def _superseded(child: _Child) -> bool:
        """Its successor is warm (or failed to start): time for it to go."""
        return child.successor is not None and child.successor.done()

    async def start(self, preload: list[str] | None = None) -> None:
        """Start `size` children up front, warm, so the first jobs do not wait for them;
        the forkserver imports `preload` (modules) besides CrewAI."""
        self._storage = Path(tempfile.mkdtemp(prefix="crewq-crews-"))
        self._ctx.set_forkserver_preload(["worker.crew.process", *(preload or [])])
        # The forkserver ignores Ctrl-C only once it has imported CrewAI; a terminal's
        # SIGINT during those seconds would kill it. Start it with SIGINT ignored, a
        # disposition exec keeps (the worker's own handler is put back at once).
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            forkserver.ensure_running()
        finally:
            signal.signal(signal.SIGINT, previous)
        children = await asyncio.gather(
            *(asyncio.to_thread(self._spawn) for _ in range(self._size))
        )
        self._idle.extend(children)

    async def check(self, specs: list[CrewSpec], timeout: float = 60) -> dict[str, str]:
        """Build every crew once in a crew process; the ones that fail, with why. A crew
        process that cannot answer in time is replaced, and its answer is an error."""
        async with self.slots:
            try:
                child = await self._take()
            except NoCrewProcess as exc:
                return {spec.name: f"not checked: {exc}" for spec in specs}
            try:
                child.conn.send(CheckCrews(specs))
                async with asyncio.timeout(timeout):
                    answer = await asyncio.to_thread(child.conn.recv)
                assert isinstance(answer, CrewsChecked)
            except (TimeoutError, EOFError, OSError) as exc:
                await self._let_go(child)
                return {spec.name: f"not checked: {type(exc).__name__} {exc}" for spec in specs}
            except BaseException:
                await asyncio.shield(self._discard(child))
                raise
            self._idle.append(child)
        return answer.errors

    async def _take(self) -> _Child:
        """A warm child: an idle one (a used-up one only when no other is idle), else the
        replacement warming longest, else a new one. Raises NoCrewProcess when none could
        be started."""
        self._let_go_superseded()
        while self._idle:
            fresh = [n for n, c in enumerate(self._idle) if c.successor is None]
            child = self._idle.pop(fresh[-1] if fresh else -1)
            if self._answering(child):
                return child
            await self._discard(child)
        while self._warming:
            # Taken out of the set before it is awaited: no other job can get the same child.
            done = [t for t in self._warming if t.done()]
            task = done[0] if done else next(iter(self._warming))
            self._warming.discard(task)
            try:
                child = await task
            except NoCrewProcess as exc:  # killed while warming, say: try the next one
                log.warning("a replacement crew process did not start: %s", exc)
                continue
            if self._answering(child):
                return child
            await self._discard(child)
        return await asyncio.to_thread(self._spawn)

    @staticmethod
    def _answering(child: _Child) -> bool:
        """Whether a warm child can take a job. A warm child says nothing until it is sent
        one, so anything to read means its end of the pipe closed: it died. That shows the
        moment it dies, while `is_alive` waits for the forkserver to report its exit."""
        try:
            return child.process.is_alive() and not child.conn.poll()
        except OSError:
            return False

    @staticmethod
    def _bury(child: _Child) -> None:
        """Kill a child for good, wait until it is gone, and remove its files (blocking)."""
        if child.process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
        child.process.join(5)
        child.conn.close()
        shutil.rmtree(child.storage, ignore_errors=True)

    async def _discard(self, child: _Child) -> None:
        await asyncio.to_thread(self._bury, child)

    async def _let_go(self, child: _Child) -> None:
        """Discard a child that cannot serve on, and warm its replacement unless its
        successor is on its way already."""
        await self._discard(child)
        if child.successor is None:
            self._replace()

    def _within_memory(self, child: _Child) -> bool:
        try:
            return psutil.Process(child.pid).memory_info().rss < self._max_rss
        except psutil.Error:
            return False

    async def run(
        self,
        request: RunRequest,
        *,
        timeout: float,
        stop: asyncio.Event,
        on_step: Callable[[Step], Awaitable[None]],
    ) -> Outcome:
        """Run one crew in a child; the caller holds one of `slots`. Each step the crew
        reports goes to `on_step`, in order. Ends with the crew's result or error, or with
        `timeout`/`stopped` after killing the child when the deadline passes or `stop` is
        set."""
        for _ in range(_HANDOVER_TRIES):
            try:
                child = await self._take()
            except NoCrewProcess as exc:
                return Crashed(str(exc))
            child.accepted = False
            try:
                child.conn.send(request)
                outcome = await self._wait(child, timeout, stop, on_step)
            except (BrokenPipeError, EOFError, OSError) as exc:
                outcome = Crashed(f"crew process unreachable: {exc}")
            except BaseException:
                # Cancelled, or a callback failed: the crew must not run on unowned.
                await asyncio.shield(self._discard(child))
                raise
            if isinstance(outcome, Crashed) and not child.accepted:
                # It died between being taken and taking the job (killed the moment before,
                # say): nothing of the job ran there, so another process takes it.
                log.warning("crew process %d died before taking a job: %s", child.pid, outcome)
                await self._let_go(child)
                continue
            child.jobs_run += 1
            ended = isinstance(outcome, CrewFinished | CrewFailed | InputNeeded)
            if ended and self._within_memory(child) and not self._superseded(child):
                if child.jobs_run >= self._max_jobs and child.successor is None:
                    # Used up: its successor warms while it serves on, so no job waits for
                    # a warm-up (a second or more of CPU) at each recycle.
                    child.successor = self._replace()
                    child.successor.add_done_callback(self._let_go_superseded)
                self._idle.append(child)
            else:
                await self._let_go(child)
            return outcome
        return Crashed(f"{_HANDOVER_TRIES} crew processes in a row died before taking the job")

    async def _wait(
        self,
        child: _Child,
        timeout: float,
        stop: asyncio.Event,
        on_step: Callable[[Step], Awaitable[None]],
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        readable = asyncio.Event()
        fd = child.conn.fileno()
        loop.add_reader(fd, readable.set)
        try:
            while True:
                readable.clear()
                while child.conn.poll():
                    try:
                        message = child.conn.recv()
                    except EOFError:
                        await asyncio.to_thread(child.process.join, 5)
                        return Crashed(f"crew process exited with code {child.process.exitcode}")
                    if isinstance(message, Accepted):
                        child.accepted = True
                        continue
                    if isinstance(message, CrewFinished | CrewFailed | InputNeeded):
                        return message
                    if stopped := self._stopped(stop, deadline):
                        return stopped
                    # A step is recorded best effort, and never holds off a timeout or a stop
                    # (a slow or unreachable database would, between two reads).
                    remaining = deadline - loop.time()
                    try:
                        async with asyncio.timeout(min(remaining, _STEP_BUDGET_S)):
                            await on_step(message)
                    except TimeoutError:
                        log.warning("a step took over %.0f s to record; dropped", _STEP_BUDGET_S)
                # The caller kills the child for these two, right after the reader is removed.
                if stopped := self._stopped(stop, deadline):
                    return stopped
                remaining = deadline - loop.time()
                stop_wait = asyncio.ensure_future(stop.wait())
                read_wait = asyncio.ensure_future(readable.wait())
                try:
                    await asyncio.wait(
                        {stop_wait, read_wait},
                        timeout=remaining,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    stop_wait.cancel()
                    read_wait.cancel()
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(fd)

    @staticmethod
    def _stopped(stop: asyncio.Event, deadline: float) -> Stopped | TimedOut | None:
        if stop.is_set():
            return Stopped()
        if deadline - asyncio.get_running_loop().time() <= 0:
            return TimedOut()
        return None

    async def close(self) -> None:
        warming, self._warming = self._warming, set()
        for task in warming:  # wait for them: a child left warming would outlive the worker
            try:
                self._idle.append(await task)
            except NoCrewProcess as exc:
                log.warning("a crew process being replaced did not start: %s", exc)
        idle, self._idle = self._idle, []
        for child in idle:
            with contextlib.suppress(OSError):
                child.conn.send(None)
        for child in idle:
            await asyncio.to_thread(child.process.join, 2)
            if child.process.is_alive():
                await self._discard(child)
        if self._storage is not None:
            shutil.rmtree(self._storage, ignore_errors=True)
