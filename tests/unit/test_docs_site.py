"""The documentation site builds with no warning (MkDocs' strict mode fails on a broken
link or anchor and on a page left out of the nav), needs nothing from the internet, and its
settings reference holds every setting the code has. The README stays short."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from crewq.settings_reference import env_name, render
from shared.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# A tag that would load a font, script, style or image from another host when a page opens.
EXTERNAL_ASSET = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    # Not --quiet: it drops warnings below ERROR, and strict mode then counts none.
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert done.returncode == 0, done.stderr
    assert warnings == []
    return out


def test_every_setting_is_in_the_generated_reference(site: Path) -> None:
    page = (site / "reference" / "settings.html").read_text()
    missing = [env_name(name) for name in Settings.model_fields if env_name(name) not in page]
    assert missing == []
    assert "settings-table" not in page  # the hook replaced its marker


def test_every_setting_has_a_description() -> None:
    assert [name for name, info in Settings.model_fields.items() if not info.description] == []


def test_the_reference_names_the_repository_not_this_machine() -> None:
    table = render()
    assert str(ROOT) not in table
    assert "| `CREWQ_CREWS_PATH` | string | the repository's `crews/` |" in table
    assert "| `CREWQ_TRUSTED_PROXIES` | comma-separated list | none |" in table


def test_pages_load_nothing_from_other_hosts(site: Path) -> None:
    pages = list(site.rglob("*.html"))
    assert len(pages) > 20
    for page in pages:
        html = page.read_text()
        assert EXTERNAL_ASSET.search(html) is None, page
        # Material would fetch mermaid.js from a CDN for a diagram block: draw them in text.
        assert 'class="mermaid"' not in html, page


def test_readme_is_short_and_links_the_pages() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link
