"""One crewq platform and one headless Chromium for the browser tests: Debian's chromium,
driven by Playwright, never a browser Playwright downloads. Without chromium the tests
skip, unless `CI` is set: CI installs it (.ci/run), so there its absence is a failure."""

import os
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

from tests.fakes import FakeLLM
from tests.harness import ROOT, Platform, Process, Services

SCREENSHOTS = ROOT / "build" / "screenshots"
_REPORTED: list[str] = []


def chromium_path() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return found


@dataclass
class Dashboard:
    """The platform the browser talks to, and what a test needs of it."""

    platform: Platform
    debug_token: str
    worker: Process
    shots: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.platform.base_url}/ui"


@pytest_asyncio.fixture(scope="module")
async def dashboard(services: Services, workdir: Path, llm: FakeLLM) -> AsyncIterator[Dashboard]:
    chromium_path()
    platform = Platform(services, workdir, llm.base_url)
    await platform.prepare()
    token = secrets.token_urlsafe(24)
    await platform.start_api(CREWQ_DEBUG_TOKEN=token)
    worker = await platform.start_worker(CREWQ_PROCESS_HEARTBEAT_INTERVAL="0.5")
    await platform.start_dispatcher(CREWQ_PROCESS_HEARTBEAT_INTERVAL="0.5")
    yield Dashboard(platform, token, worker)
    await platform.close()


@pytest_asyncio.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    path = chromium_path()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = await playwright.chromium.launch(
            executable_path=path, headless=True, args=["--no-sandbox"]
        )
        yield launched
        await launched.close()


def report(line: str) -> None:
    """A measured number, printed at the end of the run."""
    _REPORTED.append(line)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _REPORTED:
        terminalreporter.section("dashboard")
        for line in _REPORTED:
            terminalreporter.write_line(line)
