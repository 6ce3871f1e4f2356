"""Redis side of index cleanup: which record each index points at, and the removal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import redis

from mailcore.store.keys import RedisKeys
from mailcore.store.redis_store import translate_errors
from mailcore.store.scripts import load_lua


class RedisIndexMaintenance:
    """Implements ``IndexMaintenance``."""

    def __init__(self, client: redis.Redis, keys: RedisKeys | None = None) -> None:
        self._client = client
        self._keys = keys or RedisKeys()
        self._remove: Callable[..., Any] = client.register_script(
            load_lua("remove_stale_members.lua")
        )

    def index_keys(self) -> list[str]:
        with translate_errors():
            found = cast(list[str], list(self._client.scan_iter(match=f"{self._keys.prefix}idx:*")))
        return sorted(set(found))

    def owns(self, index: str) -> bool:
        return index.startswith(self._keys.prefix)

    def _record_key(self, index: str) -> Callable[[str], str]:
        k = self._keys
        if index == k.index_malformed():
            return k.malformed_command
        if index == k.index_dead_letters():
            return k.dead_letter
        return k.delivery

    def remove_expired(self, index: str, start: int, count: int) -> tuple[int, int]:
        record_key = self._record_key(index)
        with translate_errors():
            members = cast(list[str], self._client.zrange(index, start, start + count - 1))
            if not members:
                return 0, 0
            removed = self._remove(
                keys=[index, *(record_key(member) for member in members)], args=members
            )
        return len(members), int(removed)
