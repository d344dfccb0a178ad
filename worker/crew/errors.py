"""Which failures are worth another try."""

import asyncio

# Exception class names of provider SDKs (openai, anthropic, httpx) that mean "try later".
_TRANSIENT_NAMES = frozenset(
    {
        "APIConnectionError",
        "APITimeoutError",
        "RateLimitError",
        "InternalServerError",
        "ServiceUnavailableError",
        "OverloadedError",
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "RemoteProtocolError",
    }
)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_transient(exc: BaseException) -> bool:
    """Provider throttling, 5xx answers, timeouts and broken connections are transient;
    anything else a crew raises (bad config, its own validation) is permanent."""
    for err in _chain(exc):
        status = getattr(err, "status_code", None)
        if isinstance(status, int) and (status in (408, 409, 429) or status >= 500):
            return True
        if type(err).__name__ in _TRANSIENT_NAMES:
            return True
        if isinstance(err, ConnectionError | TimeoutError | asyncio.TimeoutError):
            return True
    return False
