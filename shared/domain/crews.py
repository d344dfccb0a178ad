"""The crew registry: which crews exist and which inputs they need.

A crew is a folder named after it under a crews directory, holding either a CrewAI YAML pair
(`agents.yaml`, `tasks.yaml`), or a `crew.yaml` naming a Python callable that returns a
`Crew` (`callable: crew.py:build`) or a CrewAI Flow class (`flow: flow.py:MyFlow`). An
optional `crew.yaml` beside the pair adds a description, the process, an LLM and job
defaults (timeout, retries, and how long a task asking a person waits, and what then).
Reading the registry never imports CrewAI: the API lists and validates crews without
paying for it; only the worker builds them (worker/crew/builder.py).
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from schemas.crews import CrewInfo
from schemas.jobs import MAX_INPUT_TIMEOUT_S, MAX_RETRIES, MAX_TIMEOUT_S, Budget, InputDefault
from shared.runtime.settings import OFFLINE_MODEL

# CrewAI interpolates `{name}` placeholders in agent and task text with the kickoff inputs.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_\-]*)\}")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,99}$")


class CrewConfigError(Exception):
    """A crew's files are missing or malformed."""


@dataclass(frozen=True)
class CrewSpec:
    name: str
    folder: Path
    description: str
    process: str
    inputs: list[str]
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    callable: str | None = None
    flow: str | None = None  # "file.py:Class" or "module:Class" of a CrewAI Flow
    llm: str | None = None
    default_timeout: int | None = None
    default_max_retries: int | None = None
    input_timeout: int | None = None  # seconds a task asking a person waits; None: platform's
    input_default: InputDefault | None = None  # what an unanswered one comes to
    budget: Budget | None = None  # a job's limits when its request sets none

    def info(self) -> CrewInfo:
        return CrewInfo(
            name=self.name,
            description=self.description,
            inputs=self.inputs,
            kind="flow" if self.flow else "callable" if self.callable else "yaml",
            process=self.process,
            agents=list(self.agents),
            tasks=list(self.tasks),
            default_timeout=self.default_timeout,
            default_max_retries=self.default_max_retries,
        )

    def model_for(self, agent_llm: str | None, default: str) -> str:
        """The model an agent of this crew runs on: its own, else the crew's, else
        `default`; with no provider configured (`default` is the offline model) every agent
        runs offline, whatever its YAML says."""
        if default == OFFLINE_MODEL:
            return OFFLINE_MODEL
        return agent_llm or self.llm or default

    def models(self, default: str) -> list[str]:
        """Every model this crew's agents (and a manager without a model of its own) use."""
        named = [self.model_for(None, default)]
        named += [self.model_for(agent.get("llm"), default) for agent in self.agents.values()]
        return list(dict.fromkeys(named))

    def missing_inputs(self, inputs: dict[str, Any]) -> list[str]:
        return [name for name in self.inputs if name not in inputs]


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CrewConfigError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CrewConfigError(f"{path}: expected a mapping at the top level")
    return data


def placeholders(value: Any) -> list[str]:
    """Every `{name}` in a YAML tree, in the order they first appear."""
    found: list[str] = []
    if isinstance(value, str):
        found.extend(_PLACEHOLDER.findall(value))
    elif isinstance(value, dict):
        for item in value.values():
            found.extend(placeholders(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(placeholders(item))
    return list(dict.fromkeys(found))


def _input_default(path: Path, value: Any) -> InputDefault | None:
    if value is None:
        return None
    try:
        return InputDefault(value)
    except ValueError:
        choices = ", ".join(d.value for d in InputDefault)
        raise CrewConfigError(f"{path}: input_default must be one of {choices}") from None


def _budget(path: Path, value: Any) -> Budget | None:
    if value is None:
        return None
    try:
        return Budget.model_validate(value)
    except ValidationError as exc:
        raise CrewConfigError(f"{path}: budget: {exc}") from None


def load_crew(folder: Path) -> CrewSpec:
    name = folder.name
    meta_path = folder / "crew.yaml"
    meta = _read_yaml(meta_path) if meta_path.exists() else {}
    description = str(meta.get("description", "")).strip()
    process = str(meta.get("process", "sequential"))
    if process not in ("sequential", "hierarchical"):
        raise CrewConfigError(f"{meta_path}: process must be sequential or hierarchical")
    bounds = (
        ("timeout", 1, MAX_TIMEOUT_S),
        ("max_retries", 0, MAX_RETRIES),
        ("input_timeout", 1, MAX_INPUT_TIMEOUT_S),
    )
    for key, low, high in bounds:
        value = meta.get(key)
        if value is not None and (type(value) is not int or not low <= value <= high):
            raise CrewConfigError(f"{meta_path}: {key} must be a whole number from {low} to {high}")
    common: dict[str, Any] = {
        "name": name,
        "folder": folder,
        "description": description,
        "process": process,
        "llm": meta.get("llm"),
        "default_timeout": meta.get("timeout"),
        "default_max_retries": meta.get("max_retries"),
        "input_timeout": meta.get("input_timeout"),
        "input_default": _input_default(meta_path, meta.get("input_default")),
        "budget": _budget(meta_path, meta.get("budget")),
    }
    if meta.get("callable") and meta.get("flow"):
        raise CrewConfigError(f"{meta_path}: name a callable or a flow, not both")
    if meta.get("callable") or meta.get("flow"):
        declared = meta.get("inputs", [])
        if not isinstance(declared, list) or not all(isinstance(i, str) for i in declared):
            raise CrewConfigError(f"{meta_path}: inputs must be a list of names")
        if meta.get("flow"):
            return CrewSpec(inputs=declared, flow=str(meta["flow"]), **common)
        return CrewSpec(inputs=declared, callable=str(meta["callable"]), **common)

    agents_path, tasks_path = folder / "agents.yaml", folder / "tasks.yaml"
    if not agents_path.exists() or not tasks_path.exists():
        raise CrewConfigError(
            f"{folder}: needs agents.yaml and tasks.yaml, or crew.yaml with callable"
        )
    agents, tasks = _read_yaml(agents_path), _read_yaml(tasks_path)
    for task_name, task in tasks.items():
        if not isinstance(task, dict) or task.get("agent") not in agents:
            raise CrewConfigError(f"{tasks_path}: task {task_name!r} names no agent of agents.yaml")
    if not description:
        description = "; ".join(str(a.get("role", n)).strip() for n, a in agents.items())
    return CrewSpec(inputs=placeholders([agents, tasks]), agents=agents, tasks=tasks, **common)


class CrewRegistry:
    """Crews found under the configured directories; a later directory cannot shadow an
    earlier one's crew."""

    def __init__(self, crews: dict[str, CrewSpec], errors: dict[str, str]) -> None:
        self.crews = crews
        self.errors = errors

    @classmethod
    def load(cls, dirs: list[Path]) -> "CrewRegistry":
        crews: dict[str, CrewSpec] = {}
        errors: dict[str, str] = {}
        for directory in dirs:
            if not directory.is_dir():
                continue
            for folder in sorted(directory.iterdir()):
                if not folder.is_dir() or not _NAME.match(folder.name) or folder.name in crews:
                    continue
                try:
                    crews[folder.name] = load_crew(folder)
                except CrewConfigError as exc:
                    errors[folder.name] = str(exc)
        return cls(crews, errors)

    def get(self, name: str) -> CrewSpec | None:
        return self.crews.get(name)
