"""The directories CrewAI writes to when it is imported, checked before a worker starts its
crew processes.

CrewAI creates its storage folder (`crewai_core.paths.db_storage_path`: the user data
folder named after CREWAI_STORAGE_DIR or the working directory, under XDG_DATA_HOME or
~/.local/share) and its credentials folder (~/.local/share/crewai/credentials, which
ignores XDG_DATA_HOME) the moment it is imported, and writes a key file into the second.
On a read-only root filesystem with no writable HOME that import fails inside the
forkserver, and all the worker would report is the forkserver's EOFError. Asking CrewAI's
own functions for those folders here, in the worker's process (the same environment and
working directory the forkserver inherits), turns that into one clear error at start-up.
"""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from crewai_core.paths import db_storage_path
from crewai_core.token_manager import TokenManager

# What CrewAI creates at import, by its own functions (each makes its folder).
_FOLDERS: tuple[tuple[str, Callable[[], str | Path]], ...] = (
    ("its storage", db_storage_path),
    # Private, but it is the very function CrewAI's import calls; crewai is pinned exactly.
    ("its credentials", TokenManager._get_secure_storage_path),
)


def unwritable() -> str | None:
    """Why CrewAI could not be imported here, or None when every folder it writes to can be
    created and written."""
    home = os.path.expanduser("~")
    for what, make in _FOLDERS:
        folder: Path | None = None
        try:
            folder = Path(make())
            # The folder may exist already, read-only: write a file, as CrewAI will.
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            path = exc.filename or folder or home
            return (
                f"{path} is not writable ({exc.strerror or exc}): CrewAI writes {what} there"
                f" when it is imported, so no crew process could start. HOME is {home}: make"
                " it a writable directory (on a read-only root filesystem, mount a volume"
                " there, such as an emptyDir or a tmpfs), or set HOME to one; CrewAI's"
                " storage also follows XDG_DATA_HOME and CREWAI_STORAGE_DIR."
            )
    return None
