"""A crew's steps as its crew process reports them, from CrewAI's real event bus, and the
CrewAI internals crewq depends on that have no public API."""

import contextvars
import threading
from typing import Any

import pytest
from crewai import Agent, Crew, Task
from crewai.llms import retry as crewai_retry
from crewai.tools import tool

from shared.domain.crews import CrewRegistry
from shared.runtime.settings import OFFLINE_MODEL, REPO_CREWS
from worker.crew.builder import build_crew
from worker.crew.events import OUTPUT_EXCERPT_CHARS, StepReporter
from worker.crew.llm import OfflineLLM, make_llm
from worker.crew.protocol import LlmCalled, Step, TaskBegan, TaskFinished, ToolCalled


class Collected:
    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.lock = threading.Lock()

    def __call__(self, step: Step) -> None:
        with self.lock:
            self.steps.append(step)


# One reporter per process, as in a crew process: CrewAI's bus is process-wide.
COLLECTED = Collected()
REPORTER = StepReporter(COLLECTED)
REPORTER.install()


def _research() -> Crew:
    spec = CrewRegistry.load([REPO_CREWS]).get("research")
    assert spec is not None
    return build_crew(spec, OFFLINE_MODEL).crew


def test_each_task_and_model_call_is_reported_in_order() -> None:
    COLLECTED.steps.clear()
    crew = _research()
    with REPORTER.watching(crew):
        crew.kickoff(inputs={"topic": "tides"})
    kinds = [type(s).__name__ for s in COLLECTED.steps]
    assert kinds == [
        "TaskBegan",
        "LlmCalled",
        "TaskFinished",
        "TaskBegan",
        "LlmCalled",
        "TaskFinished",
    ]
    first, llm, done = COLLECTED.steps[:3]
    assert isinstance(first, TaskBegan) and (first.index, first.total) == (1, 2)
    assert first.name == "research_task" and first.agent
    assert isinstance(llm, LlmCalled) and llm.model == OFFLINE_MODEL
    assert llm.task == "research_task" and llm.prompt_tokens > 0 and llm.completion_tokens > 0
    assert llm.started_ns <= llm.ended_ns
    assert isinstance(done, TaskFinished) and done.task.name == "research_task"


def test_events_of_a_crew_not_watched_are_never_reported() -> None:
    """crewAI #2991: the bus is process-wide. A crew kicked off beside the watched one (a
    stray thread of an earlier job) must not report into the watched job."""
    COLLECTED.steps.clear()
    watched, stray = _research(), _research()
    stray_names = {t.name for t in stray.tasks}
    started = threading.Event()

    def run_stray() -> None:
        started.set()
        stray.kickoff(inputs={"topic": "stray"})

    thread = threading.Thread(target=run_stray)
    with REPORTER.watching(watched):
        thread.start()
        started.wait()
        watched.kickoff(inputs={"topic": "watched"})
        thread.join()
    # Same task names, different tasks: every step reported is the watched crew's own.
    watched_ids = {str(t.id) for t in watched.tasks}
    assert stray_names == {t.name for t in watched.tasks}
    assert len([s for s in COLLECTED.steps if isinstance(s, TaskBegan)]) == 2
    assert len([s for s in COLLECTED.steps if isinstance(s, LlmCalled)]) == 2
    assert watched_ids  # two distinct Task objects were watched
    # And nothing arrives once the watch is over.
    COLLECTED.steps.clear()
    stray.kickoff(inputs={"topic": "after"})
    assert COLLECTED.steps == []


class ToolUsingLLM(OfflineLLM):
    """Answers the ReAct way: first an action on the word counter, then a final answer."""

    def call(self, messages: Any, *args: Any, **kwargs: Any) -> str:
        if "3 words" in str(messages):  # the tool's observation is in the prompt
            return "Thought: I have it.\nFinal Answer: counted"
        return 'Thought: count them.\nAction: count_words\nAction Input: {"text": "a b c"}'


@tool("count_words")
def count_words(text: str) -> str:
    """Count the words of a text."""
    return f"{len(text.split())} words " + "x" * 2 * OUTPUT_EXCERPT_CHARS


def test_a_tool_call_is_reported_with_its_input_and_an_excerpt_of_its_output() -> None:
    COLLECTED.steps.clear()
    agent = Agent(
        role="Counter",
        goal="Count",
        backstory="You count.",
        tools=[count_words],
        llm=ToolUsingLLM(model="scripted"),
    )
    crew = Crew(agents=[agent], tasks=[Task(description="Count", expected_output="n", agent=agent)])
    with REPORTER.watching(crew):
        crew.kickoff()
    [call] = [s for s in COLLECTED.steps if isinstance(s, ToolCalled)]
    assert call.tool == "count_words" and call.agent == "Counter"
    assert call.input == {"text": "a b c"}
    assert call.output is not None and call.output.startswith("3 words")
    assert len(call.output) == OUTPUT_EXCERPT_CHARS
    assert call.error is None and call.started_ns <= call.ended_ns


# --- CrewAI's private names crewq relies on; each test fails the day CrewAI changes it ---


def test_crewais_retry_flag_still_makes_its_rate_limit_loop_try_once() -> None:
    """worker/crew/llm_retry.py sets this flag so CrewAI's own 429 loop does not multiply
    crewq's tenacity retries. CrewAI offers no public switch for it."""
    flag = getattr(crewai_retry, "_active_llm_rate_limit_retry", None)
    assert isinstance(flag, contextvars.ContextVar)

    class Throttled(Exception):
        status_code = 429

    calls = 0

    def throttled() -> None:
        nonlocal calls
        calls += 1
        raise Throttled("rate limit")

    with pytest.raises(Throttled):
        crewai_retry.run_with_rate_limit_retry(throttled, sleep=lambda _: None)
    assert calls > 1  # CrewAI retries by itself...
    calls = 0
    token = flag.set(True)
    try:
        with pytest.raises(Throttled):
            crewai_retry.run_with_rate_limit_retry(throttled, sleep=lambda _: None)
    finally:
        flag.reset(token)
    assert calls == 1  # ...and not when crewq's layer is already retrying


def test_an_llms_call_can_still_be_shadowed_on_the_instance() -> None:
    """CrewAI offers no hook around a model call that could retry it; crewq shadows the
    instance's `call` (a pydantic model, set past validation). CrewAI's agents must keep
    calling `llm.call` on the instance for that to work."""
    llm = make_llm("openai/gpt-4o-mini", retry_attempts=2, retry_max_wait=1)
    assert llm.call.__name__ == "call_with_retries"
    assert type(llm).call.__name__ == "call"
