"""A role's life: how every crewq process (the API, a worker, a dispatcher) starts and stops.

`Life.serve` is the one sequence. Start: name the role in metrics (`crewq_build_info`), open
the ops port (`CREWQ_METRICS_PORT`, shared/runtime/ops_server.py), take SIGTERM and SIGINT, and let
the role open what it needs and start its supervised tasks, registering in `processes` if it
is a role that does (`Life.register`). Then wait for a signal (exit 0) or for a supervised
task to end (exit 1, shared/runtime/supervisor.py). Stop, in this order: the role winds down knowing
which of the two it was (a worker drains, or hands its jobs back at once; the API closes its
site), the supervisor cancels the tasks still running, the role closes what it opened, and
the ops port closes last, so that `/livez` and `/metrics` answer throughout a drain.

A role's own part is a `Service`; what it shares with the others lives here, once.
"""

import asyncio
import signal
from collections.abc import Callable
from typing import Protocol

import asyncpg

from schemas.health import ProcessReport, ProcessRole
from shared.runtime import metrics
from shared.runtime.ops_server import Presence, ops_server
from shared.runtime.settings import Settings
from shared.runtime.supervisor import Supervisor
from shared.store import processes

# The roles that register in `processes`; their ops port answers `/health` from that
# registration's heartbeat. The API does neither: its public port answers `/health`.
_REGISTERED = {
    metrics.Role.WORKER: ProcessRole.WORKER,
    metrics.Role.DISPATCHER: ProcessRole.DISPATCHER,
}


class Service(Protocol):
    """A role's own part of its life; `Life` does the rest."""

    async def start_up(self, life: "Life") -> None:
        """Open what the role needs and start its long-lived tasks on `life.supervisor`.
        Should it raise, nothing of the role is wound down or closed: the process ends."""

    async def wind_down(self, failed: bool) -> None:
        """Stop taking work, after a signal (`failed` False) or the end of a supervised task
        (True), while the supervised tasks (heartbeats, cancels) still run."""

    async def close(self) -> None:
        """Once the supervised tasks have ended: release what `start_up` opened."""


class Life:
    def __init__(self, role: metrics.Role, settings: Settings) -> None:
        self.role = role
        self.settings = settings
        self.stopping = asyncio.Event()  # set by SIGTERM or SIGINT
        self.supervisor = Supervisor()
        registered = _REGISTERED.get(role)
        self.presence = (
            None if registered is None else Presence(registered, settings.process_dead_after)
        )
        self.metrics_port: int | None = None  # the ops port bound, once `serve` has opened it

    async def serve(self, service: Service) -> int:
        """The whole life: metrics identity and the ops port around `run`."""
        metrics.identify(self.role)
        settings = self.settings
        async with ops_server(settings.metrics_host, settings.metrics_port, self.presence) as port:
            self.metrics_port = port
            return await self.run(service)

    async def run(self, service: Service) -> int:
        """Start `service`, run until SIGTERM/SIGINT (exit 0) or until a supervised task ends
        (exit 1), and stop it. No ops port of its own: tests run roles side by side in one
        process this way."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        await service.start_up(self)
        try:
            await self.supervisor.wait(self.stopping)
        finally:
            await service.wind_down(failed=self.supervisor.failure is not None)
            await self.supervisor.stop()
            await service.close()
        return self.supervisor.exit_code

    def register(
        self,
        db: asyncpg.Pool,
        process_id: str,
        concurrency: int,
        report: ProcessReport,
        running: Callable[[], int],
    ) -> None:
        """Register in `processes` and heartbeat there (a supervised task), reporting the ops
        port this process serves on; each beat recorded makes the ops port's `/health` ready."""
        assert self.presence is not None, f"the {self.role} role does not register"
        me = processes.Registration(
            process_id,
            self.presence.role,
            concurrency,
            report.model_copy(update={"metrics_port": self.metrics_port}),
        )
        self.supervisor.start(
            "registration",
            processes.keep_registered(
                db, me, self.settings.process_heartbeat_interval, running, self.presence
            ),
        )
