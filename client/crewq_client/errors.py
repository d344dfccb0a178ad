"""What the client raises: one base class, an `ApiError` per HTTP status carrying the
server's error body (`code`, `message`, `details`, `request_id`), and the client's own."""

from typing import Any

import httpx
from pydantic import ValidationError

from schemas.errors import ApiErrorCode, ErrorBody
from schemas.jobs import Job

__all__ = [
    "ApiError",
    "BadRequest",
    "Conflict",
    "ConnectionFailed",
    "CrewqError",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
    "WaitTimeout",
    "error_from",
]


class CrewqError(Exception):
    """Anything this client raises."""


class ConnectionFailed(CrewqError):
    """The API could not be reached (or the connection broke) and retries ran out."""


class WaitTimeout(CrewqError):
    """`jobs.wait` gave up before the job ended; `job` is its state when it gave up."""

    def __init__(self, job: Job, timeout: float) -> None:
        super().__init__(f"job {job.id} still {job.status} after {timeout:g} s")
        self.job = job
        self.timeout = timeout


class ApiError(CrewqError):
    """The API answered an error. `code` is one of `ApiErrorCode` (a plain string when the
    server is newer than this client and sent a code it does not know)."""

    def __init__(
        self,
        status: int,
        code: ApiErrorCode | str,
        message: str,
        details: Any = None,
        request_id: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message} (request {request_id or 'unknown'})")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.request_id = request_id
        self.retry_after = retry_after


class BadRequest(ApiError):
    """400: the request is malformed (`VALIDATION_ERROR` names each field in `details`)."""


class Unauthorized(ApiError):
    """401: no key, or a key that is unknown, expired or revoked."""


class Forbidden(ApiError):
    """403: the key may not do this (scope, address, test key)."""


class NotFound(ApiError):
    """404: no such job, endpoint, delivery… for this key's tenant."""


class Conflict(ApiError):
    """409: the thing's state forbids this now (finished, not retryable, key reused…)."""


class PayloadTooLarge(ApiError):
    """413: the body is larger than the API takes."""


class ValidationFailed(ApiError):
    """422: well formed, but it cannot be done (unknown crew, missing inputs, quota…)."""


class RateLimited(ApiError):
    """429: too much at once; `retry_after` says when to try again."""


class ServerError(ApiError):
    """5xx: the server failed."""


class Unavailable(ServerError):
    """503: the service cannot answer now (its database or Redis is away); try again."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
    503: Unavailable,
}


def retry_after_of(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (a number, or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _code(raw: str) -> ApiErrorCode | str:
    try:
        return ApiErrorCode(raw)
    except ValueError:
        return raw


def error_from(response: httpx.Response) -> ApiError:
    """The typed error of an error response: the class by status, the fields from crewq's
    error body; a body of another shape (a proxy's page) still gives the status."""
    status = response.status_code
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    request_id = response.headers.get("X-Request-Id", "")
    retry_after = retry_after_of(response)
    try:
        body = ErrorBody.model_validate_json(response.content).error
    except ValidationError:
        # Read generically, so a code this client does not know yet is still given.
        try:
            raw = response.json()
            error = raw["error"]
            return kind(
                status,
                _code(str(error["code"])),
                str(error.get("message", "")),
                error.get("details"),
                str(error.get("request_id", request_id)),
                retry_after,
            )
        except (ValueError, KeyError, TypeError):
            text = response.text[:200]
            return kind(
                status,
                ApiErrorCode.HTTP_ERROR,
                text or response.reason_phrase,
                None,
                request_id,
                retry_after,
            )
    return kind(status, body.code, body.message, body.details, body.request_id, retry_after)
