"""A crew's state between attempts (worker/crew/checkpoint.py) and a flow's
(worker/crew/flows.py): what it holds, the way back onto a crew built afresh, and what it
refuses. CrewAI is imported, no model is called."""

from typing import Any

import orjson
import pytest
from crewai import LLM, Agent, Crew, Task
from crewai.tasks.task_output import TaskOutput
from pydantic import BaseModel

from shared.runtime.settings import OFFLINE_MODEL
from worker.crew.checkpoint import (
    FORMAT,
    NotRestorable,
    Restored,
    Review,
    approve,
    restore,
    state_of,
    tasks_finished,
)
from worker.crew.flows import FlowState
from worker.crew.llm import make_llm


class Outline(BaseModel):
    title: str
    points: list[str]


def _crew(
    names: tuple[str, ...] = ("research", "outline", "write"),
    roles: tuple[str, str] = ("Researcher", "Writer"),
    llm: Any = None,
    structured: bool = False,
) -> Crew:
    """A crew of two agents and named tasks, the same every time it is built."""
    model = llm if llm is not None else make_llm(OFFLINE_MODEL)
    researcher = Agent(role=roles[0], goal="find facts", backstory="curious", llm=model)
    writer = Agent(role=roles[1], goal="write well", backstory="careful", llm=model)
    tasks = []
    for index, name in enumerate(names):
        agent = researcher if index == 0 else writer
        tasks.append(
            Task(
                name=name,
                description=f"Do the {name} about {{topic}}.",
                expected_output=f"The {name}.",
                agent=agent,
                output_pydantic=Outline if structured and name == "outline" else None,
            )
        )
    return Crew(agents=[researcher, writer], tasks=tasks)


def _output(task: Task, raw: str, **fields: Any) -> TaskOutput:
    return TaskOutput(
        description=task.description,
        name=task.name,
        expected_output=task.expected_output,
        raw=raw,
        agent=task.agent.role if task.agent else "",
        **fields,
    )


def _finished(crew: Crew, count: int) -> Crew:
    """Give the crew's first `count` tasks an output."""
    for index, task in enumerate(crew.tasks[:count], 1):
        if task.output_pydantic is Outline:
            outline = Outline(title="Tides", points=["moon", "sun"])
            task.output = _output(
                task,
                outline.model_dump_json(),
                pydantic=outline,
                json_dict=None,
                messages=[{"role": "user", "content": "outline it"}],
            )
        else:
            task.output = _output(task, f"answer {index}: ünïcode \u2603")
    return crew


def _state(**changes: Any) -> bytes:
    """A state of the default crew's first task, with its JSON's top level changed."""
    data = orjson.loads(state_of(_finished(_crew(), 1), 1))
    data.update(changes)
    return orjson.dumps(data)


# --- state_of and restore ---


def test_restore_puts_the_finished_tasks_outputs_back() -> None:
    done = _finished(_crew(), 2)
    state = state_of(done, 2)
    fresh = _crew()
    assert fresh.checkpoint_kickoff_event_id is None
    restored = restore(fresh, state)
    assert restored == Restored(tasks_done=2, after_task="outline", review=None)
    assert fresh.checkpoint_kickoff_event_id is not None  # CrewAI's resume path
    for before, after in zip(done.tasks[:2], fresh.tasks[:2], strict=True):
        assert after.output is not None and before.output is not None
        assert after.output.raw == before.output.raw
        assert after.output.model_dump() == before.output.model_dump()
    assert fresh.tasks[2].output is None


def test_a_structured_output_comes_back_as_the_tasks_model() -> None:
    """A task with `output_pydantic` (a crew's YAML `output_pydantic:`) resumes with its
    model as it was, not an empty one (TaskOutput declares the field a bare BaseModel)."""
    state = state_of(_finished(_crew(structured=True), 2), 2)
    fresh = _crew(structured=True)
    restore(fresh, state)
    outline = fresh.tasks[1].output
    assert outline is not None and isinstance(outline.pydantic, Outline)
    assert outline.pydantic == Outline(title="Tides", points=["moon", "sun"])
    assert outline.messages == [{"role": "user", "content": "outline it"}]


def test_the_state_holds_the_tasks_it_was_given_only() -> None:
    crew = _finished(_crew(), 3)
    data = orjson.loads(state_of(crew, 1))
    assert data["format"] == FORMAT and data["review"] is None
    assert [(t["name"], t["agent"]) for t in data["tasks"]] == [("research", "Researcher")]
    restored = restore(_crew(), state_of(crew, 1))
    assert (restored.tasks_done, restored.after_task) == (1, "research")


def test_a_state_of_no_tasks_resumes_nothing() -> None:
    fresh = _crew()
    restored = restore(fresh, state_of(_crew(), 0))
    assert (restored.tasks_done, restored.review) == (0, None)
    assert fresh.checkpoint_kickoff_event_id is None  # a first run
    assert all(t.output is None for t in fresh.tasks)


def test_an_unnamed_task_is_named_by_its_place() -> None:
    crew = _crew()
    for task in crew.tasks:
        task.name = None
    _finished(crew, 2)
    fresh = _crew()
    for task in fresh.tasks:
        task.name = None
    assert restore(fresh, state_of(crew, 2)).after_task == "task 2"


def test_a_state_of_another_crew_is_refused() -> None:
    state = state_of(_finished(_crew(), 2), 2)
    renamed = _crew(names=("research", "summary", "write"))
    with pytest.raises(NotRestorable, match="task 2"):
        restore(renamed, state)
    assert all(t.output is None for t in renamed.tasks)  # checked before any is put back
    with pytest.raises(NotRestorable):
        restore(_crew(roles=("Researcher", "Editor")), state)
    with pytest.raises(NotRestorable):
        restore(_crew(roles=("Scout", "Writer")), state)


