"""What the worker and its crew processes say to each other, as frozen dataclasses sent
over a pipe. Light on purpose: the worker imports it without importing CrewAI; only crew
processes (via the forkserver) do that."""

from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from schemas.jobs import ErrorCode, JobResult, TaskResult
from shared.crews import CrewSpec


@dataclass(frozen=True)
class RunRequest:
    """Worker -> crew process: run this crew once. The child answers with any number of
    `TaskFinished`, then one `CrewFinished` or `CrewFailed`."""

    job_id: str
    spec: CrewSpec
    inputs: dict[str, Any]
    default_model: str
    llm_retry_attempts: int
    llm_retry_max_wait: float


@dataclass(frozen=True)
class TaskFinished:
    task: TaskResult


@dataclass(frozen=True)
class CrewFinished:
    result: JobResult
    token_usage: dict[str, Any] | None


@dataclass(frozen=True)
class CrewFailed:
    code: ErrorCode
    message: str
    transient: bool  # worth another attempt (the provider was unavailable)
    traceback: str | None = None


ChildMessage = TaskFinished | CrewFinished | CrewFailed


def child_entry(conn: Connection) -> None:
    """A crew process's entry point (the forkserver has already imported the module)."""
    from worker.crew_process import child_main

    child_main(conn)
