"""Session-wide real services: Postgres and Redis (embedded unless CREWQ_DATABASE_URL /
CREWQ_REDIS_URL are set), a fake LLM provider and webhook receivers on 127.0.0.1, and one
running crewq platform shared by the tests that do not need their own."""

# Before any test module imports CrewAI: this process, too, keeps it off the network.
import worker.crew.offline  # noqa: F401  isort: skip
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.fakes import FakeLLM, Receiver
from tests.harness import Platform, Services


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("crewq")


@pytest.fixture(scope="session")
def services(workdir: Path) -> Iterator[Services]:
    running = Services(workdir)
    yield running
    running.stop()


@pytest_asyncio.fixture(scope="session")
async def llm() -> AsyncIterator[FakeLLM]:
    server = FakeLLM()
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(scope="session")
async def stack(services: Services, workdir: Path, llm: FakeLLM) -> AsyncIterator[Platform]:
    """The shared platform: API, one worker, one dispatcher."""
    platform = Platform(services, workdir, llm.base_url)
    await platform.prepare()
    await platform.start_api()
    await platform.start_worker()
    await platform.start_dispatcher()
    yield platform
    await platform.close()


@pytest_asyncio.fixture
async def own_stack(services: Services, workdir: Path, llm: FakeLLM) -> AsyncIterator[Platform]:
    """A platform of the test's own (database, Redis db); the test starts its processes."""
    platform = Platform(services, workdir, llm.base_url)
    await platform.prepare()
    yield platform
    await platform.close()


_MEASURED: list[str] = []


@pytest.fixture
def measure() -> Callable[[str, float], None]:
    """Record a measured duration; all of them are printed at the end of the run."""

    def record(label: str, seconds: float) -> None:
        _MEASURED.append(f"{label}: {seconds:.2f} s")

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _MEASURED:
        terminalreporter.section("measured")
        for line in _MEASURED:
            terminalreporter.write_line(line)
