"""What the API's handlers share, as typed application keys."""

import asyncpg
from aiohttp import web
from arq.connections import ArqRedis

from shared.crews import CrewRegistry
from shared.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", asyncpg.Pool)
REDIS = web.AppKey("redis", ArqRedis)
CREWS = web.AppKey("crews", CrewRegistry)
