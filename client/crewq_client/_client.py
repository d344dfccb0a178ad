"""`Client` and `AsyncClient`: an API key, a base URL, one HTTP connection pool, and the
resource namespaces (`jobs`, `webhooks`, `account`) that build requests for them to send."""

from types import TracebackType
from typing import Self

import httpx

from crewq_client._request import ApiRequest, T
from crewq_client._transport import RetryPolicy, send, send_async
from crewq_client._version import __version__
from crewq_client.account import AccountApi, AsyncAccountApi
from crewq_client.jobs import AsyncJobs, Jobs
from crewq_client.webhooks import AsyncWebhooks, Webhooks

DEFAULT_TIMEOUT_S = 30.0


def _headers(api_key: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {api_key}",
        "User-Agent": f"crewq-client/{__version__}",
        "Accept": "application/json",
    }


class Client:
    """The crewq API, synchronously. Use it as a context manager, or `close()` it.

    `retry`: how 429, 503 and broken connections are retried (`RetryPolicy()`: 4 attempts,
    `Retry-After` honoured). `transport`: an httpx transport, e.g. for a proxy or tests."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.http = httpx.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )
        self.jobs = Jobs(self)
        self.webhooks = Webhooks(self)
        self.account = AccountApi(self)

    def send(self, request: ApiRequest[T]) -> T:
        """Send one request (retried per `retry`) and read its answer; raises an `ApiError`
        subclass for an error answer, `ConnectionFailed` when the API stays unreachable."""
        return send(self.http, request, self.retry)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient:
    """The crewq API for asyncio: `Client`'s methods, awaited (iterators are async)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )
        self.jobs = AsyncJobs(self)
        self.webhooks = AsyncWebhooks(self)
        self.account = AsyncAccountApi(self)

    async def send(self, request: ApiRequest[T]) -> T:
        return await send_async(self.http, request, self.retry)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
