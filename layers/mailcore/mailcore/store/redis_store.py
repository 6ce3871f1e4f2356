"""The delivery store on Redis: atomic acceptance (REST and stream) and record reads."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from itertools import chain
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import hiredis
import redis
from redis.commands.core import Script

from mailcore.contracts.malformed import MalformedCommand
from mailcore.domain.clock import Clock
from mailcore.domain.model import Attempt, Delivery
from mailcore.domain.states import TERMINAL_DELIVERY_STATUSES
from mailcore.errors import StoreInvariantBroken, StoreUnavailable
from mailcore.ports import (
    AcceptanceResult,
    EntryVerdict,
    PendingDelivery,
    StreamBatchResult,
    StreamEntryResult,
    stream_id,
)
from mailcore.store.client import is_cluster
from mailcore.store.codec import (
    attempt_to_fields,
    delivery_to_fields,
)
from mailcore.store.keys import RedisKeys
from mailcore.store.scripts import load_lua

if TYPE_CHECKING:
    from mailcore.store.layout import PartitionLayout

# Errors after which Redis has either run a whole script or none of it: the
# caller may safely retry with the same idempotency key.
_UNAVAILABLE = (
    redis.ConnectionError,  # includes BusyLoadingError
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a replica answering during failover
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    # A cluster client that can reach no node at all (its slot map cannot be
    # refreshed) says so with this base class; the service's keys never span
    # slots, so it never stands for a cross-slot mistake here.
    redis.exceptions.RedisClusterException,
)


@contextmanager
def translate_errors() -> Iterator[None]:
    try:
        yield
    except _UNAVAILABLE as error:
        raise StoreUnavailable(f"redis unavailable: {type(error).__name__}") from error
    except redis.ResponseError as error:
        if str(error).startswith("OOM"):
            # Redis refuses a script that would write under maxmemory before it runs.
            raise StoreUnavailable("redis is out of memory") from error
        raise


class _ScriptCall:
    """Builds the KEYS and ARGV of one ``accept_batch.lua`` call, entry by entry."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.entries: list[str | int] = []
        self.count = 0

    def add(self, kind: str, keys: Sequence[str], args: Sequence[str | int]) -> None:
        self.keys += keys
        self.entries += (kind, len(keys), len(args))
        self.entries += args
        self.count += 1


