"""Reading the Notification service's command stream with XREAD."""

from __future__ import annotations

import contextlib
from typing import Any

import redis

from mailcore.ports import StreamEntry
from mailcore.store.client import is_cluster
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
        self._cluster = is_cluster(client)
        if not self._cluster:
            # redis-py turns XREAD replies into dicts, which would hide repeated
            # field names; this client is ours alone, so take the reply as sent.
            client.set_response_callback("XREAD", _raw_reply)
        self._client = client
        self._stream = stream

    def read_after(self, offset: str, count: int, block_ms: int) -> list[StreamEntry]:
        with translate_errors():
            if self._cluster:
                reply = self._read_from_cluster(offset, count, max(block_ms, 1))
            else:
                reply = self._client.xread(
                    {self._stream: offset}, count=count, block=max(block_ms, 1)
                )
        entries: list[StreamEntry] = []
        for _stream, items in _streams(reply):
            for entry_id, flat in items:
                pairs = tuple(zip(flat[0::2], flat[1::2], strict=True)) if flat else ()
                entries.append(StreamEntry(_text(entry_id), pairs))
        return entries

    def trim_through(self, entry_id: str, limit: int) -> int:
        """``XTRIM MINID ~``: every storage node whose entries all come at or before ``entry_id``.

        ``~`` removes whole nodes only, so it never touches an entry after
        ``entry_id`` (``MAXLEN`` could, as the producer adds), and ``LIMIT``
        bounds the work of one call. On a cluster the stream is on its own
        node; the cluster client routes the command by the key.
        """
        with translate_errors():
            deleted = self._client.xtrim(
                self._stream, minid=_successor(entry_id), approximate=True, limit=limit
            )
        return int(deleted)

    def _read_from_cluster(self, offset: str, count: int, block_ms: int) -> Any:
        """XREAD on the node that owns the stream, the reply taken as sent.

        A cluster client parses replies with its nodes' callbacks, which
        cannot be changed for nodes it has yet to meet, so the command goes
        on a connection of the owning node's pool. A node that moved the
        slot (``MOVED``) or went away makes the client re-read the slot map;
        the poller backs off and reads again.
        """
        cluster: Any = self._client
        node = cluster.get_node_from_key(self._stream)
        pool = node.redis_connection.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_command(
                "XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", self._stream, offset
            )
            reply = connection.read_response()
        except _SLOT_ELSEWHERE as error:
            pool.release(connection)
            _refresh_slots(cluster)
            raise redis.ConnectionError(f"stream slot moved ({type(error).__name__})") from None
        except BaseException:
            connection.disconnect()
            pool.release(connection)
            _refresh_slots(cluster)
            raise
        pool.release(connection)
        return reply


_SLOT_ELSEWHERE = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)


def _refresh_slots(cluster: Any) -> None:
    # Best effort: if the cluster cannot answer now, the next read tries again.
    with contextlib.suppress(Exception):
        cluster.nodes_manager.initialize()


def _streams(reply: Any) -> list[tuple[Any, Any]]:
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3 answers a map of stream -> entries
        return list(reply.items())
    return [(item[0], item[1]) for item in reply]


def _text(value: bytes | str) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value


def _successor(entry_id: str) -> str:
    """The smallest stream id after ``entry_id``: MINID keeps what is not below it."""
    milliseconds, _, sequence = entry_id.partition("-")
    if int(sequence) == MAX_SEQUENCE:
        return f"{int(milliseconds) + 1}-0"
    return f"{milliseconds}-{int(sequence) + 1}"


MAX_SEQUENCE = 2**64 - 1
