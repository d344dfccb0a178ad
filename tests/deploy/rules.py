"""What the deployment files are checked against: crewq's own settings, the image the
Dockerfile builds, and the tools (from pinned PyPI wheels) that read these files offline."""

import sys
from collections.abc import Iterable
from pathlib import Path

import dockerfile

from shared.settings import PROVIDER_ENV_VARS, Settings

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("api", "worker", "dispatcher", "migrate", "keys", "doctor")

# Variables crewq reads that are not its own settings.
OTHER_VARIABLES = frozenset(
    {
        *PROVIDER_ENV_VARS,
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "CREWAI_DISABLE_TELEMETRY",
        "CREWAI_TRACING_ENABLED",
        "CREWAI_DISABLE_VERSION_CHECK",
    }
)


def setting_names() -> set[str]:
    return {f"CREWQ_{name.upper()}" for name in Settings.model_fields}


def unknown_variables(names: Iterable[str]) -> set[str]:
    """Of these variable names, those crewq would silently ignore: a typo, or a setting
    that was renamed or removed."""
    return {n for n in names if n not in setting_names() and n not in OTHER_VARIABLES}


def tool(name: str) -> str:
    """A command installed into this environment by a pinned wheel (kubectl,
    docker-compose, hadolint), not whatever the machine may have on its PATH."""
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is not installed in {path.parent}: run uv sync"
    return str(path)


def stages() -> list[list[dockerfile.Command]]:
    """The Dockerfile's instructions, one list per stage (each from its FROM)."""
    found: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if command.cmd == "FROM":
            found.append([])
        if found:
            found[-1].append(command)
    return found


def image_env() -> dict[str, str]:
    """The environment the final stage sets (ENV name value pairs)."""
    env: dict[str, str] = {}
    for command in stages()[-1]:
        if command.cmd == "ENV":
            pairs = command.value
            env.update({k: v.strip('"') for k, v in zip(pairs[::2], pairs[1::2], strict=True)})
    return env
