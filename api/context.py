"""What the API's handlers share, as typed application keys."""

import asyncpg
from aiohttp import web

from shared.domain.crews import CrewRegistry
from shared.runtime import queue
from shared.runtime.secret_box import SecretBox
from shared.runtime.settings import Settings
from shared.runtime.supervisor import Supervisor
from shared.webhooks.urls import UrlPolicy

SETTINGS = web.AppKey("settings", Settings)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
DB = web.AppKey("db", asyncpg.Pool)
REDIS = web.AppKey("redis", queue.Redis)
CREWS = web.AppKey("crews", CrewRegistry)
URLS = web.AppKey("url_policy", UrlPolicy)
BOX = web.AppKey("secret_box", SecretBox)
