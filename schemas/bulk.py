"""`POST /v1/jobs/bulk-cancel` and `/v1/jobs/bulk-retry`: every job matching a filter, in
batches, as an operation whose progress can be read."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from schemas.jobs import JobStatus


class BulkKind(StrEnum):
    CANCEL = "cancel"
    RETRY = "retry"


class BulkStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"


def _iso_text(value: object) -> object:
    """An instant as JSON writes one, ISO 8601 text with its offset; not a number."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time with an offset, as a string")
    return value


Instant = Annotated[AwareDatetime, BeforeValidator(_iso_text), Field(strict=False)]


class JobSelection(BaseModel):
    """The jobs a bulk action takes, as `GET /v1/jobs` narrows them; every condition given
    must hold. Jobs created after the request are never taken."""

    model_config = ConfigDict(extra="forbid", strict=True)

    status: JobStatus | None = Field(default=None, strict=False)
    crew: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    created_after: Instant | None = None
    created_before: Instant | None = None
    metadata: (
        dict[
            Annotated[str, Field(min_length=1, max_length=100)],
            Annotated[str, Field(max_length=1000)],
        ]
        | None
    ) = Field(default=None, description="Every key must hold exactly this string.")


class BulkRequest(BaseModel):
    """Body of both bulk actions."""

    model_config = ConfigDict(extra="forbid", strict=True)

    filter: JobSelection = Field(default_factory=JobSelection)
    dry_run: bool = Field(default=False, description="Only count the matching jobs.")


class BulkOperation(BaseModel):
    object: Literal["bulk_operation"] = "bulk_operation"
    id: str | None = Field(description="None for a dry run, which makes no operation.")
    kind: BulkKind
    dry_run: bool
    status: BulkStatus
    filter: JobSelection
    matched: int = Field(description="Jobs the filter matched when asked.")
    processed: int = Field(description="Of those, how many were handled so far.")
    changed: int = Field(description="Of those, how many were cancelled or retried.")
    livemode: bool
    created_at: datetime
    finished_at: datetime | None
