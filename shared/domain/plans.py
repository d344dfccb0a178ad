"""The plans a tenant may be on, and what each allows. A tenant's own overrides
(`crewq tenants set --monthly-job-limit/--rate-limit`) win over its plan's."""

from dataclasses import dataclass

from schemas.account import Plan


@dataclass(frozen=True)
class Allowance:
    requests_per_second: int | None  # None: not rate-limited
    jobs_per_month: int | None  # None: no quota


ALLOWANCES = {
    Plan.FREE: Allowance(requests_per_second=10, jobs_per_month=100),
    Plan.PRO: Allowance(requests_per_second=100, jobs_per_month=10_000),
    Plan.UNLIMITED: Allowance(requests_per_second=None, jobs_per_month=None),
}


def allowance(plan: Plan, *, rate_limit: int | None, monthly_job_limit: int | None) -> Allowance:
    """The plan's allowance with the tenant's overrides (None: the plan's own) applied."""
    base = ALLOWANCES[plan]
    return Allowance(
        requests_per_second=rate_limit if rate_limit is not None else base.requests_per_second,
        jobs_per_month=(
            monthly_job_limit if monthly_job_limit is not None else base.jobs_per_month
        ),
    )
