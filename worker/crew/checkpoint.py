"""A crew's state between attempts, inside a crew process: the outputs of the tasks it
finished (and the answer of a task waiting for a person), as JSON; the way back from it;
and the human input provider that pauses a crew instead of prompting a terminal.

crewq does not store CrewAI's own checkpoints (`CheckpointConfig`): they hold the whole
runtime, agents with their LLM objects (an `LLM(api_key=...)` in plain text among them),
and restore custom LLM classes as their provider's, tools by import path, no lambdas. A
crew is instead built afresh for every attempt (worker/crew/builder.py: crewq's LLMs, LLM
retries and step reporting bound as on a first run) and the finished tasks' outputs are put
back on its tasks. CrewAI's own resume path then skips each task that has an output
(`checkpoint_kickoff_event_id` makes `Crew._get_execution_start_index` start at the first
task without one), as it does for `Crew.from_checkpoint`; the skipped outputs are still the
context of the tasks after them. No provider key is ever part of the state: it holds task
outputs and agents' messages, never an LLM object.
"""

from dataclasses import dataclass
from typing import Any

import orjson
from crewai import Crew, Task
from crewai.agents.parser import AgentFinish
from crewai.core.providers.human_input import (
    AsyncExecutorContext,
    ExecutorContext,
    HumanInputProvider,
)
from crewai.hooks.dispatch import HookAborted
from crewai.tasks.task_output import TaskOutput

FORMAT = 1  # the state's shape; a state of another shape is not taken up
# The feedback a rejection without words gives the agent.
_REJECTED = "The reviewer rejected this answer. Do the task again, better."
# Crewq's marker for CrewAI's resume path: any id other than None means "resuming".
_RESUMING = "crewq-checkpoint"


@dataclass(frozen=True)
class Review:
    """A task's answer waiting for a person, and the agent's conversation that led to it."""

    task_index: int  # from 1
    output: str
    messages: list[dict[str, Any]]


def _finished_prefix(crew: Crew) -> list[Task]:
    """The crew's first tasks that have an output, up to the first that has none."""
    done: list[Task] = []
    for task in crew.tasks:
        if task.output is None:
            break
        done.append(task)
    return done


def state_of(crew: Crew, tasks_done: int, review: Review | None = None) -> bytes:
    """The crew's state with its first `tasks_done` tasks finished (each must have its
    output), and `review` when a task waits for a person."""
    tasks = crew.tasks[:tasks_done]
    assert all(t.output is not None for t in tasks), "a checkpoint holds finished tasks only"
    return orjson.dumps(
        {
            "format": FORMAT,
            "tasks": [
                {
                    "name": t.name,
                    "agent": t.agent.role if t.agent else None,
                    # As its model: TaskOutput declares `pydantic` a bare BaseModel, which
                    # pydantic would otherwise dump as {}.
                    "output": (
                        t.output.model_dump(mode="json", serialize_as_any=True)
                        if t.output
                        else None
                    ),
                }
                for t in tasks
            ],
            "review": (
                {
                    "task_index": review.task_index,
                    "output": review.output,
                    "messages": review.messages,
                }
                if review
                else None
            ),
        },
        default=str,  # a message part no JSON type holds is kept as its text
    )


def tasks_finished(crew: Crew, up_to: int) -> int | None:
    """How many tasks a checkpoint taken when task `up_to` (from 1) finished holds: all
    tasks up to it, when each has its output (an asynchronous task before it may not yet)."""
    done = len(_finished_prefix(crew))
    return up_to if done >= up_to else None


class NotRestorable(ValueError):
    """The state does not fit the crew (its tasks changed) or is not of this format."""


@dataclass(frozen=True)
class Restored:
    tasks_done: int
    after_task: str  # the last finished task's name (or its place, unnamed)
    review: Review | None  # a task's answer that waited for a person, if the state held one


def task_label(task: Task, index: int) -> str:
    """A task's name in steps, checkpoints and input requests: its own, else its place
    (1-based) in the crew."""
    return task.name or f"task {index}"


