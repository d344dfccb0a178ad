"""API keys. Keys are stored as sha256 hashes and shown once."""

import hashlib
from dataclasses import dataclass

from shared import tenants
from shared.db import Conn, Executor
from shared.ids import new_api_key, new_id

SCOPES = frozenset({"jobs:read", "jobs:write", "webhooks:manage"})


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the key, its tenant and what it may do."""

    key_id: str
    tenant_id: str
    tenant_name: str
    scopes: frozenset[str]


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def create_key(conn: Conn, tenant_name: str, scopes: list[str]) -> str:
    """A new key for the tenant (created when new); the key itself is returned once."""
    unknown = set(scopes) - SCOPES
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")
    async with conn.transaction():
        tenant_id = await tenants.ensure(conn, tenant_name)
        key = new_api_key()
        await conn.execute(
            "INSERT INTO api_keys (id, tenant_id, key_hash, scopes) VALUES ($1, $2, $3, $4)",
            new_id("key"),
            tenant_id,
            hash_key(key),
            sorted(set(scopes)),
        )
    return key


async def authenticate(conn: Executor, key: str) -> Principal | None:
    row = await conn.fetchrow(
        "SELECT k.id, k.tenant_id, k.scopes, t.name FROM api_keys k"
        " JOIN tenants t ON t.id = k.tenant_id"
        " WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        hash_key(key),
    )
    if row is None:
        return None
    return Principal(row["id"], row["tenant_id"], row["name"], frozenset(row["scopes"]))
