"""Ships crewq's wire models, the repository's `schemas` package (pydantic alone), in the
client's wheel as the top-level `schemas`, so the server and its clients parse the same
types.

Only into a built wheel or sdist: an editable install (the workspace's `uv sync`) copies
force-included files, and a copy would shadow the repository's `schemas` and go stale at
its next edit; there, crewq's own editable install already puts `schemas` on the path."""

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class WireModels(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "wire-models"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return
        root = Path(self.root)
        # In an unpacked sdist the package sits beside the client; in a checkout, one up.
        found = next(p for p in (root / "schemas", root.parent / "schemas") if p.is_dir())
        build_data["force_include"][str(found)] = "schemas"
