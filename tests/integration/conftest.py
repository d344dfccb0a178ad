"""The integration tier: each query and state transition against real Postgres (and Redis
where it takes part), with no crewq process started. Every test gets a database of its
own, cloned from a template migrated once per session, so a one-line SQL change is
checked in seconds."""

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio
import redis.asyncio as aioredis

from shared.runtime.db import create_pool, migrate
from tests.harness import Services


@pytest_asyncio.fixture(scope="session")
async def template(services: Services) -> str:
    name = f"crewq_template_{uuid.uuid4().hex[:8]}"
    await migrate(await services.create_database(name))
    return name


@pytest_asyncio.fixture
async def db_url(services: Services, template: str) -> AsyncIterator[str]:
    name = f"crewq_i_{uuid.uuid4().hex[:10]}"
    yield await services.create_database(name, template=template)
    admin = await asyncpg.connect(services.database_url)
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest_asyncio.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(db_url, role="test", max_size=20)
    yield pool
    await pool.close()


@pytest_asyncio.fixture
async def redis_url(services: Services) -> AsyncIterator[str]:
    """Redis db 15, emptied for each test (the acceptance platforms use 1 to 14)."""
    url = services.redis_db(15)
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    yield url
