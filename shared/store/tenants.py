"""Tenants in Postgres: every statement on `tenants`.

A tenant owns jobs, webhook endpoints and API keys, signs its jobs' own webhooks with its
signing secret (sealed at rest, shared/runtime/secret_box.py), is on a plan
(shared/domain/plans.py) and
may have bounds of its own; a bound left unset (NULL) is the platform's default
(`CREWQ_TENANT_MAX_*`) or its plan's.
"""

import ipaddress
from dataclasses import dataclass
from datetime import datetime

from schemas.account import Plan
from shared.domain.owners import Owner
from shared.domain.plans import Allowance, allowance
from shared.runtime.db import Conn, Executor
from shared.runtime.ids import new_id, new_signing_secret
from shared.runtime.secret_box import SecretBox
from shared.store import signing_secrets
from shared.store.signing_secrets import TENANT_LIVE, TENANT_TEST, Rotated, SealedSecret

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    created_at: datetime
    plan: Plan
    monthly_job_limit: int | None
    rate_limit: int | None
    allowed_ips: tuple[IpNetwork, ...] | None
    max_running_jobs: int | None
    max_pending_jobs: int | None
    max_webhook_endpoints: int | None
    max_event_streams: int | None
    max_tokens_per_month: int | None
    max_cost_usd_per_month: int | None

    @property
    def allowance(self) -> Allowance:
        return allowance(
            self.plan, rate_limit=self.rate_limit, monthly_job_limit=self.monthly_job_limit
        )


# What `crewq tenants set` may change: bounds, by column (None/0: the default).
LIMITS = ("max_running_jobs", "max_pending_jobs", "max_webhook_endpoints", "max_event_streams")
PLAN_OVERRIDES = ("monthly_job_limit", "rate_limit")
# Monthly caps on what live jobs spend on models (whole tokens, whole US dollars).
MODEL_CAPS = ("max_tokens_per_month", "max_cost_usd_per_month")
_COLUMNS = (
    "id",
    "name",
    "created_at",
    "plan",
    *PLAN_OVERRIDES,
    "allowed_ips",
    *LIMITS,
    *MODEL_CAPS,
)


async def ensure(conn: Conn, name: str, plan: Plan, box: SecretBox) -> str:
    """The tenant's id, creating the tenant (on `plan`, with a new signing secret) when it
    is new; an existing tenant keeps its plan."""
    row = await conn.fetchrow(
        "INSERT INTO tenants (id, name, signing_secret, plan) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        new_id("ten"),
        name,
        box.seal(new_signing_secret()),
        plan,
    )
    assert row is not None
    return str(row["id"])


def _tenant(row: object) -> Tenant:
    values = dict(row)  # type: ignore[call-overload]
    values["plan"] = Plan(values["plan"])
    if values["allowed_ips"] is not None:
        values["allowed_ips"] = tuple(values["allowed_ips"])
    return Tenant(**values)


async def get(db: Executor, tenant_id: str) -> Tenant | None:
    row = await db.fetchrow(f"SELECT {', '.join(_COLUMNS)} FROM tenants WHERE id = $1", tenant_id)
    return _tenant(row) if row else None


async def id_of(db: Executor, name: str) -> str | None:
    value = await db.fetchval("SELECT id FROM tenants WHERE name = $1", name)
    return str(value) if value is not None else None


@dataclass(frozen=True)
class Changes:
    """What `crewq tenants set` changes; a field left None is not touched. For bounds and
    plan overrides, 0 puts one back to its default (NULL)."""

    plan: Plan | None = None
    numbers: tuple[tuple[str, int], ...] = ()  # (column in LIMITS or PLAN_OVERRIDES, value)
    allowed_ips: tuple[IpNetwork, ...] | None = None  # () allows every address again


async def update(conn: Conn, name: str, changes: Changes) -> Tenant | None:
    """Apply `changes` to the named tenant; None when no tenant has that name."""
    unknown = {c for c, _ in changes.numbers} - {*LIMITS, *PLAN_OVERRIDES, *MODEL_CAPS}
    if unknown:
        raise ValueError(f"not a tenant setting: {', '.join(sorted(unknown))}")
    values: list[object] = []
    assignments = []
    for column, number in changes.numbers:
        values.append(number or None)
        assignments.append(f"{column} = ${len(values) + 1}")
    if changes.plan is not None:
        values.append(changes.plan.value)
        assignments.append(f"plan = ${len(values) + 1}")
    if changes.allowed_ips is not None:
        values.append(list(changes.allowed_ips) or None)
        assignments.append(f"allowed_ips = ${len(values) + 1}")
    if not assignments:
        raise ValueError("nothing to change")
    row = await conn.fetchrow(
        f"UPDATE tenants SET {', '.join(assignments)} WHERE name = $1"
        f" RETURNING {', '.join(_COLUMNS)}",
        name,
        *values,
    )
    return _tenant(row) if row else None


