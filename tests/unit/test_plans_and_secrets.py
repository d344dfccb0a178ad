"""Plans and their overrides, quota months, and sealing secrets with rotating keys."""

from datetime import UTC, datetime

import pytest

from schemas.account import Plan
from shared.domain.plans import allowance
from shared.runtime.secret_box import SecretBox, SecretKeyMissing, generate_key
from shared.store.usage import month_ends, month_starts


def test_plans_and_overrides() -> None:
    free = allowance(Plan.FREE, rate_limit=None, monthly_job_limit=None)
    assert (free.requests_per_second, free.jobs_per_month) == (10, 100)
    pro = allowance(Plan.PRO, rate_limit=None, monthly_job_limit=None)
    assert (pro.requests_per_second, pro.jobs_per_month) == (100, 10_000)
    unlimited = allowance(Plan.UNLIMITED, rate_limit=None, monthly_job_limit=None)
    assert (unlimited.requests_per_second, unlimited.jobs_per_month) == (None, None)
    custom = allowance(Plan.FREE, rate_limit=3, monthly_job_limit=0)
    assert (custom.requests_per_second, custom.jobs_per_month) == (3, 0)


def test_quota_months_are_utc_calendar_months() -> None:
    assert month_ends(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    assert month_ends(datetime(2026, 2, 1, tzinfo=UTC)) == datetime(2026, 3, 1, tzinfo=UTC)
    assert month_starts(datetime(2026, 3, 1, 0, 30, tzinfo=UTC)).isoformat() == "2026-03-01"


def test_secrets_are_sealed_and_keys_rotate() -> None:
    old, new = generate_key(), generate_key()
    before = SecretBox([old])
    sealed = before.seal("whsec_abc")
    assert "whsec_abc" not in sealed and before.open(sealed) == "whsec_abc"
    # A new key first: old ciphertexts still open; reseal moves them to the new key.
    during = SecretBox([new, old])
    assert during.open(sealed) == "whsec_abc"
    resealed = during.reseal(sealed)
    assert SecretBox([new]).open(resealed) == "whsec_abc"
    # Secrets stored before sealing existed are read as they are, and sealed by reseal.
    assert during.open("whsec_plain") == "whsec_plain"
    assert SecretBox([new]).open(during.reseal("whsec_plain")) == "whsec_plain"
    # Dropping a key too early is a loud configuration error, not a wrong signature.
    with pytest.raises(SecretKeyMissing):
        SecretBox([new]).open(sealed)
    with pytest.raises(SecretKeyMissing):
        SecretBox.from_setting("")
    with pytest.raises(SecretKeyMissing):
        SecretBox.from_setting("not-a-fernet-key")
