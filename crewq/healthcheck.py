"""`crewq healthcheck`: the image's HEALTHCHECK, one command for every role.

A container runs one role, and each long-running role answers `GET /health` on one port:
the API on `CREWQ_API_PORT`, workers and dispatchers on `CREWQ_METRICS_PORT`. So the check
asks the API's port first and, when nothing listens there (connection refused: this is not
an API container), the metrics port. Healthy is a 200 from the first port that answers.
Standard library only: it runs every few seconds, and must start fast and small.
"""

import urllib.error
import urllib.request
from dataclasses import dataclass

from shared.runtime.settings import Settings

_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    detail: str


def _local(host: str) -> str:
    """Where to reach a server bound to `host` from inside its own container."""
    if host in _WILDCARDS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def health_urls(settings: Settings) -> list[str]:
    urls = [f"http://{_local(settings.api_host)}:{settings.api_port}/health"]
    if settings.metrics_port is not None:
        urls.append(f"http://{_local(settings.metrics_host)}:{settings.metrics_port}/health")
    return urls


def check(urls: list[str], timeout_s: float = 3.0) -> Verdict:
    refused = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                return Verdict(resp.status == 200, f"{url}: {resp.status}")
        except urllib.error.HTTPError as exc:  # it answered: 503 while starting or cut off
            return Verdict(False, f"{url}: {exc.code} {exc.read(500).decode(errors='replace')}")
        except urllib.error.URLError as exc:
            if not isinstance(exc.reason, ConnectionRefusedError):
                return Verdict(False, f"{url}: {exc.reason}")
            refused.append(url)
        except TimeoutError:
            return Verdict(False, f"{url}: no answer in {timeout_s:g} s")
    return Verdict(False, "nothing listens on " + ", ".join(refused))