# The allowlist's version, derived from what it holds (no column to keep in step): equal
# lists have equal versions, so a compare-and-set against a version read earlier fails
# exactly when the list changed since (whoever changed it: the API or `crewq tenants set`).
def _version(table: str) -> str:
    text = f"convert_to(coalesce({table}.allowed_ips::text, ''), 'UTF8')"
    return f"left(encode(sha256({text}), 'hex'), 24)"


@dataclass(frozen=True)
class Allowlist:
    """Where the tenant's keys may be used from (None: anywhere), and its version."""

    networks: tuple[IpNetwork, ...] | None
    version: str


@dataclass(frozen=True)
class AllowlistReplaced:
    before: Allowlist
    after: Allowlist


def _networks(value: list[IpNetwork] | None) -> tuple[IpNetwork, ...] | None:
    return tuple(value) if value is not None else None


async def allowlist(db: Executor, tenant_id: str) -> Allowlist | None:
    """The tenant's IP allowlist; None: no such tenant. Read by every request's
    authentication too (`keys.authenticate`), uncached: a change holds from the next one."""
    row = await db.fetchrow(
        f"SELECT allowed_ips, {_version('t')} AS version FROM tenants t WHERE id = $1",
        tenant_id,
    )
    return Allowlist(_networks(row["allowed_ips"]), row["version"]) if row else None


async def replace_allowlist(
    db: Executor,
    tenant_id: str,
    networks: tuple[IpNetwork, ...],
    expected_version: str | None = None,
) -> AllowlistReplaced | None:
    """Replace the tenant's allowlist (`()`: any address), in one UPDATE that also compares
    the version when given; None when it is no longer `expected_version` (or no such
    tenant). The row is locked for the statement, so the list it answers as before is the
    one it replaced."""
    row = await db.fetchrow(
        f"""
        UPDATE tenants t SET allowed_ips = $2
          FROM (SELECT id, allowed_ips, {_version("b")} AS version
                  FROM tenants b WHERE id = $1 FOR UPDATE) prior
         WHERE t.id = prior.id AND ($3::text IS NULL OR {_version("t")} = $3)
        RETURNING prior.allowed_ips AS before_ips, prior.version AS before_version,
                  t.allowed_ips AS after_ips, {_version("t")} AS version
        """,
        tenant_id,
        list(networks) or None,
        expected_version,
    )
    if row is None:
        return None
    return AllowlistReplaced(
        Allowlist(_networks(row["before_ips"]), row["before_version"]),
        Allowlist(_networks(row["after_ips"]), row["version"]),
    )


# A tenant's two signing secrets: its live and its test jobs' own webhooks.
_MODES = (TENANT_LIVE, TENANT_TEST)


def _secret(owner: Owner) -> SealedSecret:
    """The secret of the owner's mode (shared/store/signing_secrets.py)."""
    return TENANT_LIVE if owner.livemode else TENANT_TEST


async def signing_secret(db: Executor, owner: Owner, box: SecretBox) -> str | None:
    """The secret that signs the owner's jobs' own webhooks; None: no such tenant. A test
    secret is made the first time it is asked for (one statement, so two callers at once
    agree on one)."""
    c = _secret(owner)
    sealed = await db.fetchval(f"SELECT {c.secret} FROM tenants WHERE id = $1", owner.tenant_id)
    if sealed is None and not owner.livemode:
        sealed = await db.fetchval(
            f"UPDATE tenants SET {c.secret} = coalesce({c.secret}, $2) WHERE id = $1"
            f" RETURNING {c.secret}",
            owner.tenant_id,
            box.seal(new_signing_secret()),
        )
    return box.open(sealed) if sealed is not None else None


async def rotate_signing_secret(
    db: Executor, owner: Owner, grace_s: int, box: SecretBox
) -> Rotated:
    """A new signing secret for the owner's jobs' own webhooks; the old one keeps signing
    alongside it for `grace_s` (none: forgotten at once), as an endpoint's does."""
    rotated = await signing_secrets.rotate(db, _secret(owner), owner.tenant_id, grace_s, box)
    if rotated is None:  # a key's tenant is never deleted
        raise LookupError(f"no tenant {owner.tenant_id}")
    return rotated


async def forget_expired_secrets(db: Executor) -> int:
    """Clear rotated-out signing secrets whose grace has passed; how many were cleared."""
    return sum([await signing_secrets.forget_expired(db, c) for c in _MODES])


async def reseal(conn: Conn, box: SecretBox) -> int:
    """Seal every tenant's signing secrets with the newest key (`crewq secrets reseal`)."""
    return await signing_secrets.reseal(conn, box, *_MODES)
