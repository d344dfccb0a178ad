"""How the dispatcher reads a receiver's `Retry-After`: whatever arrives, a number of seconds
within bounds, or None; never an exception that would lose the attempt."""

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from worker.dispatcher.delivery import parse_retry_after


def test_seconds_and_dates() -> None:
    assert parse_retry_after("120") == 120.0
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    assert 85 <= (parse_retry_after(soon) or 0) <= 91


@pytest.mark.parametrize(
    "value",
    ["Wed, 21 Oct 2015 07:28:00 -0000", "Wed, 21 Oct 2015 07:28:00", "-5"],
)
def test_past_or_zoneless_dates_mean_now(value: str) -> None:
    assert parse_retry_after(value) == 0.0


@pytest.mark.parametrize("value", ["1e20", "inf", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_huge_values_are_capped_at_a_day(value: str) -> None:
    assert parse_retry_after(value) == 86400.0


@pytest.mark.parametrize("value", [None, "", "soon", "nan", "Mon, 99 Foo 2020"])
def test_unreadable_values_are_ignored(value: str | None) -> None:
    assert parse_retry_after(value) is None
