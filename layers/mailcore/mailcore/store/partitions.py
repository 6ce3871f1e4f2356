"""The store over several partitions (``MAIL_REDIS_PARTITIONS``).

Each partition is a hash tag, so a partition's keys share one slot and every
atomic step stays inside one (``keys.py``). A delivery lives in the partition
of its idempotency scope (:func:`~mailcore.store.keys.partition_of`), so the
idempotency check and the write that creates the delivery are one script, as
with a single partition. What spans partitions is done here, in steps that
are each atomic and safe to repeat:

* A stream batch is accepted partition by partition, then its malformed
  records and the offset move together in the control partition (0). A
  poller that dies between the steps reads the batch again: acceptance is
  idempotent per scope, so the entries it already took come back as
  duplicates, and nothing is lost or doubled.
* A delivery id is unique across partitions: the ids the service makes are
  ULIDs, and an id a stream command brings is checked against every other
  partition before it is accepted (only one poller holds the lease).
* Reads by id ask every partition; lists merge the partitions' walks on the
  same cursor positions, so a page never skips or repeats.

With one partition none of this is used: the stores work on partition 0
directly, as they always have.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import redis

from mailcore.contracts.malformed import STORE_FAILURE_MESSAGES, FailureCode, MalformedCommand
from mailcore.domain.model import Attempt, Delivery
from mailcore.domain.states import AttemptStatus, ProviderOutcome
from mailcore.errors import StoreInvariantBroken
from mailcore.ports import (
    AcceptanceResult,
    ClaimedAttempt,
    ClaimedDelivery,
    CompletionResult,
    DeadLetter,
    DeliveryFilters,
    EntryVerdict,
    Page,
    PendingDelivery,
    StartResult,
    StreamBatchResult,
    StreamEntryResult,
)
from mailcore.store.attempt_store import RedisAttemptStore
from mailcore.store.index_maintenance import RedisIndexMaintenance
from mailcore.store.keys import CONTROL_PARTITION, RedisKeys, in_any_partition, partition_of
from mailcore.store.queries import ATTEMPT_PROBE, Position, RedisQueries, Walk
from mailcore.store.redis_store import RedisDeliveryStore, translate_errors


class PartitionedDeliveryStore:
    """Implements ``AcceptanceStore`` and ``StreamAcceptanceStore`` over the partitions."""

    def __init__(self, client: redis.Redis, stores: Sequence[RedisDeliveryStore]) -> None:
        if len(stores) < 2:
            raise ValueError("use the partition's own store for a single partition")
        self._client = client
        self._stores = list(stores)
        self._keys = [RedisKeys.of_partition(n) for n in range(len(stores))]

    def partition_of(self, delivery: Delivery) -> int:
        return partition_of(delivery.source, delivery.idempotency_key, len(self._stores))

    # -- AcceptanceStore ----------------------------------------------------------------

    def accept(
        self,
        delivery: Delivery,
        first_attempt: Attempt | None,
        *,
        fingerprint: str,
        outcome: str,
    ) -> AcceptanceResult:
        # The REST intake and resend make their ids (ULIDs): unique without a check.
        partition = self.partition_of(delivery)
        result = self._stores[partition].accept(
            delivery, first_attempt, fingerprint=fingerprint, outcome=outcome
        )
        return dataclasses.replace(result, partition=partition)

    # -- StreamAcceptanceStore ----------------------------------------------------------

    def read_offset(self, stream: str) -> str:
        return self._stores[CONTROL_PARTITION].read_offset(stream)

    def stream_trim_point(self, stream: str, retention: int) -> str | None:
        return self._stores[CONTROL_PARTITION].stream_trim_point(stream, retention)

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
        # Runs at once (several partitions answer in turn); the result is ready.
        result = self._accept_across(stream, expected_offset, items)
        return lambda: result

    def _accept_across(
        self,
        stream: str,
        expected_offset: str,
        items: Sequence[PendingDelivery | MalformedCommand],
    ) -> StreamBatchResult:
        if not items:
            return StreamBatchResult(False, expected_offset)
        outcome: list[StreamEntryResult | MalformedCommand | None] = [None] * len(items)
        by_partition: dict[int, list[int]] = defaultdict(list)
        for index, item in enumerate(items):
            if isinstance(item, MalformedCommand):
                outcome[index] = item
            else:
                by_partition[self.partition_of(item.delivery)].append(index)
        for index in self._ids_taken_elsewhere(items, by_partition):
            outcome[index] = _conflict(items[index], FailureCode.DELIVERY_ID_CONFLICT)
        # Every partition's step is sent before any answer is read.
        answers = {
            partition: (
                admitted,
                self._stores[partition].submit_reported([_pending(items[i]) for i in admitted]),
            )
            for partition, indexes in by_partition.items()
            if (admitted := [i for i in indexes if outcome[i] is None])
        }
        for partition, (admitted, verdicts) in answers.items():
            for index, verdict in zip(admitted, verdicts(), strict=True):
                outcome[index] = _entry_result(items[index], verdict, partition)
        malformed = [entry for entry in outcome if isinstance(entry, MalformedCommand)]
        new_offset = items[-1].stream_entry_id
        reply = self._stores[CONTROL_PARTITION].record_and_advance(
            stream, expected_offset, new_offset, malformed, covered=len(items)
        )
        if reply[0] == "offset_moved":
            return StreamBatchResult(True, reply[1])
        if reply[0] != "ok":
            raise StoreInvariantBroken(f"stream batch refused: {reply[0]}")
        results = tuple(
            StreamEntryResult(
                entry.stream_entry_id, EntryVerdict.MALFORMED, None, entry.failure_code
            )
            if isinstance(entry, MalformedCommand)
            else entry
            for entry in outcome
            if entry is not None
        )
        return StreamBatchResult(False, new_offset, results)

    def _ids_taken_elsewhere(
        self,
        items: Sequence[PendingDelivery | MalformedCommand],
        by_partition: dict[int, list[int]],
    ) -> list[int]:
        """Entries whose delivery id lives, or is taken earlier in this batch, in another partition.

        Within its own partition the acceptance script checks the id itself
        (an entry read again finds its own delivery there, a duplicate).
        """
        home: dict[str, int] = {}
        taken: list[int] = []
        # Per other partition, the ids to look for there: one multi-key
        # EXISTS each (its keys share that partition's slot), all pipelined.
        # It counts; only a partition that finds any is asked id by id.
        elsewhere: dict[int, list[tuple[int, str]]] = defaultdict(list)
        # In stream order: of two entries with one id, the earlier one keeps it.
        in_order = sorted(
            (index, partition) for partition, indexes in by_partition.items() for index in indexes
        )
        for index, partition in in_order:
            delivery_id = _pending(items[index]).delivery.delivery_id
            if home.setdefault(delivery_id, partition) != partition:
                taken.append(index)
            for other in range(len(self._stores)):
                if other != partition:
                    elsewhere[other].append((index, self._keys[other].delivery(delivery_id)))
        with translate_errors():
            pipe = self._client.pipeline(transaction=False)
            for checks in elsewhere.values():
                pipe.exists(*(key for _, key in checks))
            counts = pipe.execute()
            suspects = [
                check
                for checks, count in zip(elsewhere.values(), counts, strict=True)
                if count
                for check in checks
            ]
            if suspects:
                pipe = self._client.pipeline(transaction=False)
                for _, key in suspects:
                    pipe.exists(key)
                found = pipe.execute()
                taken += [i for (i, _), hit in zip(suspects, found, strict=True) if hit]
        return sorted(set(taken))


def _pending(item: PendingDelivery | MalformedCommand) -> PendingDelivery:
    if not isinstance(item, PendingDelivery):
        raise TypeError(f"stream entry {item.stream_entry_id} is malformed, not a pending delivery")
    return item


def _conflict(item: PendingDelivery | MalformedCommand, code: FailureCode) -> MalformedCommand:
    pending = _pending(item)
    return MalformedCommand(
        pending.stream_entry_id, code, STORE_FAILURE_MESSAGES[code], pending.raw_fields()
    )


def _entry_result(
    item: PendingDelivery | MalformedCommand, verdict: Any, partition: int
) -> StreamEntryResult | MalformedCommand:
    entry_id = item.stream_entry_id
    if verdict[0] == "created":
        return StreamEntryResult(entry_id, EntryVerdict.CREATED, verdict[1], partition=partition)
    if verdict[0] == "duplicate" and int(verdict[3]) == 1:
        return StreamEntryResult(entry_id, EntryVerdict.DUPLICATE, verdict[1], partition=partition)
    if verdict[0] == "duplicate":
        return _conflict(item, FailureCode.IDEMPOTENCY_CONFLICT)
    if verdict[0] == "id_taken":
        return _conflict(item, FailureCode.DELIVERY_ID_CONFLICT)
    raise StoreInvariantBroken(f"unexpected acceptance verdict: {verdict[0]}")


class ClaimRouter:
    """The attempt steps a worker takes, each sent to the partition its claim names.

    Implements the claim-side of ``AttemptStore`` (what ``AttemptExecutor`` uses).
    """

    def __init__(self, stores: Sequence[RedisAttemptStore]) -> None:
        self._stores = list(stores)

    def _of(self, claim: ClaimedAttempt) -> RedisAttemptStore:
        if not 0 <= claim.partition < len(self._stores):
            # Only a message from a deployment with more partitions gets here.
            raise ValueError(f"claim names partition {claim.partition} of {len(self._stores)}")
        return self._stores[claim.partition]

    def read_claimed(self, claim: ClaimedAttempt) -> ClaimedDelivery | None:
        return self._of(claim).read_claimed(claim)

    def start(
        self,
        claim: ClaimedAttempt,
        now_ms: int,
        *,
        rendered: bool,
        locale_fallback_used: bool | None = None,
        resolved_locale: str | None = None,
        failure_summary: str = "",
        rendered_subject: str | None = None,
    ) -> StartResult:
        return self._of(claim).start(
            claim,
            now_ms,
            rendered=rendered,
            locale_fallback_used=locale_fallback_used,
            resolved_locale=resolved_locale,
            failure_summary=failure_summary,
            rendered_subject=rendered_subject,
        )

    def complete(
        self,
        claim: ClaimedAttempt,
        now_ms: int,
        *,
        outcome: ProviderOutcome,
        attempt_status: AttemptStatus,
        summary: str,
        duration_ms: int,
        failure_code: str | None = None,
    ) -> CompletionResult:
        return self._of(claim).complete(
            claim,
            now_ms,
            outcome=outcome,
            attempt_status=attempt_status,
            summary=summary,
            duration_ms=duration_ms,
            failure_code=failure_code,
        )


class PartitionedQueries:
    """Implements ``DeliveryQueries`` over the partitions: by id asks them all, lists merge."""

    def __init__(self, client: redis.Redis, partitions: Sequence[RedisQueries]) -> None:
        self._client = client
        self._partitions = list(partitions)
        self._keys = [RedisKeys.of_partition(n) for n in range(len(partitions))]

    def delivery(self, delivery_id: str) -> Delivery | None:
        home = self._home_of(delivery_id)
        return None if home is None else home.delivery(delivery_id)

    def attempts(self, delivery_id: str, attempt_count: int | None) -> list[Attempt]:
        if attempt_count is None:
            home = self._home_of_attempts(delivery_id)
        else:
            home = self._home_of(delivery_id)
        return [] if home is None else home.attempts(delivery_id, attempt_count)

    def deliveries(
        self, filters: DeliveryFilters, limit: int, cursor: str | None
    ) -> Page[Delivery]:
        after = Position.decode(cursor) if cursor else None
        taken, frontier = _merge(
            [q.walk_deliveries(filters, limit, after) for q in self._partitions], limit
        )
        items = [
            delivery
            for partition, ids in _by_partition(taken)
            for delivery in self._partitions[partition].deliveries_at(ids)
        ]
        return Page(_in_page_order(items, taken), frontier.encode() if frontier else None)

    def malformed_command(self, stream_entry_id: str) -> dict[str, str] | None:
        return self._partitions[CONTROL_PARTITION].malformed_command(stream_entry_id)

    def malformed_commands(self, limit: int, cursor: str | None) -> Page[dict[str, str]]:
        return self._partitions[CONTROL_PARTITION].malformed_commands(limit, cursor)

    def dead_letters(self, limit: int, cursor: str | None) -> Page[DeadLetter]:
        after = Position.decode(cursor) if cursor else None
        taken, frontier = _merge(
            [q.walk_dead_letters(limit, after) for q in self._partitions], limit
        )
        order = {position.member: n for n, (_, position) in enumerate(taken)}
        items = [
            entry
            for partition, ids in _by_partition(taken)
            for entry in self._partitions[partition].dead_letters_at(ids)
        ]
        items.sort(key=lambda entry: order[entry.delivery_id])
        return Page(items, frontier.encode() if frontier else None)

    def _home_of(self, delivery_id: str) -> RedisQueries | None:
        """The partition holding this delivery: one round of EXISTS, one per partition."""
        with translate_errors():
            pipe = self._client.pipeline(transaction=False)
            for keys in self._keys:
                pipe.exists(keys.delivery(delivery_id))
            found = pipe.execute()
        for queries, exists in zip(self._partitions, found, strict=True):
            if exists:
                return queries
        return None

    def _home_of_attempts(self, delivery_id: str) -> RedisQueries | None:
        """The partition keeping attempts of an expired delivery: one round, one EXISTS each.

        Each partition is asked for the attempt numbers its reader would
        look at first (their keys share the partition's slot).
        """
        numbers = range(1, ATTEMPT_PROBE + 1)
        with translate_errors():
            pipe = self._client.pipeline(transaction=False)
            for keys in self._keys:
                pipe.exists(*(keys.attempt(delivery_id, n) for n in numbers))
            found = pipe.execute()
        for queries, count in zip(self._partitions, found, strict=True):
            if count:
                return queries
        return None


def _merge(walks: Sequence[Walk], limit: int) -> tuple[list[tuple[int, Position]], Position | None]:
    """One page from the partitions' walks, each of up to ``limit`` items after one cursor.

    A walk that stopped early (its frontier) examined everything newer than
    its frontier; the newest frontier is therefore how far all of them
    examined, and only items at or before it in time order are certain to be
    complete. The page takes the newest ``limit`` of those; the next cursor
    is the last one taken, or that frontier when fewer were found.
    """
    frontiers = [walk.frontier for walk in walks if walk.frontier is not None]
    floor = max(frontiers) if frontiers else None
    found = sorted(
        (
            (partition, position)
            for partition, walk in enumerate(walks)
            for position in walk.found
            if floor is None or position >= floor
        ),
        key=lambda item: item[1],
        reverse=True,
    )
    taken = found[:limit]
    if len(found) > limit:
        return taken, taken[-1][1]
    return taken, floor


class _HasDeliveryId(Protocol):
    @property
    def delivery_id(self) -> str: ...


def _in_page_order[T: _HasDeliveryId](
    items: list[T], taken: Sequence[tuple[int, Position]]
) -> list[T]:
    """Records read partition by partition, back in the merged page's order."""
    order = {position.member: n for n, (_, position) in enumerate(taken)}
    return sorted(items, key=lambda item: order[item.delivery_id])


def _by_partition(taken: Sequence[tuple[int, Position]]) -> list[tuple[int, list[str]]]:
    grouped: dict[int, list[str]] = defaultdict(list)
    for partition, position in taken:
        grouped[partition].append(position.member)
    return sorted(grouped.items())


class PartitionedIndexMaintenance:
    """Implements ``IndexMaintenance`` over the partitions' indexes."""

    def __init__(self, client: redis.Redis, partitions: Sequence[RedisIndexMaintenance]) -> None:
        self._client = client
        self._partitions = list(partitions)

    def index_keys(self) -> list[str]:
        # One SCAN for all partitions, rather than one over the whole keyspace each.
        with translate_errors():
            found = {str(key) for key in self._client.scan_iter(match=in_any_partition("idx:*"))}
        return sorted(key for key in found if any(p.owns(key) for p in self._partitions))

    def remove_expired(self, index: str, start: int, count: int) -> tuple[int, int]:
        for partition in self._partitions:
            if partition.owns(index):
                return partition.remove_expired(index, start, count)
        raise ValueError(f"{index!r} is no partition's index")
