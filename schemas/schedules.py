"""`/v1/schedules`: a crew's job made on a cron expression in a time zone, or every so many
seconds; one job per tick, however many workers fire schedules."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from schemas.fields import WHOLE
from schemas.jobs import MAX_RETRIES, MAX_TIMEOUT_S, Metadata
from schemas.pages import Page

# How many coming run times a schedule's answer lists.
NEXT_RUNS = 5
# The shortest interval: a schedule is not a queue.
MIN_INTERVAL_S = 1
MAX_INTERVAL_S = 366 * 24 * 3600


class MissedPolicy(StrEnum):
    """What ticks missed while no scheduler ran (an outage) come to, once one runs again."""

    SKIP = "skip"  # none of them: the schedule goes on at its next tick
    RUN_ONCE = "run_once"  # one job now for all of them, then the next tick


def _cron(expression: str) -> str:
    """Five fields (minute hour day month weekday) or a nickname such as `@hourly`: no
    seconds field, which would make a schedule a busy loop. Whether the fields make a cron
    expression croniter can follow is the server's check (`shared/store/schedules.py`
    `cron_refusal`): these models need pydantic alone, so clients can ship them."""
    fields = expression.split()
    if not (len(fields) == 5 or (len(fields) == 1 and fields[0].startswith("@"))):
        raise ValueError("must be a cron expression of five fields, or a nickname like @daily")
    return expression


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not a known time zone (an IANA name)") from exc
    return name


Cron = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_cron)]
TimeZone = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_zone)]


class ScheduleCreate(BaseModel):
    """Body of `POST /v1/schedules`: `cron` (with `timezone`, UTC by default) or `interval`
    (seconds), not both."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        # One timing, as the route checks it: `cron` (and `timezone`), or `interval` alone.
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["cron"],
                    "properties": {"cron": {"type": "string"}, "interval": {"type": "null"}},
                },
                {
                    "required": ["interval"],
                    "properties": {
                        "interval": {"type": "integer"},
                        "cron": {"type": "null"},
                        "timezone": {"type": "null"},
                    },
                },
            ]
        },
    )

    crew: Annotated[str, Field(min_length=1, max_length=100)]
    inputs: dict[str, Any] = Field(default_factory=dict, description="Each job's inputs.")
    metadata: Metadata = Field(
        default_factory=dict,
        description="Kept with each job, with `schedule_id` added (which it overrides).",
    )
    cron: Cron | None = Field(default=None, description="e.g. `0 9 * * 1-5`, or `@hourly`.")
    timezone: TimeZone | None = Field(
        default=None, description="The IANA time zone `cron` is read in; default UTC."
    )
    interval: (
        Annotated[int, Field(strict=True, ge=MIN_INTERVAL_S, le=MAX_INTERVAL_S), WHOLE] | None
    ) = Field(default=None, description="Seconds between runs, the first one interval from now.")
    missed: MissedPolicy = Field(
        default=MissedPolicy.SKIP,
        strict=False,  # JSON gives an enum as its string
        description="Ticks missed during an outage: `skip` them, or `run_once` for all.",
    )
    timeout: Annotated[int, Field(strict=True, ge=1, le=MAX_TIMEOUT_S), WHOLE] | None = Field(
        default=None,
        description="Each job's, in seconds; default: the crew's, then the platform's.",
    )
    max_retries: Annotated[int, Field(strict=True, ge=0, le=MAX_RETRIES), WHOLE] | None = None


class Schedule(BaseModel):
    object: Literal["schedule"] = "schedule"
    id: str
    crew: str
    inputs: dict[str, Any]
    metadata: dict[str, Any]
    cron: str | None
    timezone: str | None
    interval: int | None
    missed: MissedPolicy
    timeout: int
    max_retries: int
    paused: bool
    next_run_at: datetime | None = Field(description="None while paused.")
    next_runs: list[datetime] = Field(
        description=f"The next {NEXT_RUNS} run times (none while paused)."
    )
    last_run_at: datetime | None
    last_job_id: str | None
    livemode: bool
    created_at: datetime


ScheduleList = Page[Schedule]
