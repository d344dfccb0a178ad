"""crewq/private_files.py: what `crewq dev` keeps on disk is its owner's alone, from the
moment it exists, and what an earlier version left readable by others is tightened."""

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from crewq.private_files import private_dir, read_private, write_private


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The loosest umask, so a file made with default permissions would be 0666."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_a_new_file_is_private_however_loose_the_umask(tmp_path: Path, open_umask: None) -> None:
    assert read_private(tmp_path / "secret-key", lambda: "k1") == "k1"
    assert _mode(tmp_path / "secret-key") == 0o600
    write_private(tmp_path / "dev-api-key", "crq_live_x\n")
    assert _mode(tmp_path / "dev-api-key") == 0o600
    assert (tmp_path / "dev-api-key").read_text() == "crq_live_x\n"
    # Written under a temporary name and renamed: nothing else is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev-api-key", "secret-key"]


def test_an_existing_file_keeps_its_content_and_loses_others_permissions(tmp_path: Path) -> None:
    loose = tmp_path / "secret-key"
    loose.write_text("old\n")
    loose.chmod(0o644)
    assert read_private(loose, lambda: "new") == "old"
    assert _mode(loose) == 0o600


def test_a_rewritten_file_is_replaced_privately(tmp_path: Path) -> None:
    loose = tmp_path / "dev-api-key"
    loose.write_text("old\n")
    loose.chmod(0o666)
    write_private(loose, "new\n")
    assert loose.read_text() == "new\n" and _mode(loose) == 0o600


def test_a_folder_is_made_or_tightened_to_its_owner(tmp_path: Path, open_umask: None) -> None:
    made = private_dir(tmp_path / "a" / "data")
    assert _mode(made) == 0o700
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    private_dir(existing)
    assert _mode(existing) == 0o700