def restore(crew: Crew, state: bytes) -> Restored:
    """Put the state's finished tasks' outputs back on `crew` (built afresh, not yet
    kicked off) so that its kickoff resumes after them. Raises NotRestorable, having put
    nothing back, when the state does not fit."""
    try:
        data = orjson.loads(state)
    except orjson.JSONDecodeError as exc:
        raise NotRestorable(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise NotRestorable(f"not a state of format {FORMAT}")
    try:
        return _restore(crew, data)
    except NotRestorable:
        raise  # found before anything was put back
    except (KeyError, TypeError, ValueError) as exc:  # ValidationError is a ValueError
        for task in crew.tasks:
            task.output = None
        crew.checkpoint_kickoff_event_id = None
        raise NotRestorable(
            f"not a state this crew can take up: {type(exc).__name__}: {exc}"
        ) from exc


def _restore(crew: Crew, data: dict[str, Any]) -> Restored:
    saved = data["tasks"]
    if len(saved) > len(crew.tasks):
        raise NotRestorable(f"it holds {len(saved)} tasks; the crew has {len(crew.tasks)}")
    for index, (task, entry) in enumerate(zip(crew.tasks, saved, strict=False), 1):
        role = task.agent.role if task.agent else None
        if (entry["name"], entry["agent"]) != (task.name, role):
            raise NotRestorable(
                f"task {index} was {entry['name']!r} of {entry['agent']!r}; the crew's is"
                f" {task.name!r} of {role!r}"
            )
    for task, entry in zip(crew.tasks, saved, strict=False):
        output = dict(entry["output"])
        if output.get("pydantic") is not None and task.output_pydantic is not None:
            output["pydantic"] = task.output_pydantic.model_validate(output["pydantic"])
        else:
            output["pydantic"] = None
        task.output = TaskOutput.model_validate(output)
    review = data.get("review")
    if saved or review:
        crew.checkpoint_kickoff_event_id = _RESUMING
    last = task_label(crew.tasks[len(saved) - 1], len(saved)) if saved else ""
    return Restored(
        len(saved),
        last,
        Review(review["task_index"], review["output"], review["messages"]) if review else None,
    )


def approve(crew: Crew, review: Review) -> None:
    """The person approved the answer under review: it is the task's output, as is."""
    task = crew.tasks[review.task_index - 1]
    task.output = TaskOutput(
        description=task.description,
        name=task.name,
        expected_output=task.expected_output,
        raw=review.output,
        agent=task.agent.role if task.agent else "",
    )


class InputRequired(HookAborted):
    """Raised where CrewAI would prompt a terminal: the crew stops, and its process reports
    the task's answer for a person to review. A HookAborted: CrewAI passes it through
    instead of retrying the task (`agent/core.py` `_passthrough_exceptions`)."""

    def __init__(self, task_index: int, output: str, messages: list[dict[str, Any]]) -> None:
        super().__init__(f"task {task_index} waits for a person's input")
        self.review = Review(task_index, output, messages)


class AskPerson(HumanInputProvider):
    """CrewAI's human input provider for one kickoff: every task that wants a person's
    input (`human_input: true`) stops the crew with `InputRequired`. A task the person
    rejected with feedback (`redo`) starts from the conversation they reviewed, with their
    feedback as its next message, so the next LLM request carries it and the answer they
    saw is not asked for again; its new answer stops the crew for review once more."""

    def __init__(self, crew: Crew, redo: tuple[Review, str] | None = None) -> None:
        self._crew = crew
        self._redo = redo

    def _index(self, context: ExecutorContext) -> int:
        for index, task in enumerate(self._crew.tasks, 1):
            if task is context.task:
                return index
        return 0

    def setup_messages(self, context: ExecutorContext) -> bool:
        if self._redo is None or self._redo[0].task_index != self._index(context):
            return False
        review, feedback = self._redo
        self._redo = None  # once: a later run of the task starts afresh
        context.messages.clear()
        context.messages.extend(review.messages)  # type: ignore[arg-type]
        context.messages.append({"role": "assistant", "content": review.output})
        context.messages.append(context._format_feedback_message(feedback or _REJECTED))
        return True

    def post_setup_messages(self, context: ExecutorContext) -> None:
        return None

    def handle_feedback(
        self, formatted_answer: AgentFinish, context: ExecutorContext
    ) -> AgentFinish:
        raise InputRequired(
            self._index(context),
            self._get_output_string(formatted_answer),
            [dict(m) for m in context.messages],
        )

    async def handle_feedback_async(
        self, formatted_answer: AgentFinish, context: AsyncExecutorContext
    ) -> AgentFinish:
        return self.handle_feedback(formatted_answer, context)
