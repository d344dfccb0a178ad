"""CrewAI's event bus, heard inside a crew process: each step of the running crew (a task
started or finished, a tool or an LLM called) becomes a `Step` message to the worker.

The bus is process-wide: a listener hears every crew of its process (crewAI #2991). A crew
process runs one job at a time, and `StepReporter` keeps only the events whose task or
agent belongs to the crew it is watching now, so an event left over from an earlier job (a
handler still queued, a thread that outlived its crew) is dropped, never reported as this
job's. Its handlers are async: CrewAI runs those one after another on its own event-loop
thread, in the order the events were emitted (its sync handlers run on a pool of ten
threads, in any order), so a task's steps reach the worker in the order they happened.
"""

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crewai import Crew
from crewai.events.base_events import BaseEvent
from crewai.events.event_bus import crewai_event_bus
from crewai.events.types.flow_events import (
    MethodExecutionFinishedEvent,
    MethodExecutionStartedEvent,
)
from crewai.events.types.llm_events import (
    LLMCallCompletedEvent,
    LLMCallFailedEvent,
    LLMCallStartedEvent,
)
from crewai.events.types.task_events import TaskCompletedEvent, TaskStartedEvent
from crewai.events.types.tool_usage_events import (
    ToolUsageErrorEvent,
    ToolUsageFinishedEvent,
    ToolUsageStartedEvent,
)

from schemas.jobs import TaskResult
from worker.crew.checkpoint import state_of, task_label, tasks_finished
from worker.crew.protocol import (
    Checkpointed,
    LlmCalled,
    Step,
    TaskBegan,
    TaskFinished,
    ToolCalled,
)

# What a handler makes of an event: no step, one, or several in order.
Steps = Step | tuple[Step, ...] | None

# How much of a tool's output a `tool.completed` event carries.
OUTPUT_EXCERPT_CHARS = 1000
# How long a finished crew waits for its last events to be handled.
_FLUSH_S = 10.0


def structured_output(output: Any) -> dict[str, Any] | None:
    """What a task's or crew's output holds beyond text: its pydantic model or JSON."""
    if getattr(output, "pydantic", None) is not None:
        return output.pydantic.model_dump(mode="json")  # type: ignore[no-any-return]
    json_dict = getattr(output, "json_dict", None)
    return dict(json_dict) if json_dict else None


def task_result(output: Any) -> TaskResult:
    """A CrewAI `TaskOutput` as crewq reports it."""
    return TaskResult(
        name=output.name, agent=output.agent, raw=output.raw, structured=structured_output(output)
    )


def _method_result(name: str, value: Any) -> TaskResult:
    """A flow method's return value as a task's result."""
    if isinstance(value, str):
        return TaskResult(name=name, agent=None, raw=value)
    structured = structured_output(value)
    if structured is None and hasattr(value, "model_dump"):
        structured = value.model_dump(mode="json")
    elif structured is None and isinstance(value, dict):
        structured = value
    return TaskResult(name=name, agent=None, raw=str(value), structured=structured)


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1e9)


def _excerpt(value: Any) -> str | None:
    return None if value is None else str(value)[:OUTPUT_EXCERPT_CHARS]


def _bounded(args: dict[str, Any] | str) -> dict[str, Any] | str:
    """A tool's arguments as given, or their excerpt when they are long."""
    return args if len(str(args)) <= OUTPUT_EXCERPT_CHARS else str(args)[:OUTPUT_EXCERPT_CHARS]


