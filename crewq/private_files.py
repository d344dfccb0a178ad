"""Files and folders only their owner can read, for what `crewq dev` keeps on disk: the
Fernet key, the dev API key, the embedded Redis's password and data.

A file is never world-readable, not even for a moment: it is written under a temporary
name created with mode 0600 (O_EXCL, so never an existing file someone else prepared) and
renamed into place, which also means a reader sees the old content or the whole new one.
What an earlier version left readable by others is tightened when it is next used."""

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner can enter (created, or tightened if loose)."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(path, DIR_MODE)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable and writable by its owner only."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_private(path: Path, make: Callable[[], str]) -> str:
    """The file's content (stripped), written first from `make()` if it is missing; a file
    others could read is made private first."""
    if not path.exists():
        write_private(path, make() + "\n")
    else:
        _tighten(path, FILE_MODE)
    return path.read_text().strip()


def _tighten(path: Path, mode: int) -> None:
    """Drop every group and other permission `path` has (it keeps its owner's)."""
    current = stat.S_IMODE(path.stat().st_mode)
    if current & 0o077:
        path.chmod(current & mode)
