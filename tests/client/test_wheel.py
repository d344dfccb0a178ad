"""The client's wheel installs into a fresh virtual environment without CrewAI or anything
of the server's, offline (from uv's cache), and imports."""

import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.harness import ROOT

UV = shutil.which("uv")


def _closure(names: list[str]) -> list[str]:
    """The distributions `names` need, at the versions this environment holds, as pins."""
    found: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        dist = metadata.distribution(name)
        key = dist.metadata["Name"].lower()
        if key in found:
            continue
        found[key] = dist.version
        for text in dist.requires or []:
            need = Requirement(text)
            if need.marker is None or need.marker.evaluate({"extra": ""}):
                todo.append(need.name)
    return [f"{k}=={v}" for k, v in sorted(found.items())]


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.mark.skipif(UV is None, reason="uv builds and installs the wheel")
def test_the_client_wheel_installs_alone_and_offline(tmp_path: Path) -> None:
    assert UV is not None
    dist = tmp_path / "dist"
    subprocess.run(
        [UV, "build", "--wheel", "--offline", "--out-dir", str(dist), str(ROOT / "client")],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("crewq_client-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "crewq_client/py.typed" in names and "schemas/jobs.py" in names
    assert not any(n.startswith(("api/", "worker/", "shared/", "crewq/")) for n in names)

    venv = tmp_path / "venv"
    subprocess.run(
        [UV, "venv", "--offline", "--python", sys.executable, str(venv)],
        check=True,
        capture_output=True,
    )
    python = venv / "bin" / "python"
    # uv's offline resolver wants registry metadata that its cache may lack (pydantic-core's
    # here), so the dependencies are pinned as this environment holds them and installed
    # without resolving; `uv pip check` then proves the set complete and consistent.
    pins = _closure(["httpx", "pydantic"])
    subprocess.run(
        [UV, "pip", "install", "--offline", "--no-deps", "--python", str(python), str(wheel),
         *pins],
        check=True,
        capture_output=True,
    )  # fmt: skip
    subprocess.run([UV, "pip", "check", "--python", str(python)], check=True, capture_output=True)
    probe = (
        "import importlib.util, crewq_client, schemas.jobs;"
        "from crewq_client import Client, AsyncClient;"
        "print(importlib.util.find_spec('crewai') is None,"
        " importlib.util.find_spec('croniter') is None,"
        " importlib.util.find_spec('aiohttp') is None)"
    )
    ran = subprocess.run([python, "-c", probe], check=True, capture_output=True, text=True)
    assert ran.stdout.split() == ["True", "True", "True"]
    (site,) = (venv / "lib").glob("python3*/site-packages")
    print(
        f"\ncrewq-client wheel: {wheel.stat().st_size / 1024:.1f} KiB;"
        f" crewq_client + schemas installed: "
        f"{(_size(site / 'crewq_client') + _size(site / 'schemas')) / 1024:.1f} KiB;"
        f" site-packages with httpx, pydantic and their dependencies:"
        f" {_size(site) / 1024 / 1024:.1f} MiB"
    )
