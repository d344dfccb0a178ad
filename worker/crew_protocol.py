"""What the worker and its crew processes say to each other. Light on purpose: the worker
imports it without importing CrewAI; only crew processes (via the forkserver) do that."""

from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from shared.crews import CrewSpec


@dataclass(frozen=True)
class RunRequest:
    """Parent -> child: run this crew once. The child answers with any number of
    `("task", {...})` messages, then one `("done", {...})` or `("error", {...})`."""

    job_id: str
    spec: CrewSpec
    inputs: dict[str, Any]
    default_model: str
    llm_retry_attempts: int
    llm_retry_max_wait: float


def child_entry(conn: Connection) -> None:
    """A crew process's entry point (the forkserver has already imported the module)."""
    from worker.crew_process import child_main

    child_main(conn)
