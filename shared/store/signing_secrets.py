"""Rotatable signing secrets, one mechanism whoever owns them.

A webhook signing secret lives in four columns of its owner's row: the secret, the one it
replaced, and when that one stops signing; all sealed at rest (shared/runtime/secret_box.py). A
tenant has two (its live and its test jobs' own webhooks), an endpoint one. Each is
described once by a `SealedSecret`, and every statement on such columns is generated from
that description here:

- `rotate`: a new secret; the old one keeps signing alongside it for a grace period, or is
  forgotten at once when the grace is 0;
- `forget_expired`: a rotated-out secret past its grace is cleared (it signs nothing any
  more, and a secret not kept cannot leak);
- `reseal`: every secret sealed again with the newest key (`crewq secrets reseal`);
- `SealedSecret.signing`: the SQL expression for the secrets that sign now, newest first
  (two while a rotated secret is in its grace), as a delivery claim reads them.

The owners' modules (`tenants`, `endpoints`) call these with their descriptions. The
descriptions are declared here rather than in those modules because the delivery claim
(`deliveries`) reads all of them, and `endpoints` imports `deliveries`.
"""

from dataclasses import dataclass
from datetime import datetime

from shared.domain.owners import Owner
from shared.runtime.db import Conn, Executor
from shared.runtime.ids import new_signing_secret
from shared.runtime.secret_box import SecretBox


@dataclass(frozen=True)
class SealedSecret:
    """Where one rotatable secret lives: its table, the column naming a row, and its three
    columns. `owned`: rows belong to an `Owner` (columns `tenant_id`, `livemode`), and a
    rotation must name it; otherwise the key alone picks the row. `stamp`: a column set to
    `now()` when the secret rotates."""

    table: str
    key: str
    secret: str
    previous: str
    expires: str
    owned: bool = False
    stamp: str | None = None

    def signing(self, row: str) -> str:
        """The secrets of the row aliased `row` that sign now, newest first: an array of
        the sealed secret, and the previous one while its grace runs (a secret never made,
        NULL, is left out)."""
        return (
            f"array_remove(ARRAY[{row}.{self.secret}]"
            f" || CASE WHEN {row}.{self.expires} > now() THEN ARRAY[{row}.{self.previous}]"
            " ELSE ARRAY[]::text[] END, NULL)"
        )

    def signing_of(self, key: str) -> str:
        """`signing` of the row whose key is the SQL expression `key`, as a subquery."""
        return f"(SELECT {self.signing('s')} FROM {self.table} s WHERE s.{self.key} = {key})"


# A tenant's jobs' own webhooks: live and test jobs are signed with secrets of their own,
# so a test key never sees the live one.
TENANT_LIVE = SealedSecret(
    "tenants",
    "id",
    "signing_secret",
    "previous_signing_secret",
    "previous_signing_secret_expires_at",
)
TENANT_TEST = SealedSecret(
    "tenants",
    "id",
    "test_signing_secret",
    "previous_test_signing_secret",
    "previous_test_signing_secret_expires_at",
)
ENDPOINT = SealedSecret(
    "webhook_endpoints",
    "id",
    "secret",
    "previous_secret",
    "previous_secret_expires_at",
    owned=True,
    stamp="updated_at",
)


@dataclass(frozen=True)
class Rotated:
    secret: str  # shown in this answer only
    previous_secret_expires_at: datetime | None  # None: the old secret was forgotten at once


async def rotate(
    db: Executor,
    where: SealedSecret,
    key: str,
    grace_s: int,
    box: SecretBox,
    *,
    owner: Owner | None = None,
) -> Rotated | None:
    """A new secret for the row `key` (and `owner`'s, when the rows are owned); the one it
    replaces keeps signing alongside it for `grace_s`, or is forgotten at once when
    `grace_s` is 0. None: no such row."""
    if where.owned != (owner is not None):
        raise ValueError(f"{where.table}: a rotation names an owner exactly when rows have one")
    secret = new_signing_secret()
    stamp = f", {where.stamp} = now()" if where.stamp else ""
    owned = " AND tenant_id = $4 AND livemode = $5" if owner is not None else ""
    row = await db.fetchrow(
        f"""
        UPDATE {where.table}
           SET {where.previous} = CASE WHEN $3 > 0 THEN {where.secret} END,
               {where.secret} = $2,
               {where.expires} = CASE WHEN $3 > 0 THEN now() + make_interval(secs => $3) END
               {stamp}
         WHERE {where.key} = $1{owned}
        RETURNING {where.expires}
        """,
        key,
        box.seal(secret),
        float(grace_s),
        *((owner.tenant_id, owner.livemode) if owner is not None else ()),
    )
    return Rotated(secret, row[where.expires]) if row is not None else None


async def forget_expired(db: Executor, where: SealedSecret) -> int:
    """Clear rotated-out secrets whose grace has passed; how many were cleared."""
    cleared = await db.fetchval(
        f"""
        WITH cleared AS (
            UPDATE {where.table} SET {where.previous} = NULL, {where.expires} = NULL
             WHERE {where.expires} <= now()
            RETURNING 1)
        SELECT count(*) FROM cleared
        """
    )
    return int(cleared)


async def reseal(conn: Conn, box: SecretBox, *secrets: SealedSecret) -> int:
    """Seal every row's `secrets` (all of one table) with the newest key, in one pass over
    the table; how many rows. A secret not set (NULL) stays so."""
    [table] = {s.table for s in secrets}
    [key] = {s.key for s in secrets}
    columns = [column for s in secrets for column in (s.secret, s.previous)]
    rows = await conn.fetch(f"SELECT {key}, {', '.join(columns)} FROM {table} FOR UPDATE")
    assignments = ", ".join(f"{c} = ${n}" for n, c in enumerate(columns, start=2))
    await conn.executemany(
        f"UPDATE {table} SET {assignments} WHERE {key} = $1",
        [(r[key], *(r[c] and box.reseal(r[c]) for c in columns)) for r in rows],
    )
    return len(rows)
