"""Typed application keys, in one place."""

from __future__ import annotations

import asyncio

import jinja2
import socketio
from aiohttp import web
from redis.asyncio import Redis

from hub.channels.base import ChannelAdapter
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database
from hub.outbox import EffectSink
from hub.presence import Presence
from web.metrics import Metrics
from web.sessions import LoginGuard, SessionStore

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Database)
RING = web.AppKey("ring", KeyRing)
REDIS = web.AppKey("redis", Redis)
METRICS = web.AppKey("metrics", Metrics)
ADAPTERS = web.AppKey("adapters", dict[str, ChannelAdapter])
SINK = web.AppKey("sink", EffectSink)
SIO = web.AppKey("sio", socketio.AsyncServer)
BACKGROUND = web.AppKey("background", set[asyncio.Task[None]])
SESSIONS = web.AppKey("sessions", SessionStore)
LOGIN_GUARD = web.AppKey("login_guard", LoginGuard)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
PRESENCE = web.AppKey("presence", Presence)
