"""What the worker and its crew processes say to each other, as frozen dataclasses sent
over a pipe. Light on purpose: the worker imports it without importing CrewAI; only crew
processes (via the forkserver) do that."""

from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from schemas.jobs import Budget, ErrorCode, JobResult, Spent, TaskResult
from shared.domain.crews import CrewSpec
from shared.runtime.model_limits import ModelLimit


@dataclass(frozen=True)
class RunRequest:
    """Worker -> crew process: run this crew once. The child answers with any number of
    `Step`s, then one `CrewFinished` or `CrewFailed`."""

    job_id: str
    tenant_id: str
    spec: CrewSpec
    inputs: dict[str, Any]
    default_model: str
    llm_retry_attempts: int
    llm_retry_max_wait: float
    # Take the crew up from this state (worker/crew/checkpoint.py), not from its first task.
    resume: bytes | None = None
    # The person's answer to the task the state waits on (`InputAnswer` + `task_index`).
    answer: dict[str, Any] | None = None
    # Whether the worker can store checkpoints (CREWQ_CHECKPOINT_KEY is set): without, the
    # crew reports none, and a task that asks for a person fails the job.
    checkpoints: bool = True
    # What the job may spend, and what its earlier attempts spent (worker/crew/budget.py).
    budget: Budget | None = None
    spent: Spent | None = None
    caps: Budget | None = None  # what its tenant's monthly caps leave it, in the same terms
    # The per-model limits in force (shared/runtime/model_limits.py), for the shared limiter
    # (worker/crew/model_limits.py): crew processes read no database.
    model_limits: dict[str, ModelLimit] = field(default_factory=dict)


@dataclass(frozen=True)
class Ready:
    """Crew process -> worker, once, when it has warmed up: a throwaway offline kickoff and
    the default model's client built, so a job's first LLM request is not CrewAI's first."""

    warm_up_s: float
    error: str | None  # the warm-up failed (the process still serves; its first job is cold)


@dataclass(frozen=True)
class Accepted:
    """Crew process -> worker, first thing on a `RunRequest`: the job is in this process's
    hands. A process that dies before saying so never started it, and the job goes to
    another process instead of counting as a crash."""


@dataclass(frozen=True)
class CheckCrews:
    """Worker -> crew process: build each crew once, offline, without running it, and
    answer `CrewsChecked`: a crew that cannot be built is reported before a job needs it."""

    specs: list[CrewSpec]


@dataclass(frozen=True)
class CrewsChecked:
    errors: dict[str, str]  # crew name -> why it cannot be built


@dataclass(frozen=True)
class TaskBegan:
    name: str
    agent: str | None
    index: int  # its place in the crew, from 1
    total: int
    at_ns: int  # wall clock, for the task's span


@dataclass(frozen=True)
class TaskFinished:
    task: TaskResult
    at_ns: int


@dataclass(frozen=True)
class ToolCalled:
    task: str | None
    agent: str | None
    tool: str
    input: dict[str, Any] | str
    output: str | None  # an excerpt
    started_ns: int
    ended_ns: int
    from_cache: bool
    error: str | None


@dataclass(frozen=True)
class LlmCalled:
    task: str | None
    agent: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    started_ns: int
    ended_ns: int
    error: str | None


@dataclass(frozen=True)
class Checkpointed:
    """The crew's state after a task finished, to store (worker/crew/checkpoint.py)."""

    tasks_done: int
    task: str | None
    state: bytes


@dataclass(frozen=True)
class Resumed:
    """The crew was taken up from its checkpoint, after `tasks_done` finished tasks."""

    tasks_done: int
    after_task: str


@dataclass(frozen=True)
class NotResumed:
    """The checkpoint given could not be taken up (the crew's tasks changed since, or it
    is not a state this version reads): the crew runs from its first task."""

    reason: str


@dataclass(frozen=True)
class Throttled:
    """An LLM call waited `waited_s` for its model's shared limit (or a provider's pause)."""

    model: str
    waited_s: float


@dataclass(frozen=True)
class Unthrottled:
    """An LLM call went ahead without its model's limit: the limiter's Redis was away."""

    model: str


# What a crew reports as it goes, between a `RunRequest` and its outcome.
Step = (
    TaskBegan
    | TaskFinished
    | ToolCalled
    | LlmCalled
    | Checkpointed
    | Resumed
    | NotResumed
    | Throttled
    | Unthrottled
)


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


@dataclass(frozen=True)
class InputNeeded:
    """A task asks a person: the crew stopped there, and `state` (a checkpoint holding the
    task's answer under review) takes it up again once answered."""

    task: str
    task_index: int  # from 1
    output: str
    prompt: str
    tasks_done: int
    state: bytes


ChildMessage = Accepted | Step | CrewFinished | CrewFailed | InputNeeded


def child_entry(conn: Connection, storage_dir: str) -> None:
    """A crew process's entry point (the forkserver has already imported the module)."""
    from worker.crew.process import child_main

    child_main(conn, storage_dir)
