"""The one JSON shape every error response has, and every `code` it may carry."""

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class ApiErrorCode(StrEnum):
    """Stable strings clients may branch on; each has one HTTP status (`STATUS`)."""

    VALIDATION_ERROR = "VALIDATION_ERROR"
    INVALID_JSON = "INVALID_JSON"
    INVALID_REQUEST = "INVALID_REQUEST"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    INVALID_API_KEY = "INVALID_API_KEY"
    API_KEY_EXPIRED = "API_KEY_EXPIRED"
    API_KEY_REVOKED = "API_KEY_REVOKED"
    INSUFFICIENT_SCOPE = "INSUFFICIENT_SCOPE"
    IP_NOT_ALLOWED = "IP_NOT_ALLOWED"
    LIVE_MODE_REQUIRED = "LIVE_MODE_REQUIRED"
    NOT_FOUND = "NOT_FOUND"
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    CREW_NOT_FOUND = "CREW_NOT_FOUND"
    WEBHOOK_NOT_FOUND = "WEBHOOK_NOT_FOUND"
    DELIVERY_NOT_FOUND = "DELIVERY_NOT_FOUND"
    API_KEY_NOT_FOUND = "API_KEY_NOT_FOUND"
    SCHEDULE_NOT_FOUND = "SCHEDULE_NOT_FOUND"
    BULK_OPERATION_NOT_FOUND = "BULK_OPERATION_NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    JOB_ALREADY_FINISHED = "JOB_ALREADY_FINISHED"
    JOB_NOT_RETRYABLE = "JOB_NOT_RETRYABLE"
    JOB_NOT_AWAITING_INPUT = "JOB_NOT_AWAITING_INPUT"
    CONCURRENCY_KEY_BUSY = "CONCURRENCY_KEY_BUSY"
    # AMP's `POST /resume` (docs/amp.md): as JOB_NOT_AWAITING_INPUT, with AMP's status.
    EXECUTION_NOT_AWAITING_INPUT = "EXECUTION_NOT_AWAITING_INPUT"
    TASK_NOT_AWAITING_INPUT = "TASK_NOT_AWAITING_INPUT"  # it waits on another task
    WEBHOOK_DISABLED = "WEBHOOK_DISABLED"
    DELIVERY_IN_FLIGHT = "DELIVERY_IN_FLIGHT"
    # `PUT /v1/account/security`: the allowlist leaves out the caller's own address.
    WOULD_LOCK_OUT_CALLER = "WOULD_LOCK_OUT_CALLER"
    # `If-Match` names a version that is no longer the current one.
    PRECONDITION_FAILED = "PRECONDITION_FAILED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    UPGRADE_REQUIRED = "UPGRADE_REQUIRED"
    UNKNOWN_CREW = "UNKNOWN_CREW"
    MISSING_INPUTS = "MISSING_INPUTS"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    INVALID_WEBHOOK_URL = "INVALID_WEBHOOK_URL"
    TOO_MANY_WEBHOOK_ENDPOINTS = "TOO_MANY_WEBHOOK_ENDPOINTS"
    RATE_LIMITED = "RATE_LIMITED"
    TOO_MANY_PENDING_JOBS = "TOO_MANY_PENDING_JOBS"
    TOO_MANY_STREAMS = "TOO_MANY_STREAMS"
    CLIENT_CLOSED = "CLIENT_CLOSED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    UNHEALTHY = "UNHEALTHY"
    WEBHOOK_TEST_PENDING = "WEBHOOK_TEST_PENDING"
    HTTP_ERROR = "HTTP_ERROR"  # any other HTTP error aiohttp itself raised


C = ApiErrorCode
STATUS: dict[ApiErrorCode, int] = {
    # 400: the request is malformed: fix it before sending it again.
    C.VALIDATION_ERROR: 400,
    C.INVALID_JSON: 400,
    C.INVALID_REQUEST: 400,
    # AMP documents 400 for resuming an execution not in its pending human input state
    # (a 409 elsewhere in crewq): AMP's clients get AMP's status.
    C.EXECUTION_NOT_AWAITING_INPUT: 400,
    C.TASK_NOT_AWAITING_INPUT: 400,
    # 401: who is asking is unknown.
    C.UNAUTHENTICATED: 401,
    C.INVALID_API_KEY: 401,
    C.API_KEY_EXPIRED: 401,
    C.API_KEY_REVOKED: 401,
    # 403: known, but not allowed this.
    C.INSUFFICIENT_SCOPE: 403,
    C.IP_NOT_ALLOWED: 403,
    C.LIVE_MODE_REQUIRED: 403,  # a test key asked for something live
    C.NOT_FOUND: 404,
    C.JOB_NOT_FOUND: 404,
    C.CREW_NOT_FOUND: 404,
    C.WEBHOOK_NOT_FOUND: 404,
    C.DELIVERY_NOT_FOUND: 404,
    C.SCHEDULE_NOT_FOUND: 404,
    C.BULK_OPERATION_NOT_FOUND: 404,
    C.API_KEY_NOT_FOUND: 404,
    C.METHOD_NOT_ALLOWED: 405,
    # 409: the thing is in a state that forbids this now.
    C.IDEMPOTENCY_KEY_REUSED: 409,
    C.JOB_ALREADY_FINISHED: 409,
    C.JOB_NOT_RETRYABLE: 409,
    C.JOB_NOT_AWAITING_INPUT: 409,
    C.CONCURRENCY_KEY_BUSY: 409,
    C.WEBHOOK_DISABLED: 409,
    C.DELIVERY_IN_FLIGHT: 409,
    C.WOULD_LOCK_OUT_CALLER: 409,
    # 412: changed since the client read it (`If-Match`): read it again.
    C.PRECONDITION_FAILED: 412,
    C.PAYLOAD_TOO_LARGE: 413,
    C.UNSUPPORTED_MEDIA_TYPE: 415,
    # 422: well formed, but it cannot be done.
    C.UNKNOWN_CREW: 422,
    C.MISSING_INPUTS: 422,
    C.QUOTA_EXCEEDED: 422,
    C.INVALID_WEBHOOK_URL: 422,
    C.TOO_MANY_WEBHOOK_ENDPOINTS: 422,
    # 426: the route speaks another protocol (a WebSocket): upgrade to it.
    C.UPGRADE_REQUIRED: 426,
    # 429: too much at once: wait `Retry-After` seconds.
    C.RATE_LIMITED: 429,
    C.TOO_MANY_PENDING_JOBS: 429,
    C.TOO_MANY_STREAMS: 429,
    C.CLIENT_CLOSED: 499,
    C.INTERNAL_ERROR: 500,
    C.SERVICE_UNAVAILABLE: 503,
    C.UNHEALTHY: 503,
    C.WEBHOOK_TEST_PENDING: 504,
    C.HTTP_ERROR: 400,
}


class ErrorDetail(BaseModel):
    code: ApiErrorCode
    message: str = Field(description="For people: what went wrong and what to do next.")
    request_id: str = Field(description="Also the X-Request-Id header; quote it to support.")
    details: Any = Field(
        default=None,
        description="For VALIDATION_ERROR: each field's messages, as {field: [message]}.",
    )


class ErrorBody(BaseModel):
    error: ErrorDetail
