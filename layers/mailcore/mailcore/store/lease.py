"""A Redis lease: at most one holder of a singleton job at a time."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import redis

from mailcore.store.redis_store import translate_errors
from mailcore.store.scripts import load_lua


class RedisLease:
    """``SET NX PX`` to take it; token-checked scripts to renew and release it.

    The lease is short and renewed on every loop, so a holder that dies
    (Lambda timeout, crash) blocks the next one for one lease length at most.
    """

    def __init__(self, client: redis.Redis, key: str, length: timedelta) -> None:
        self._client = client
        self._key = key
        self._length_ms = int(length.total_seconds() * 1000)
        self._token = secrets.token_hex(16)
        self._renew: Callable[..., Any] = client.register_script(load_lua("lease_renew.lua"))
        self._release: Callable[..., Any] = client.register_script(load_lua("lease_release.lua"))

    def acquire(self) -> bool:
        with translate_errors():
            return bool(self._client.set(self._key, self._token, nx=True, px=self._length_ms))

    def renew(self) -> bool:
        with translate_errors():
            return bool(self._renew(keys=[self._key], args=[self._token, self._length_ms]))

    def release(self) -> None:
        with translate_errors():
            self._release(keys=[self._key], args=[self._token])
