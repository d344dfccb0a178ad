"""Which LLM an agent talks to, and crewq's built-in offline model.

Any CrewAI model string works; credentials and endpoints come from the providers' own
environment variables (OPENAI_API_KEY, OPENAI_BASE_URL, ANTHROPIC_API_KEY, ...).
"""

import hashlib
import os
from typing import Any

from crewai import LLM
from crewai.events.types.llm_events import LLMCallType
from crewai.llms.base_llm import BaseLLM, llm_call_context

from shared.runtime.settings import OFFLINE_MODEL
from worker.crew.llm_retry import with_retries

_OFFLINE_NOTE = "[crewq offline model: deterministic text, no LLM was called]"


def _task_line(messages: Any) -> str:
    """The `Current Task:` line CrewAI puts in the prompt, else the last user message."""
    if isinstance(messages, str):
        text = messages
    else:
        users = [m.get("content", "") for m in messages if m.get("role") == "user"]
        text = str(users[-1]) if users else ""
    for line in text.splitlines():
        if line.startswith("Current Task:"):
            return line.removeprefix("Current Task:").strip()
    return text.strip().splitlines()[0] if text.strip() else ""


class OfflineLLM(BaseLLM):
    """A model that answers from the prompt alone, the same way every time.

    It sits behind CrewAI's real `Crew.kickoff` path (agents, tasks, prompts, output
    parsing), so the platform runs end to end on a machine with no provider configured.
    """

    def call(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> str:
        # Announced on CrewAI's event bus as a provider's client does, so an offline job
        # reports its LLM calls (and their tokens) like any other.
        with llm_call_context():
            return self._answer(messages, from_task, from_agent)

    def _answer(self, messages: Any, from_task: Any, from_agent: Any) -> str:
        self._emit_call_started_event(messages=messages, from_task=from_task, from_agent=from_agent)
        task = _task_line(messages)
        digest = hashlib.sha256(repr(messages).encode()).hexdigest()[:8]
        answer = f"{_OFFLINE_NOTE} Answer to: {task} (#{digest})"
        prompt_chars = len(repr(messages))
        usage = {
            "prompt_tokens": prompt_chars // 4,
            "completion_tokens": len(answer) // 4,
            "total_tokens": (prompt_chars + len(answer)) // 4,
        }
        self._track_token_usage_internal(usage)
        text = f"Thought: I can answer from the task alone.\nFinal Answer: {answer}"
        self._emit_call_completed_event(
            response=text,
            call_type=LLMCallType.LLM_CALL,
            from_task=from_task,
            from_agent=from_agent,
            messages=messages,
            usage=usage,
        )
        return text

    def supports_function_calling(self) -> bool:
        return False

    def get_context_window_size(self) -> int:
        return 128_000


def make_llm(model: str, *, retry_attempts: int = 5, retry_max_wait: float = 30.0) -> BaseLLM:
    if model == OFFLINE_MODEL:
        return OfflineLLM(model=OFFLINE_MODEL)
    kwargs: dict[str, Any] = {}
    if model.startswith(("openai/", "anthropic/")) or "/" not in model:
        # These SDKs retry on their own by default; worker/crew/llm_retry.py is the one layer.
        kwargs["max_retries"] = 0
    # An OpenAI-compatible server (vLLM, Ollama, a gateway) serves model names CrewAI's
    # catalogue does not know; route them to the native OpenAI client at that base URL.
    openai_route = model.startswith("openai/") or "/" not in model
    if openai_route and (os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE")):
        kwargs["custom_openai"] = True
    return with_retries(LLM(model=model, **kwargs), retry_attempts, retry_max_wait, model=model)
