"""API keys: every statement on `api_keys`. A key is shown once, when made; only its
sha256 is stored, with the first characters (`prefix`) that `keys list` shows.

Keys look like `crq_live_…` or `crq_test_…`; a test key is a sandbox (its jobs run on the
offline model and count against no quota). Keys made before modes existed (`crq_…`) are
live keys and keep working.
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from schemas.account import KeyMode, Plan, Scope
from shared.domain.owners import Owner
from shared.domain.plans import Allowance, allowance
from shared.runtime.db import Conn, Executor
from shared.runtime.ids import new_api_key, new_id
from shared.runtime.secret_box import SecretBox
from shared.store import tenants
from shared.store.paging import cut, one_more
from shared.store.tenants import IpNetwork

SCOPES = frozenset(Scope)
# A key made without naming scopes (`crewq keys create`) runs and reads jobs and its
# account: it cannot see the signing secret or manage webhooks (`webhooks:manage`: whoever
# holds it can forge webhooks), nor the tenant's keys (`admin`). Those are asked for by name.
DEFAULT_SCOPES = tuple(s for s in Scope if s not in (Scope.ADMIN, Scope.WEBHOOKS_MANAGE))

_PREFIX_LENGTH = 16  # `crq_live_` and 7 characters of the secret part


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the key, its tenant, what it may do and from where."""

    key_id: str
    tenant_id: str
    tenant_name: str
    scopes: frozenset[Scope]
    mode: KeyMode
    plan: Plan
    allowance: Allowance
    allowed_ips: tuple[IpNetwork, ...] | None
    expires_at: datetime | None

    @property
    def livemode(self) -> bool:
        return self.mode is KeyMode.LIVE

    @property
    def owner(self) -> Owner:
        """Whose data this key reads and writes: its tenant's, in its own mode only."""
        return Owner(self.tenant_id, self.livemode)

    def may(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes


@dataclass(frozen=True)
class ApiKey:
    """A key as `keys list` shows it: never the key itself."""

    id: str
    tenant_id: str
    name: str
    mode: KeyMode
    prefix: str
    scopes: list[Scope]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class CreatedKey:
    key: str  # shown this once
    info: ApiKey


class Refusal(StrEnum):
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_scopes(names: list[str]) -> list[Scope]:
    unknown = sorted(set(names) - set(SCOPES))
    if unknown:
        raise ValueError(
            f"unknown scopes: {', '.join(unknown)} (known: {', '.join(s.value for s in Scope)})"
        )
    return sorted({Scope(n) for n in names})


_KEY_COLUMNS = (
    "id, tenant_id, name, mode, prefix, scopes, created_at, expires_at, last_used_at, revoked_at"
)


def _key(row: object) -> ApiKey:
    values = dict(row)  # type: ignore[call-overload]
    values["mode"] = KeyMode(values["mode"])
    values["scopes"] = [Scope(s) for s in values["scopes"]]
    return ApiKey(**values)


async def create_key(
    conn: Conn,
    tenant_id: str,
    scopes: list[Scope],
    *,
    mode: KeyMode = KeyMode.LIVE,
    name: str = "",
    expires_in: timedelta | None = None,
) -> CreatedKey:
    key = new_api_key(mode.value)
    row = await conn.fetchrow(
        f"""
        INSERT INTO api_keys (id, tenant_id, key_hash, scopes, name, mode, prefix, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, now() + $8::interval)
        RETURNING {_KEY_COLUMNS}
        """,
        new_id("key"),
        tenant_id,
        hash_key(key),
        sorted(set(scopes)),
        name,
        mode,
        key[:_PREFIX_LENGTH],
        expires_in,
    )
    return CreatedKey(key, _key(row))


async def create_for_tenant(
    conn: Conn,
    tenant_name: str,
    scopes: list[Scope],
    *,
    plan: Plan,
    box: SecretBox,
    mode: KeyMode = KeyMode.LIVE,
    name: str = "",
    expires_in: timedelta | None = None,
) -> CreatedKey:
    """A new key for the named tenant, creating the tenant (on `plan`) when it is new."""
    async with conn.transaction():
        tenant_id = await tenants.ensure(conn, tenant_name, plan, box)
        return await create_key(
            conn, tenant_id, scopes, mode=mode, name=name, expires_in=expires_in
        )


async def authenticate(conn: Executor, key: str) -> Principal | Refusal:
    """The principal a key acts as, or why it is refused. Also notes when the key was last
    used, at most once a minute per key (one statement: no extra round trip)."""
    row = await conn.fetchrow(
        """
        WITH k AS (
            SELECT k.id, k.tenant_id, k.scopes, k.mode, k.expires_at, k.revoked_at,
                   k.expires_at <= now() AS expired,
                   t.name, t.plan, t.rate_limit, t.monthly_job_limit, t.allowed_ips
              FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
             WHERE k.key_hash = $1),
        touched AS (
            UPDATE api_keys SET last_used_at = now()
             WHERE id = (SELECT id FROM k WHERE revoked_at IS NULL AND expired IS NOT TRUE)
               AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute'))
        SELECT * FROM k
        """,
        hash_key(key),
    )
    if row is None:
        return Refusal.UNKNOWN
    if row["revoked_at"] is not None:
        return Refusal.REVOKED
    if row["expired"]:
        return Refusal.EXPIRED
    plan = Plan(row["plan"])
    return Principal(
        key_id=row["id"],
        tenant_id=row["tenant_id"],
        tenant_name=row["name"],
        scopes=frozenset(Scope(s) for s in row["scopes"] if s in SCOPES),
        mode=KeyMode(row["mode"]),
        plan=plan,
        allowance=allowance(
            plan, rate_limit=row["rate_limit"], monthly_job_limit=row["monthly_job_limit"]
        ),
        allowed_ips=tuple(row["allowed_ips"]) if row["allowed_ips"] is not None else None,
        expires_at=row["expires_at"],
    )


def _mode(livemode: bool) -> KeyMode:
    return KeyMode.LIVE if livemode else KeyMode.TEST


async def get(db: Executor, owner: Owner, key_id: str) -> ApiKey | None:
    row = await db.fetchrow(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1 AND tenant_id = $2 AND mode = $3",
        key_id,
        owner.tenant_id,
        _mode(owner.livemode),
    )
    return _key(row) if row else None


async def page(
    db: Executor, owner: Owner | str, *, before: str | None, limit: int
) -> tuple[list[ApiKey], bool]:
    """The owner's keys of its mode (a tenant's of both, given its id: the CLI), newest
    first, revoked ones too: they say when."""
    tenant_id, mode = (
        (owner.tenant_id, _mode(owner.livemode)) if isinstance(owner, Owner) else (owner, None)
    )
    rows = await db.fetch(
        f"""
        SELECT {_KEY_COLUMNS} FROM api_keys
         WHERE tenant_id = $1 AND ($2::text IS NULL OR id < $2)
           AND ($4::text IS NULL OR mode = $4)
         ORDER BY id DESC LIMIT $3
        """,
        tenant_id,
        before,
        one_more(limit),
        mode,
    )
    shown, has_more = cut(rows, limit)
    return [_key(r) for r in shown], has_more


async def revoke(db: Executor, owner: Owner | None, key_id: str) -> ApiKey | None:
    """Revoke a key (the owner's, of its mode, when given; any, from the CLI). Revoking a
    revoked key changes nothing and answers it as it is. None: no such key."""
    row = await db.fetchrow(
        f"""
        UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
         WHERE id = $1 AND ($2::text IS NULL OR (tenant_id = $2 AND mode = $3))
        RETURNING {_KEY_COLUMNS}
        """,
        key_id,
        owner.tenant_id if owner else None,
        _mode(owner.livemode) if owner else None,
    )
    return _key(row) if row else None
