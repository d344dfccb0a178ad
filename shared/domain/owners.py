"""Whose data a request reads and writes: a tenant's, in one mode.

A tenant's data lives in two modes. Live keys (`crq_live_…`) see and change live jobs,
endpoints, keys and the live signing secret; test keys (`crq_test_…`) the tenant's sandbox
of the same, and nothing live. Every store function that reads or changes rows of a mode
(jobs, their deliveries, endpoints, keys, signing secrets, the tenant's event tail and
failure log) takes an `Owner` rather than a bare tenant id, so that no query can leave the
mode out. What is the tenant's whatever the mode (its plan, bounds, monthly usage) is still
read by tenant id; a job's events are read by job id once `jobs.exists(owner, …)` held.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Owner:
    tenant_id: str
    livemode: bool = True

    def __str__(self) -> str:
        return f"{self.tenant_id} ({'live' if self.livemode else 'test'})"
