"""What the API's handlers share, as typed application keys."""

import asyncpg
from aiohttp import web

from shared import queue
from shared.crews import CrewRegistry
from shared.secret_box import SecretBox
from shared.settings import Settings
from shared.supervisor import Supervisor
from shared.webhook_urls import UrlPolicy

SETTINGS = web.AppKey("settings", Settings)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
DB = web.AppKey("db", asyncpg.Pool)
REDIS = web.AppKey("redis", queue.Redis)
CREWS = web.AppKey("crews", CrewRegistry)
URLS = web.AppKey("url_policy", UrlPolicy)
BOX = web.AppKey("secret_box", SecretBox)