def test_a_state_of_more_tasks_than_the_crew_has_is_refused() -> None:
    state = state_of(_finished(_crew(), 3), 3)
    with pytest.raises(NotRestorable, match="3 tasks"):
        restore(_crew(names=("research", "outline")), state)


@pytest.mark.parametrize(
    "state",
    [
        b"not json at all",
        b"",
        b"[1, 2]",
        b'"a string"',
        b"null",
        _state(format=FORMAT + 1),
        _state(format=str(FORMAT)),
        FlowState("f1", {}, [], None).encode(),
    ],
)
def test_a_state_not_of_this_format_is_refused(state: bytes) -> None:
    fresh = _crew()
    with pytest.raises(NotRestorable):
        restore(fresh, state)
    assert fresh.checkpoint_kickoff_event_id is None


@pytest.mark.parametrize(
    "state",
    [b'{"format": 1}', b'{"format": 1, "tasks": [{"output": {}}]}'],
    ids=["no-tasks", "task-without-name"],
)
def test_a_misshapen_state_of_this_format_is_refused(state: bytes) -> None:
    """The crew process falls back to its first task only on NotRestorable; anything else
    fails the job."""
    with pytest.raises(NotRestorable):
        restore(_crew(), state)


# --- a task's answer under review ---


def test_a_review_round_trips() -> None:
    crew = _finished(_crew(), 1)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a writer."},
        {"role": "user", "content": "Outline tides."},
    ]
    review = Review(task_index=2, output="a draft outline", messages=messages)
    state = state_of(crew, 1, review)
    fresh = _crew()
    restored = restore(fresh, state)
    assert restored == Restored(1, "research", review)
    assert fresh.checkpoint_kickoff_event_id is not None
    assert fresh.tasks[1].output is None  # the answer under review is not the output yet


def test_a_review_of_the_first_task_resumes_with_no_task_done() -> None:
    review = Review(1, "first draft", [{"role": "user", "content": "go"}])
    fresh = _crew()
    restored = restore(fresh, state_of(_crew(), 0, review))
    assert (restored.tasks_done, restored.after_task, restored.review) == (0, "", review)
    assert fresh.checkpoint_kickoff_event_id is not None


def test_a_review_keeps_what_json_cannot_hold_as_text() -> None:
    class Part:
        def __str__(self) -> str:
            return "a part"

    review = Review(2, "draft", [{"role": "user", "content": Part()}])
    state = state_of(_finished(_crew(), 1), 1, review)
    restored = restore(_crew(), state)
    assert restored.review is not None
    assert restored.review.messages == [{"role": "user", "content": "a part"}]


def test_approve_makes_the_reviewed_answer_the_tasks_output() -> None:
    crew = _finished(_crew(), 1)
    review = Review(2, "the approved outline", [])
    fresh = _crew()
    restored = restore(fresh, state_of(crew, 1, review))
    assert restored.review is not None
    approve(fresh, restored.review)
    task = fresh.tasks[1]
    assert task.output is not None
    assert (task.output.raw, task.output.name, task.output.agent) == (
        "the approved outline",
        "outline",
        "Writer",
    )
    assert task.output.description == task.description
    assert tasks_finished(fresh, 2) == 2
    assert fresh.tasks[2].output is None


# --- tasks_finished ---


def test_tasks_finished_counts_a_finished_prefix_only() -> None:
    crew = _crew()
    assert tasks_finished(crew, 1) is None
    _finished(crew, 1)
    assert tasks_finished(crew, 1) == 1
    assert tasks_finished(crew, 2) is None
    # The third finished before the second (an asynchronous task): no checkpoint yet.
    third = crew.tasks[2]
    third.output = _output(third, "early")
    assert tasks_finished(crew, 3) is None
    _finished(crew, 2)
    assert tasks_finished(crew, 2) == 2 and tasks_finished(crew, 3) == 3


def test_state_of_holds_finished_tasks_only() -> None:
    with pytest.raises(AssertionError):
        state_of(_finished(_crew(), 1), 2)


# --- what the state never holds ---


def test_the_state_never_holds_a_provider_key() -> None:
    secret = LLM(
        model="openai/gpt-4o-mini", api_key="sk-secret-xyz", base_url="http://127.0.0.1:9/v1"
    )
    crew = _finished(_crew(llm=secret), 2)
    assert all(agent.llm is secret for agent in crew.agents)
    assert secret.api_key == "sk-secret-xyz"  # the key is there to leak
    review = Review(3, "draft", [{"role": "user", "content": "write"}])
    state = state_of(crew, 2, review)
    assert b"sk-secret-xyz" not in state
    assert b"127.0.0.1:9" not in state


# --- flows ---


def test_a_flow_state_round_trips() -> None:
    pending = {"flow_id": "f-1", "method_name": "review", "message": "ok?"}
    state = FlowState(
        flow_id="f-1",
        state={"id": "f-1", "draft": "hello \u2603", "count": 2, "nested": {"a": [1, 2]}},
        methods=["start", "draft"],
        pending=pending,
    )
    assert FlowState.decode(state.encode()) == state
    plain = FlowState("f-2", {}, [], None)
    assert FlowState.decode(plain.encode()) == plain


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"flow_id": "f", "state": {}, "methods": [], "pending": null}',
        b'{"format": "flow-2", "flow_id": "f", "state": {}, "methods": [], "pending": null}',
        state_of(_crew(), 0),
    ],
    ids=["not-json", "list", "no-format", "other-format", "a-crews-state"],
)
def test_a_flow_state_of_another_format_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        FlowState.decode(data)
