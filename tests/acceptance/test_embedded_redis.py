"""The embedded Redis of `crewq dev` and the tests: it wants a password, which no local user
can read (not in `ps`, not on disk), and its files are its owner's alone."""

import stat
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import redis

from crewq.embedded import EmbeddedRedis
from tests.harness import Services


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_it_wants_its_password_and_keeps_its_files_private(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "data")
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port).ping()
        client = redis.Redis.from_url(server.url)
        assert client.ping() and client.set("k", "v")  # written to its append-only file
        client.close()
        assert server.password and server.password not in server.address
        assert server.password not in " ".join(psutil.Process(server.process.pid).cmdline())

        data = tmp_path / "data"
        assert _mode(data / "redis-password") == 0o600
        assert (data / "redis-password").read_text().strip() == server.password
        assert _mode(data / "redis") == 0o700
        files = [p for p in (data / "redis").iterdir() if p.is_file()]
        assert {p.name for p in files} >= {"redis.log", "appendonly.aof"}
        assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        server.stop()

    # Started again on the same folder, it keeps its password, so the URL still works.
    again = EmbeddedRedis(tmp_path / "data", port=server.port)
    try:
        assert again.url == server.url
        assert redis.Redis.from_url(again.url).get("k") == b"v"
    finally:
        again.stop()


def test_loose_files_an_older_version_left_are_tightened(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir(mode=0o755)
    (tmp_path / "redis").chmod(0o755)
    (tmp_path / "redis-password").write_text("an-old-password\n")
    (tmp_path / "redis-password").chmod(0o644)
    server = EmbeddedRedis(tmp_path, persist=False)
    try:
        assert server.password == "an-old-password"
        assert redis.Redis.from_url(server.url).ping()
        assert _mode(tmp_path / "redis") == 0o700
        assert _mode(tmp_path / "redis-password") == 0o600
    finally:
        server.stop()


def test_the_suites_own_redis_wants_a_password_too(services: Services) -> None:
    """Every test runs against an authenticated Redis, as every deployment does."""
    if not services.started_redis:
        pytest.skip("CREWQ_REDIS_URL names a Redis of the caller's own")
    address = urlsplit(services.redis_url)
    assert address.password
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=address.hostname or "", port=address.port or 6379).ping()
    assert redis.Redis.from_url(services.redis_url).ping()
