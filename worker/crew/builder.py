"""Build a fresh CrewAI `Crew` for one job from its registry entry.

A new Crew, agents and LLM clients for every job: CrewAI objects keep state between
kickoffs and grow (crewAI #3450). What made that expensive, each client loading the CA
bundle, is shared per process instead (worker/crew/tls.py).
"""

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from typing import Any

from crewai import Agent, Crew, Process, Task
from crewai.llms.base_llm import BaseLLM
from pydantic import ValidationError

from shared.domain.crews import CrewConfigError, CrewSpec
from worker.crew.llm import make_llm

# Agent YAML keys that name objects a YAML file cannot hold.
_AGENT_SKIP = {"llm", "tools", "function_calling_llm", "manager_llm"}
_TASK_KEYS = {"description", "expected_output", "async_execution", "markdown", "human_input"}
# What a task asking for a person's input asks, unless its `approval` says.
DEFAULT_PROMPT = "Review the task's answer: approve it, or reject it with feedback."


class BuiltCrew:
    def __init__(
        self, crew: Crew, models: list[str], prompts: dict[str, str] | None = None
    ) -> None:
        self.crew = crew
        self.models = models
        # Task name -> what it asks a person (tasks.yaml `approval: "..."`).
        self.prompts = prompts or {}


def load_object(spec: CrewSpec, named: str) -> Any:
    """What `named` ("file.py:name" in the crew's folder, or "module:name") names; the
    file is executed afresh each time (a crew process builds each job's crew anew)."""
    target, _, attr = named.partition(":")
    if not attr:
        raise CrewConfigError(f"{spec.name}: {named!r} must be 'module:name' or 'file.py:name'")
    if target.endswith(".py"):
        path = spec.folder / target
        module_name = f"crewq_crews.{spec.name}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise CrewConfigError(f"{spec.name}: cannot load {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    found = getattr(module, attr, None)
    if found is None:
        raise CrewConfigError(f"{spec.name}: {named} names nothing")
    return found


def _load_callable(spec: CrewSpec) -> Callable[..., Crew]:
    assert spec.callable is not None
    fn = load_object(spec, spec.callable)
    if not callable(fn):
        raise CrewConfigError(f"{spec.name}: {spec.callable} is not a callable")
    return fn  # type: ignore[no-any-return]


def build_crew(
    spec: CrewSpec,
    default_model: str,
    *,
    llm_retry_attempts: int = 5,
    llm_retry_max_wait: float = 30.0,
) -> BuiltCrew:
    models: list[str] = []

    def llm_for(model: str | None) -> BaseLLM:
        chosen = spec.model_for(model, default_model)
        if chosen not in models:
            models.append(chosen)
        return make_llm(
            chosen, retry_attempts=llm_retry_attempts, retry_max_wait=llm_retry_max_wait
        )

    try:
        if spec.callable:
            fn = _load_callable(spec)
            wants_llm = "llm" in inspect.signature(fn).parameters
            crew = fn(llm=llm_for(None)) if wants_llm else fn()
            if not isinstance(crew, Crew):
                raise CrewConfigError(
                    f"{spec.name}: {spec.callable} returned {type(crew).__name__}, not a Crew"
                )
            return BuiltCrew(crew, models or [default_model])

        agents = {
            name: Agent(
                **{k: v for k, v in cfg.items() if k not in _AGENT_SKIP},
                llm=llm_for(cfg.get("llm")),
                verbose=False,
            )
            for name, cfg in spec.agents.items()
        }
        tasks: dict[str, Task] = {}
        prompts: dict[str, str] = {}
        for name, cfg in spec.tasks.items():
            missing = [c for c in cfg.get("context", []) if c not in tasks]
            if missing:
                raise CrewConfigError(
                    f"{spec.name}: task {name!r} uses later or unknown tasks {missing}"
                )
            # `approval`: crewq's approval step, a task whose answer a person approves
            # (or rejects with feedback) before the crew goes on; its text is what it asks.
            options = {k: v for k, v in cfg.items() if k in _TASK_KEYS}
            if approval := cfg.get("approval"):
                prompts[name] = approval if isinstance(approval, str) else DEFAULT_PROMPT
                options["human_input"] = True
            tasks[name] = Task(
                name=name,
                agent=agents[cfg["agent"]],
                context=[tasks[c] for c in cfg.get("context", [])] or None,
                **options,
            )
        process = Process(spec.process)
        extra: dict[str, Any] = {}
        if process is Process.hierarchical:
            extra["manager_llm"] = llm_for(None)
        crew = Crew(
            agents=list(agents.values()),
            tasks=list(tasks.values()),
            process=process,
            verbose=False,
            **extra,
        )
        return BuiltCrew(crew, models, prompts)
    except (ValidationError, TypeError) as exc:
        raise CrewConfigError(f"{spec.name}: {exc}") from exc