class RedisDeliveryStore:
    """Implements ``AcceptanceStore`` and ``StreamAcceptanceStore`` (reads: ``RedisQueries``)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        clock: Clock,
        idempotency_ttl: timedelta,
        delivery_ttl: timedelta,
        malformed_command_ttl: timedelta,
        keys: RedisKeys | None = None,
        layout: PartitionLayout | None = None,
    ) -> None:
        self._client = client
        self._layout = layout
        self._cluster = is_cluster(client)
        self._clock = clock
        self._keys = keys or RedisKeys()
        self._idempotency_ttl_ms = _ms(idempotency_ttl)
        self._delivery_ttl_ms = _ms(delivery_ttl)
        self._malformed_ttl_ms = _ms(malformed_command_ttl)
        # register_script sends EVALSHA and reloads the script on NOSCRIPT.
        self._accept_batch: Script = client.register_script(load_lua("accept_batch.lua"))
        self._stream_trim_point: Script = client.register_script(load_lua("stream_trim_point.lua"))

    # -- AcceptanceStore (REST intake: one delivery, conflicts reported) ---------------

    def accept(
        self,
        delivery: Delivery,
        first_attempt: Attempt | None,
        *,
        fingerprint: str,
        outcome: str,
    ) -> AcceptanceResult:
        self._verify_layout()
        call = _ScriptCall()
        self._add_acceptance(call, delivery, first_attempt, fingerprint, outcome, "report")
        reply = self._call(*_script_input(call, None))
        verdict = reply[1][0]
        if verdict[0] == "created":
            return AcceptanceResult(True, verdict[1], outcome, True)
        if verdict[0] == "duplicate":
            return AcceptanceResult(False, verdict[1], verdict[2], verdict[3] == 1)
        raise StoreInvariantBroken(f"acceptance refused: {verdict[0]} {verdict[1]}")

    # -- StreamAcceptanceStore ----------------------------------------------------------

    def read_offset(self, stream: str) -> str:
        with translate_errors():
            stored = self._client.get(self._keys.stream_offset(stream))
        return cast(str | None, stored) or "0-0"

    def stream_trim_point(self, stream: str, retention: int) -> str | None:
        """The newest entry that may be trimmed, keeping ``retention`` handled ones; None: none.

        Read from what the store has committed (the offset and the marks
        written with it), never from what a poller believes it has done.
        """
        keys = [self._keys.stream_offset(stream), self._keys.stream_trim_marks(stream)]
        with translate_errors():
            reply = self._stream_trim_point(keys=keys, args=[retention])
        if not reply:
            return None
        mark, offset = (str(part) for part in reply)
        # The marks never pass the offset; were the offset ever set back by
        # hand, the entries after it are not handled, whatever a mark says.
        point = min(mark, offset, key=stream_id)
        return None if point == "0-0" else point

    def accept_stream_batch(
        self,
        stream: str,
        expected_offset: str,
        items: Sequence[PendingDelivery | MalformedCommand],
    ) -> StreamBatchResult:
        return self.submit_stream_batch(stream, expected_offset, items)()

    def submit_stream_batch(
        self,
        stream: str,
        expected_offset: str,
        items: Sequence[PendingDelivery | MalformedCommand],
    ) -> Callable[[], StreamBatchResult]:
        if not items:
            return lambda: StreamBatchResult(False, expected_offset)
        self._verify_layout()
        now = self._clock.now_ms()
        new_offset = items[-1].stream_entry_id
        step = self._offset_step(stream, expected_offset, new_offset, len(items))

        def script_input(with_records: bool) -> tuple[list[str], list[str | int]]:
            call = self._stream_call(stream, items, now, with_records=with_records)
            return _script_input(call, step)

        # First without the malformed records of the deliveries: they are
        # only written for a conflict, and building them (redacted raw
        # fields) costs more than the rest of the entry. If one conflicts,
        # the script writes nothing and asks for them.
        answer = self._send(*script_input(False))

        def result() -> StreamBatchResult:
            reply = answer()
            if reply[0] == "records_needed":
                reply = self._call(*script_input(True))
            return self._stream_result(items, new_offset, reply)

        return result

    # -- steps of a batch spread over partitions (see store.partitions) -----------------

    def submit_reported(self, items: Sequence[PendingDelivery]) -> Callable[[], list[Any]]:
        """Accept stream deliveries of this partition, no offset; conflicts write nothing.

        Each answer is the script's verdict ("created", "duplicate" with
        same-fingerprint 1|0, or "id_taken"); the caller records conflicts
        with the offset, in the control partition.
        """
        self._verify_layout()
        call = _ScriptCall()
        for item in items:
            self._add_acceptance(
                call, item.delivery, item.first_attempt, item.fingerprint, item.outcome, "report"
            )
        answer = self._send(*_script_input(call, None))

        def verdicts() -> list[Any]:
            reply = answer()
            if reply[0] != "ok":
                raise StoreInvariantBroken(f"partition batch refused: {reply[0]}")
            return list(reply[1])

        return verdicts

    def record_and_advance(
        self,
        stream: str,
        expected_offset: str,
        new_offset: str,
        malformed: Sequence[MalformedCommand],
        covered: int,
    ) -> Any:
        """Write malformed records and move the offset over ``covered`` entries, in one step.

        Answers the script's reply.
        """
        call = self._stream_call(stream, malformed, self._clock.now_ms(), with_records=True)
        step = self._offset_step(stream, expected_offset, new_offset, covered)
        return self._call(*_script_input(call, step))

    def _offset_step(self, stream: str, expected: str, new: str, covered: int) -> _OffsetStep:
        return _OffsetStep(
            self._keys.stream_offset(stream),
            self._keys.stream_trim_marks(stream),
            expected,
            new,
            covered,
        )

    def _stream_result(
        self, items: Sequence[PendingDelivery | MalformedCommand], new_offset: str, reply: Any
    ) -> StreamBatchResult:
        if reply[0] == "offset_moved":
            return StreamBatchResult(True, reply[1])
        if reply[0] != "ok":
            raise StoreInvariantBroken(f"stream batch refused: {reply[0]}")
        results = []
        for item, verdict in zip(items, reply[1], strict=True):
            entry_id = item.stream_entry_id
            if isinstance(item, MalformedCommand):
                results.append(
                    StreamEntryResult(entry_id, EntryVerdict.MALFORMED, None, item.failure_code)
                )
            elif verdict[0] == "created":
                results.append(StreamEntryResult(entry_id, EntryVerdict.CREATED, verdict[1]))
            elif verdict[0] == "duplicate":
                results.append(StreamEntryResult(entry_id, EntryVerdict.DUPLICATE, verdict[1]))
            else:
                results.append(
                    StreamEntryResult(entry_id, EntryVerdict.MALFORMED, None, verdict[1])
                )
        return StreamBatchResult(False, new_offset, tuple(results))

    def _stream_call(
        self,
        stream: str,
        items: Sequence[PendingDelivery | MalformedCommand],
        now: int,
        *,
        with_records: bool,
    ) -> _ScriptCall:
        call = _ScriptCall()
        for item in items:
            if isinstance(item, MalformedCommand):
                call.add(
                    "malformed",
                    [
                        self._keys.malformed_command(item.stream_entry_id),
                        self._keys.index_malformed(),
                    ],
                    self._malformed_block(stream, item.stream_entry_id, item.raw_fields, now, item),
                )
            elif with_records:
                malformed = self._malformed_block(
                    stream, item.stream_entry_id, item.raw_fields(), now, None
                )
                self._add_acceptance(
                    call,
                    item.delivery,
                    item.first_attempt,
                    item.fingerprint,
                    item.outcome,
                    "record",
                    (item.stream_entry_id, malformed),
                )
            else:
                self._add_acceptance(
                    call, item.delivery, item.first_attempt, item.fingerprint, item.outcome, "ask"
                )
        return call

    # -- internals ----------------------------------------------------------------------

    def _verify_layout(self) -> None:
        if self._layout is not None:
            self._layout.verify()

    def _add_acceptance(
        self,
        call: _ScriptCall,
        delivery: Delivery,
        first_attempt: Attempt | None,
        fingerprint: str,
        outcome: str,
        on_conflict: str,  # "report", "ask" or "record" (see accept_batch.lua)
        record_conflict_as: tuple[str, list[str | int]] | None = None,
    ) -> None:
        k = self._keys
        index_keys = [
            k.index_created_at(),
            k.index_status(delivery.status),
            k.index_source(delivery.source),
            k.index_idempotency(delivery.source, delivery.idempotency_key),
            *(k.index_recipient(address) for address in delivery.envelope.recipients()),
        ]
        if delivery.template_id:
            index_keys.append(k.index_template(delivery.template_id))
        attempt_no = first_attempt.attempt_no if first_attempt else 1
        keys = [
            k.idempotency(delivery.source, delivery.idempotency_key),
            k.delivery(delivery.delivery_id),
            k.attempt(delivery.delivery_id, attempt_no),
            k.attempt_schedule(),
        ]
        if record_conflict_as is not None:
            keys += [k.malformed_command(record_conflict_as[0]), k.index_malformed()]
        keys += list(dict.fromkeys(index_keys))
        delivery_fields = delivery_to_fields(delivery)
        attempt_fields = attempt_to_fields(first_attempt) if first_attempt else {}
        born_terminal = delivery.status in TERMINAL_DELIVERY_STATUSES
        args: list[str | int] = [
            fingerprint,
            delivery.delivery_id,
            delivery.created_at_ms,
            self._idempotency_ttl_ms,
            self._delivery_ttl_ms if born_terminal else 0,
            first_attempt.scheduled_for_ms if first_attempt else "",
            outcome,
            on_conflict,
            len(delivery_fields),
            *chain.from_iterable(delivery_fields.items()),
            len(attempt_fields),
            *chain.from_iterable(attempt_fields.items()),
        ]
        if record_conflict_as is not None:
            args += record_conflict_as[1]
        call.add("accept", keys, args)

    def _malformed_block(
        self,
        stream: str,
        stream_entry_id: str,
        raw_fields: Any,
        now: int,
        malformed: MalformedCommand | None,
    ) -> list[str | int]:
        fields = {
            "stream_entry_id": stream_entry_id,
            "stream": stream,
            "raw_fields": json.dumps(dict(raw_fields), ensure_ascii=False, sort_keys=True),
            "recorded_at_ms": str(now),
        }
        if malformed is not None:
            fields["failure_code"] = malformed.failure_code
            fields["failure_message"] = malformed.message
        return [stream_entry_id, self._malformed_ttl_ms, now, len(fields), *_flatten(fields)]

    def _call(self, keys: list[str], args: list[str | int]) -> Any:
        return self._send(keys, args)()

    def _send(self, keys: list[str], args: list[str | int]) -> Callable[[], Any]:
        """Send one script call and return at once; the result waits for its answer.

        A pipeline of one, by hand: the connection stays out of the pool
        until the answer is read. On any failure it is dropped, since an
        answer may still be on its way. A server that lost the script
        (``NOSCRIPT``) gets it again through the registered script. Also
        the way every acceptance is sent: it skips the layers of redis-py's
        generic command path, which cost the REST intake more than
        building the call does.

        On a cluster the call goes to a connection of the node that owns the
        keys' slot, as the cluster client would route it. A node that no
        longer owns the slot answers ``MOVED`` (or ``ASK``) without running
        anything; the call then goes through the cluster client, which
        follows the redirection and learns the new slot map.
        """
        with translate_errors():
            pool = self._pool_for(keys[0])
            connection: Any = pool.get_connection()
            try:
                packed = _pack(("EVALSHA", self._accept_batch.sha, len(keys), *keys, *args))
                try:
                    connection.send_packed_command(packed)
                except redis.ConnectionError:
                    # Dropped while it sat in the pool (nothing was run): once
                    # more on a fresh connection, as the client's retry would.
                    connection.disconnect()
                    connection.send_packed_command(packed)
            except BaseException:
                connection.disconnect()
                pool.release(connection)
                raise

        def answer() -> Any:
            try:
                with translate_errors():
                    reply = connection.read_response()
            except (redis.exceptions.NoScriptError, *_SLOT_ELSEWHERE):
                pool.release(connection)
                with translate_errors():
                    return self._accept_batch(keys=keys, args=args)
            except BaseException:
                connection.disconnect()
                pool.release(connection)
                raise
            pool.release(connection)
            return reply

        return answer

    def _pool_for(self, key: str) -> Any:
        if not self._cluster:
            return self._client.connection_pool
        cluster: Any = self._client
        return cluster.get_node_from_key(key).redis_connection.connection_pool


# Answers of a cluster node that did not run the call: the slot is elsewhere.
_SLOT_ELSEWHERE = (redis.exceptions.MovedError, redis.exceptions.AskError)


def _pack(command: tuple[str | int, ...]) -> list[bytes]:
    """The command in RESP, by hiredis (a dependency of the layer) directly:
    redis-py's packer first copies every argument, which costs as much
    again for a batch's thousands of arguments."""
    return [hiredis.pack_command(cast(Any, command))]  # its stub takes 1-tuples only


class _OffsetStep(NamedTuple):
    """A stream step's move of the offset, over ``covered`` entries."""

    offset_key: str
    marks_key: str
    expected: str
    new: str
    covered: int


def _script_input(call: _ScriptCall, step: _OffsetStep | None) -> tuple[list[str], list[str | int]]:
    """KEYS and ARGV of one ``accept_batch.lua`` call."""
    if step is None:
        return call.keys, [0, "", "", call.count, *call.entries]
    keys = [step.offset_key, step.marks_key, *call.keys]
    return keys, [step.covered, step.expected, step.new, call.count, *call.entries]


def _ms(value: timedelta) -> int:
    return int(value.total_seconds() * 1000)


def _flatten(fields: dict[str, str]) -> list[str]:
    return list(chain.from_iterable(fields.items()))
