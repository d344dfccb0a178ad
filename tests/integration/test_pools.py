"""A role's Postgres pool as the settings size it, including the way through a pooler in
transaction mode (no named prepared statements)."""

from shared.runtime.db import pool_for
from shared.runtime.settings import Settings


async def test_pool_size_and_statement_cache_follow_the_settings(db_url: str) -> None:
    settings = Settings(database_url=db_url, database_pool_size=3, database_statement_cache=0)
    pool = await pool_for(settings, "test", default_size=10)
    try:
        assert pool.get_max_size() == 3
        async with pool.acquire() as conn:
            for _ in range(3):  # the same query again: cached nowhere, prepared unnamed
                assert (
                    await conn.fetchval("SELECT count(*) FROM jobs WHERE tenant_id = $1", "t") == 0
                )
            named = await conn.fetchval("SELECT count(*) FROM pg_prepared_statements")
            assert named == 0
    finally:
        await pool.close()
    default = await pool_for(Settings(database_url=db_url), "test", default_size=5)
    try:
        assert default.get_max_size() == 5
        async with default.acquire() as conn:
            await conn.fetchval("SELECT count(*) FROM jobs WHERE tenant_id = $1", "t")
            assert await conn.fetchval("SELECT count(*) FROM pg_prepared_statements") >= 1
    finally:
        await default.close()


def test_listen_and_migrations_use_the_direct_url() -> None:
    pooled = "postgresql://crewq@pgbouncer:6432/crewq"
    assert Settings(database_url=pooled).direct_database_url == pooled
    direct = "postgresql://crewq@postgres:5432/crewq"
    both = Settings(database_url=pooled, database_direct_url=direct)
    assert both.direct_database_url == direct and both.require_database_url == pooled


async def test_a_released_connection_is_not_reset_but_its_transaction_is_ended(
    db_url: str,
) -> None:
    # crewq keeps no session state on pooled connections, so releasing one costs no reset
    # round trip: a session setting would survive (none is ever made outside this test) ...
    pool = await pool_for(Settings(database_url=db_url, database_pool_size=1), "test", 1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET statement_timeout = '1234ms'")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW statement_timeout") == "1234ms"
            # ... while a transaction left open is still rolled back by asyncpg.
            await conn.execute("BEGIN")
            await conn.execute("CREATE TABLE left_open (id int)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT to_regclass('left_open')") is None
    finally:
        await pool.close()
