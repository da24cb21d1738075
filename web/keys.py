"""Typed application keys, in one place."""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis

from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database
from web.metrics import Metrics

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Database)
RING = web.AppKey("ring", KeyRing)
REDIS = web.AppKey("redis", Redis)
METRICS = web.AppKey("metrics", Metrics)
