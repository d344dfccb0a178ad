"""What the deployment files are checked against: crewq's own settings, the image the
Dockerfile builds, and the tools (from pinned PyPI wheels) that read these files offline."""

import sys
from collections.abc import Iterable
from pathlib import Path

import dockerfile

from shared.runtime.llm_providers import PROVIDERS, SECRET_VARS
from shared.runtime.settings import PROVIDER_ENV_VARS, Settings

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("api", "worker", "dispatcher", "migrate", "keys", "doctor")

# Variables crewq reads that are not its own settings.
OTHER_VARIABLES = frozenset(
    {
        *PROVIDER_ENV_VARS,
        *SECRET_VARS,
        *(name for p in PROVIDERS for group in p.credentials for name in group),
        *(name for p in PROVIDERS for name in p.base_url_vars),
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "CREWAI_DISABLE_TELEMETRY",
        "CREWAI_TRACING_ENABLED",
        "CREWAI_DISABLE_VERSION_CHECK",
    }
)


# The variables that hold secrets, and the roles that use each; a role is given no other.
# Found in the code: every role opens the database (shared/runtime/db.py; the direct URL is the
# same database's credentials, so it goes where the URL goes); the API (api/app.py)
# and workers (worker/main.py) reach Redis, dispatchers and migrate never do; the API
# (sealing signing secrets), dispatchers (opening them to sign) and migrate (resealing;
# `keys create`) use CREWQ_SECRET_KEY, workers never; only workers seal and open crew
# checkpoints (CREWQ_CHECKPOINT_KEY, worker/main.py); only the API reads
# CREWQ_DEBUG_TOKEN (api/routes/health.py); only workers call LLM providers.
DATABASE_SECRETS = frozenset({"CREWQ_DATABASE_URL", "CREWQ_DATABASE_DIRECT_URL"})
PROVIDER_VARIABLES = frozenset(
    {
        *PROVIDER_ENV_VARS,
        *SECRET_VARS,
        *(name for p in PROVIDERS for group in p.credentials for name in group),
        *(name for p in PROVIDERS for name in p.base_url_vars),
    }
)
SECRETS_OF_ROLE: dict[str, frozenset[str]] = {
    "api": DATABASE_SECRETS | {"CREWQ_REDIS_URL", "CREWQ_SECRET_KEY", "CREWQ_DEBUG_TOKEN"},
    "worker": DATABASE_SECRETS | {"CREWQ_REDIS_URL", "CREWQ_CHECKPOINT_KEY"} | PROVIDER_VARIABLES,
    "dispatcher": DATABASE_SECRETS | {"CREWQ_SECRET_KEY"},
    "migrate": DATABASE_SECRETS | {"CREWQ_SECRET_KEY"},
}
SECRET_VARIABLES = frozenset().union(*SECRETS_OF_ROLE.values())


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


def dockerfile_default(name: str) -> str:
    """The default of a global ARG of the Dockerfile (one before its first FROM)."""
    for command in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if command.cmd == "FROM":
            break
        if command.cmd == "ARG":
            arg, _, default = str(command.value[0]).partition("=")
            if arg == name:
                return default
    raise AssertionError(f"the Dockerfile has no global ARG {name}")
