"""When a schedule's ticks fall (shared/store/schedules.py `Timing`), and which cron
expressions and time zones a schedule takes (schemas/schedules.py)."""

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from schemas.schedules import ScheduleCreate
from shared.store.schedules import Timing, cron_refusal


def test_a_cron_expression_is_read_in_its_time_zone_across_a_dst_change() -> None:
    nine_in_paris = Timing(cron="0 9 * * *", timezone="Europe/Paris")
    # Paris is UTC+1 in winter and UTC+2 from the last Sunday of March (29 March 2026).
    ticks = list(nine_in_paris.upcoming(nine_in_paris.after(datetime(2026, 3, 28, tzinfo=UTC)), 2))
    assert ticks == [datetime(2026, 3, 28, 8, tzinfo=UTC), datetime(2026, 3, 29, 7, tzinfo=UTC)]


def test_an_interval_keeps_its_phase_past_missed_ticks() -> None:
    every_ten = Timing(interval_s=10)
    due = datetime(2026, 1, 1, tzinfo=UTC)
    now = due + timedelta(seconds=35)
    assert every_ten.first_after(due, now) == due + timedelta(seconds=40)
    assert every_ten.first_after(due, due - timedelta(seconds=1)) == due


def test_a_cron_schedule_catches_up_to_the_first_tick_after_now() -> None:
    hourly = Timing(cron="@hourly", timezone="UTC")
    due = datetime(2026, 1, 1, tzinfo=UTC)
    assert hourly.first_after(due, due + timedelta(hours=5, minutes=1)) == due + timedelta(hours=6)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron": "* * * * * *"}, "cron"),  # a seconds field
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"interval": 0}, "interval"),
        ({"interval": 5, "missed": "sometimes"}, "missed"),
    ],
)
def test_a_schedule_refuses_what_it_cannot_keep_naming_the_field(
    body: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        ScheduleCreate.model_validate({"crew": "echo", **body})
    assert [e["loc"][0] for e in refused.value.errors()] == [field]


def test_a_schedule_takes_a_cron_in_a_zone_or_an_interval() -> None:
    made = ScheduleCreate.model_validate(
        {"crew": "echo", "cron": "0 9 * * 1-5", "timezone": "America/New_York"}
    )
    assert made.cron == "0 9 * * 1-5" and made.timezone == "America/New_York"
    assert ScheduleCreate.model_validate({"crew": "echo", "interval": 5}).interval == 5


def test_the_server_refuses_a_cron_expression_croniter_cannot_follow() -> None:
    # The wire model checks the shape only (it needs pydantic alone, for the client); the
    # route asks the store, which the acceptance test sees as the same 400 naming `cron`.
    assert ScheduleCreate.model_validate({"crew": "echo", "cron": "61 * * * *"})
    assert cron_refusal("61 * * * *") == "'61 * * * *' is not a cron expression"
    assert cron_refusal("0 9 * * 1-5") is None and cron_refusal("@hourly") is None
