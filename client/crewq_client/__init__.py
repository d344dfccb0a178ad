"""The crewq API from Python: `Client` (sync) and `AsyncClient`, typed with the server's own
wire models (`schemas`), needing only httpx and pydantic.

    with Client("http://127.0.0.1:8000", api_key) as crewq:
        job = crewq.jobs.submit("research", {"topic": "queues"})
        done = crewq.jobs.wait(job.id, timeout=300)
"""

from crewq_client._client import AsyncClient, Client
from crewq_client._transport import RetryPolicy
from crewq_client._version import __version__
from crewq_client.errors import (
    ApiError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    CrewqError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Unauthorized,
    Unavailable,
    ValidationFailed,
    WaitTimeout,
)
from crewq_client.signing import WebhookVerificationError, verify_event, verify_webhook

__all__ = [
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "CrewqError",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
    "WaitTimeout",
    "WebhookVerificationError",
    "__version__",
    "verify_event",
    "verify_webhook",
]
