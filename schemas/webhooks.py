"""Webhook endpoints, their deliveries and attempts, as `/v1/webhooks` shows them."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from schemas.events import EventType
from schemas.fields import WHOLE, WebhookUrl
from schemas.pages import Page

# What an endpoint may subscribe to: any event a job causes, or `*`: every one but the steps
# of a running crew (task.started, tool.completed, llm.completed), which go only to endpoints
# that name them. `webhook.test` is sent only on request, to one endpoint.
SUBSCRIBABLE_EVENTS = ("*", *(t.value for t in EventType if t is not EventType.WEBHOOK_TEST))
MAX_GRACE_S = 7 * 86400
DEFAULT_GRACE_S = 86400


def _event_types(value: list[str]) -> list[str]:
    unknown = [v for v in value if v not in SUBSCRIBABLE_EVENTS]
    if unknown:
        raise ValueError(
            f"unknown event types {unknown}; choose from {', '.join(SUBSCRIBABLE_EVENTS)}"
        )
    return list(dict.fromkeys(value))  # drop repeats, keep the order given


# The schema states the types an endpoint may name; the validator refuses the others with a
# message that lists them (a JSON Schema enum alone would not).
EventTypeName = Annotated[
    str, WithJsonSchema({"type": "string", "enum": list(SUBSCRIBABLE_EVENTS)})
]
EventTypes = Annotated[
    list[EventTypeName], Field(min_length=1, max_length=20), AfterValidator(_event_types)
]
Description = Annotated[str, Field(max_length=500)]


class WebhookCreate(BaseModel):
    """Body of `POST /v1/webhooks`."""

    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl
    events: EventTypes = Field(
        default_factory=lambda: ["*"],
        description="Event types to receive; `*`: all but the crew steps, which must be named.",
    )
    description: Description = ""


class WebhookUpdate(BaseModel):
    """Body of `PATCH /v1/webhooks/{id}`: only the fields given change. `enabled: true`
    re-enables a disabled endpoint and forgets its failures; `false` disables it."""

    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl | None = None
    events: EventTypes | None = None
    description: Description | None = None
    # Strict, as the document says: `0` or `"no"` is refused, not read as false.
    enabled: Annotated[bool, Field(strict=True)] | None = None


class SecretRotate(BaseModel):
    """Body of `POST /v1/webhooks/{id}/rotate-secret` (optional)."""

    model_config = ConfigDict(extra="forbid")

    grace_seconds: Annotated[int, Field(strict=True, ge=0, le=MAX_GRACE_S), WHOLE] = Field(
        default=DEFAULT_GRACE_S,
        description="How long the old secret keeps signing alongside the new one.",
    )


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class DisabledReason(StrEnum):
    """Why an endpoint receives nothing (checked in SQL too)."""

    GONE = "webhook.disabled: receiver answered 410 Gone"
    FAILING = "webhook.disabled: failing for too long"
    BY_API = "disabled through the API"


class DeliveryAttempt(BaseModel):
    number: int
    attempted_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None = Field(description="The first bytes of the receiver's answer.")


class DeliverySummary(BaseModel):
    object: Literal["webhook_delivery"] = "webhook_delivery"
    id: str
    endpoint_id: str | None = Field(description="None: the job's own webhook_url.")
    event_id: str = Field(description="Also the webhook-id header, the same on every attempt.")
    event_type: str
    job_id: str | None
    url: str | None = Field(
        description="None: an endpoint's URL, hidden from keys without webhooks:manage."
    )
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None = Field(description="When pending: the next attempt.")
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


class Delivery(DeliverySummary):
    attempts: list[DeliveryAttempt]

    def without_receivers(self) -> "Delivery":
        """As a key without `webhooks:manage` sees it: a registered endpoint's URL and
        every receiver's answer left out (the job's own `webhook_url` is the client's)."""
        return self.model_copy(
            update={
                "url": self.url if self.endpoint_id is None else None,
                "attempts": [a.model_copy(update={"response_body": None}) for a in self.attempts],
            }
        )


DeliveryList = Page[Delivery]


class WebhookEndpoint(BaseModel):
    """An endpoint as every read shows it: never with its secret."""

    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    id: str
    url: str
    description: str
    events: list[str]
    enabled: bool
    disabled_at: datetime | None
    disabled_reason: DisabledReason | None
    failing_since: datetime | None = Field(
        description="Deliveries have failed without a success since then."
    )
    previous_secret_expires_at: datetime | None = Field(
        description="After a rotation: until then the old secret signs too."
    )
    created_at: datetime
    updated_at: datetime
    recent_deliveries: list[DeliverySummary]


class WebhookEndpointCreated(WebhookEndpoint):
    """The answer to `POST /v1/webhooks`: the one time the secret is shown."""

    secret: str


WebhookEndpointList = Page[WebhookEndpoint]


class WebhookSecret(BaseModel):
    """The answer to a rotation: the new secret, shown once."""

    object: Literal["webhook_secret"] = "webhook_secret"
    endpoint_id: str
    secret: str
    previous_secret_expires_at: datetime | None


class WebhookTestResult(BaseModel):
    """What the receiver answered to the first attempt of a `webhook.test` delivery."""

    object: Literal["webhook_test"] = "webhook_test"
    endpoint_id: str
    event_id: str
    delivery_id: str
    succeeded: bool
    status_code: int | None
    duration_ms: int
    error: str | None
    response_body: str | None
    attempted_at: datetime
