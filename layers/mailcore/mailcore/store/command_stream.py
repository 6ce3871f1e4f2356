"""Reading the Notification service's command stream with XREAD."""

from __future__ import annotations

from typing import Any

import redis

from mailcore.ports import StreamEntry
from mailcore.store.redis_store import translate_errors


def _raw_reply(response: Any, **_options: Any) -> Any:
    return response


class RedisCommandStream:
    """Reads entries after an offset; the client must not decode responses.

    Field names and values stay bytes, and repeated names stay visible: the
    decoder, not the Redis client, decides what is malformed (invalid UTF-8
    would otherwise make the client raise for the whole batch).
    """

    def __init__(self, client: redis.Redis, stream: str) -> None:
        # redis-py turns XREAD replies into dicts, which would hide repeated
        # field names; this client is ours alone, so take the reply as sent.
        client.set_response_callback("XREAD", _raw_reply)
        self._client = client
        self._stream = stream

    def read_after(self, offset: str, count: int, block_ms: int) -> list[StreamEntry]:
        with translate_errors():
            reply = self._client.xread({self._stream: offset}, count=count, block=max(block_ms, 1))
        entries: list[StreamEntry] = []
        for _stream, items in _streams(reply):
            for entry_id, flat in items:
                pairs = tuple(zip(flat[0::2], flat[1::2], strict=True)) if flat else ()
                entries.append(StreamEntry(_text(entry_id), pairs))
        return entries


def _streams(reply: Any) -> list[tuple[Any, Any]]:
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3 answers a map of stream -> entries
        return list(reply.items())
    return [(item[0], item[1]) for item in reply]


def _text(value: bytes | str) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value