@dataclass(frozen=True)
class _Scope:
    """The crew being watched: its tasks (id -> name, place) and agents' ids, and whether
    a checkpoint of its state follows each task it finishes."""

    crew: Crew | None  # None: a flow's, whose methods are its tasks
    tasks: dict[str, tuple[str, int]]
    agents: frozenset[str]
    total: int
    checkpoints: bool

    @classmethod
    def of(cls, crew: Crew, checkpoints: bool) -> "_Scope":
        tasks = {str(task.id): (task_label(task, i), i) for i, task in enumerate(crew.tasks, 1)}
        agents = frozenset(str(agent.id) for agent in crew.agents)
        return cls(crew, tasks, agents, len(crew.tasks), checkpoints)

    @classmethod
    def of_flow(cls, methods: int) -> "_Scope":
        return cls(None, {}, frozenset(), methods, False)

    def owns(self, event: BaseEvent) -> bool:
        if self.crew is None:
            # A flow's steps (its methods, the crews and models they call) carry no ids of
            # one crew's; the process runs this job alone, and a leftover event of the last
            # one was flushed when its watch ended.
            return True
        return event.task_id in self.tasks or (
            event.task_id is None and event.agent_id in self.agents
        )


class StepReporter:
    """Reports the steps of the crew it is `watching` through `send`."""

    def __init__(self, send: Callable[[Step], None]) -> None:
        self._send = send
        self._scope: _Scope | None = None
        self._lock = threading.Lock()
        # When a call began, by its call id (LLM) or its started event's id (tool).
        self._started: dict[str, int] = {}
        self._installed = False
        self._finished: list[TaskResult] = []  # a flow's methods' results, this watch
        self._methods_begun = 0

    def install(self) -> None:
        """Register the handlers on CrewAI's bus, once per process."""
        if self._installed:
            return
        self._installed = True
        handlers: dict[type[BaseEvent], Callable[[Any, Any], Steps]] = {
            TaskStartedEvent: self._task_started,
            TaskCompletedEvent: self._task_completed,
            MethodExecutionStartedEvent: self._method_started,
            MethodExecutionFinishedEvent: self._method_finished,
            ToolUsageStartedEvent: self._tool_started,
            ToolUsageFinishedEvent: self._tool_finished,
            ToolUsageErrorEvent: self._tool_failed,
            LLMCallStartedEvent: self._llm_started,
            LLMCallCompletedEvent: self._llm_completed,
            LLMCallFailedEvent: self._llm_failed,
        }
        for event_type, handle in handlers.items():
            crewai_event_bus.on(event_type)(self._scoped(handle))

    def _scoped(self, handle: Callable[[Any, Any], Steps]) -> Callable[[Any, Any], Any]:
        async def handler(source: Any, event: BaseEvent) -> None:
            with self._lock:
                scope = self._scope
            if scope is None or not scope.owns(event):
                return
            found = handle(scope, event)
            steps = found if isinstance(found, tuple) else (found,) if found else ()
            # Sent under the lock, and only while the same watch lasts: a handler that ran
            # late (CrewAI's flush gave up waiting) never sends into the child's next job.
            with self._lock:
                for step in steps if self._scope is scope else ():
                    self._send(step)

        return handler

    @contextlib.contextmanager
    def watching(self, crew: Crew, *, checkpoints: bool = False) -> Iterator[None]:
        """Report `crew`'s steps until the block ends, then wait for its last events to be
        handled, so each step is sent before the crew's outcome. With `checkpoints`, each
        finished task is followed by a checkpoint of the crew's state."""
        with self._watch(_Scope.of(crew, checkpoints)):
            yield

    @contextlib.contextmanager
    def watching_flow(self, methods: int) -> Iterator[list[TaskResult]]:
        """Report a flow's steps (each method a task) until the block ends; yields the
        list of the methods' results, complete once the block has ended."""
        with self._watch(_Scope.of_flow(methods)):
            yield self._finished

    @contextlib.contextmanager
    def _watch(self, scope: _Scope) -> Iterator[None]:
        with self._lock:
            self._scope = scope
            self._started.clear()
            self._finished = []
            self._methods_begun = 0
        try:
            yield
        finally:
            crewai_event_bus.flush(timeout=_FLUSH_S)
            with self._lock:
                self._scope = None

    def _task_of(self, scope: _Scope, event: BaseEvent) -> str | None:
        known = scope.tasks.get(event.task_id or "")
        return known[0] if known else event.task_name

    def _task_started(self, scope: _Scope, event: TaskStartedEvent) -> Steps:
        if scope.crew is None:  # a crew a flow's method runs: its methods are the tasks
            return None
        name, index = scope.tasks[event.task_id or ""]
        agent = getattr(getattr(event.task, "agent", None), "role", None)
        return TaskBegan(name, agent, index, scope.total, _ns(event.timestamp))

    def _task_completed(self, scope: _Scope, event: TaskCompletedEvent) -> Steps:
        if scope.crew is None:
            return None
        # Named as its start was: an unnamed task's output has no name of its own.
        name = self._task_of(scope, event)
        result = task_result(event.output).model_copy(update={"name": name})
        finished = TaskFinished(result, _ns(event.timestamp))
        _, index = scope.tasks[event.task_id or ""]
        crew = scope.crew
        done = tasks_finished(crew, index) if scope.checkpoints else None
        if done is None:
            return finished
        # Built here, on CrewAI's event thread, as the task finishes: the next task may be
        # running already, but the outputs of the ones before it no longer change.
        return finished, Checkpointed(done, name, state_of(crew, done))

    def _method_started(self, scope: _Scope, event: MethodExecutionStartedEvent) -> Steps:
        if scope.crew is not None:  # a flow run inside a crew's task: not this job's task
            return None
        self._methods_begun += 1
        index = self._methods_begun
        return TaskBegan(event.method_name, None, index, scope.total, _ns(event.timestamp))

    def _method_finished(self, scope: _Scope, event: MethodExecutionFinishedEvent) -> Steps:
        if scope.crew is None:
            result = _method_result(event.method_name, event.result)
            self._finished.append(result)
            return TaskFinished(result, _ns(event.timestamp))
        return None

    def _tool_started(self, scope: _Scope, event: ToolUsageStartedEvent) -> None:
        self._started[event.event_id] = _ns(event.timestamp)
        return None

    def _tool_call(
        self, scope: _Scope, event: Any, output: str | None, started: int, error: str | None
    ) -> ToolCalled:
        return ToolCalled(
            task=self._task_of(scope, event),
            agent=event.agent_role,
            tool=event.tool_name,
            input=_bounded(event.tool_args),
            output=output,
            started_ns=started,
            ended_ns=_ns(event.timestamp),
            from_cache=bool(getattr(event, "from_cache", False)),
            error=error,
        )

    def _tool_finished(self, scope: _Scope, event: ToolUsageFinishedEvent) -> Step:
        self._started.pop(event.started_event_id or "", None)
        return self._tool_call(scope, event, _excerpt(event.output), _ns(event.started_at), None)

    def _tool_failed(self, scope: _Scope, event: ToolUsageErrorEvent) -> Step:
        started = self._started.pop(event.started_event_id or "", _ns(event.timestamp))
        return self._tool_call(scope, event, None, started, _excerpt(event.error))

    def _llm_started(self, scope: _Scope, event: LLMCallStartedEvent) -> None:
        self._started[event.call_id] = _ns(event.timestamp)
        return None

    def _llm_call(
        self, scope: _Scope, event: Any, usage: dict[str, Any], error: str | None
    ) -> LlmCalled:
        ended = _ns(event.timestamp)
        return LlmCalled(
            task=self._task_of(scope, event),
            agent=event.agent_role,
            model=event.model or "unknown",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            started_ns=self._started.pop(event.call_id, ended),
            ended_ns=ended,
            error=error,
        )

    def _llm_completed(self, scope: _Scope, event: LLMCallCompletedEvent) -> Step:
        return self._llm_call(scope, event, event.usage or {}, None)

    def _llm_failed(self, scope: _Scope, event: LLMCallFailedEvent) -> Step:
        return self._llm_call(scope, event, {}, _excerpt(event.error))
