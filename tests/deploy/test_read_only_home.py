"""A worker on a read-only root filesystem whose HOME is not writable: CrewAI writes under
HOME when it is imported, so the worker must refuse to start and say what to fix, instead
of losing every crew process to an EOFError from its forkserver."""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.rules import ROOT


@pytest.fixture
def read_only_home(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A directory nobody can write to, and the command prefix that runs a process with it
    so: a directory without write permission for an ordinary user; for root, whom
    permissions do not stop, a read-only bind mount of it in a mount namespace of the
    process's own (as a read-only root filesystem is)."""
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o555)
    prefix: list[str] = []
    if os.geteuid() == 0:
        unshare = shutil.which("unshare")
        if unshare is None:
            pytest.skip("unshare (util-linux) is needed to make a directory read-only for root")
        prefix = [
            unshare,
            "--mount",
            "sh",
            "-c",
            'mount --bind -o ro "$HOME" "$HOME" && exec "$@"',
            "sh",
        ]
        probe = subprocess.run(
            [*prefix, "sh", "-c", 'touch "$HOME/x"'],
            env={**os.environ, "HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        if "Read-only file system" not in probe.stderr:
            pytest.skip(f"cannot mount read-only here: {probe.stderr.strip()}")
    yield home, prefix
    home.chmod(0o755)


def test_worker_with_an_unwritable_home_exits_and_names_it(
    read_only_home: tuple[Path, list[str]], tmp_path: Path
) -> None:
    home, prefix = read_only_home
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CREWQ_", "XDG_", "CREWAI_STORAGE"))
    }
    env |= {"HOME": str(home), "PYTHONPATH": str(ROOT), "CREWQ_LOG_FORMAT": "text"}
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "crewq", "worker"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 78, (done.returncode, done.stderr[-2000:])
    assert "worker cannot start" in done.stderr, done.stderr[-2000:]
    assert f"{home}/.local is not writable" in done.stderr, done.stderr[-2000:]
    assert f"HOME is {home}" in done.stderr and "set HOME" in done.stderr
    # It stopped before anything else: no crew process, no connection attempt.
    assert "CREWQ_DATABASE_URL" not in done.stderr
    assert "EOFError" not in done.stderr


def test_a_writable_home_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.crew.dirs import unwritable

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("CREWAI_STORAGE_DIR", raising=False)
    assert unwritable() is None
    # The folders CrewAI will use now exist under that HOME.
    assert (tmp_path / ".local/share/crewai/credentials").is_dir()
