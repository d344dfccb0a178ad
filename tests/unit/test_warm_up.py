"""A crew process's warm-up: a real kickoff on the offline model, then the default model's
client, before it says it is ready; a warm-up that fails is said, not fatal."""

from typing import Any

import pytest
from crewai.events.event_bus import crewai_event_bus
from crewai.events.types.crew_events import CrewKickoffCompletedEvent

from shared.runtime.settings import OFFLINE_MODEL
from worker.crew import llm
from worker.crew import process as crew_process
from worker.crew.process import warm_up


def test_warm_up_runs_a_kickoff_and_builds_the_default_models_client() -> None:
    kickoffs: list[Any] = []
    with crewai_event_bus.scoped_handlers():

        @crewai_event_bus.on(CrewKickoffCompletedEvent)
        def seen(source: Any, event: CrewKickoffCompletedEvent) -> None:
            kickoffs.append(event)

        ready = warm_up(OFFLINE_MODEL)
        crewai_event_bus.flush(timeout=5)
    assert ready.error is None and ready.warm_up_s > 0
    assert len(kickoffs) == 1


def test_a_warm_up_that_fails_says_why_and_the_process_still_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = llm.make_llm

    def no_provider(model: str, **kwargs: Any) -> Any:
        if model == OFFLINE_MODEL:
            return real(model, **kwargs)
        raise ValueError(f"{model}: no credentials")

    monkeypatch.setattr(crew_process, "make_llm", no_provider)
    ready = warm_up("openai/gpt-4o-mini")
    assert ready.error == "ValueError: openai/gpt-4o-mini: no credentials"
