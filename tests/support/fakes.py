"""In-memory fakes of our own ports, for the unit tier."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mailcore.contracts.stream import MalformedCommand
from mailcore.domain.model import Attempt, Delivery
from mailcore.errors import StoreUnavailable
from mailcore.ports import (
    AcceptanceResult,
    EntryVerdict,
    PendingDelivery,
    StreamBatchResult,
    StreamEntry,
    StreamEntryResult,
    stream_id,
)


class FixedClock:
    def __init__(self, now_ms: int = 1_795_338_900_000) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


class SequentialIds:
    def __init__(self) -> None:
        self.issued = 0

    def new_delivery_id(self) -> str:
        self.issued += 1
        return f"dlv_{self.issued:026d}"


class InMemoryAcceptanceStore:
    """Keeps the AcceptanceStore contract: first writer of a key wins, whole or nothing."""

    def __init__(self) -> None:
        self.idempotency: dict[tuple[str, str], tuple[str, str, str]] = {}
        self.deliveries: dict[str, Delivery] = {}
        self.attempts: dict[tuple[str, int], Attempt] = {}
        self.schedule: dict[str, int] = {}

    def accept(
        self,
        delivery: Delivery,
        first_attempt: Attempt | None,
        *,
        fingerprint: str,
        outcome: str,
    ) -> AcceptanceResult:
        key = (str(delivery.source), delivery.idempotency_key)
        if key in self.idempotency:
            stored_fingerprint, delivery_id, stored_outcome = self.idempotency[key]
            return AcceptanceResult(
                False, delivery_id, stored_outcome, stored_fingerprint == fingerprint
            )
        self.idempotency[key] = (fingerprint, delivery.delivery_id, outcome)
        self.deliveries[delivery.delivery_id] = delivery
        if first_attempt is not None:
            self.attempts[(delivery.delivery_id, first_attempt.attempt_no)] = first_attempt
            self.schedule[delivery.delivery_id] = first_attempt.scheduled_for_ms
        return AcceptanceResult(True, delivery.delivery_id, outcome, True)


class ScriptedLease:
    """A Lease whose answers the test decides."""

    def __init__(self, acquire: bool = True, renewals: int = 1_000_000) -> None:
        self._acquire = acquire
        self._renewals_left = renewals
        self.released = False

    def acquire(self) -> bool:
        return self._acquire

    def renew(self) -> bool:
        self._renewals_left -= 1
        return self._renewals_left >= 0

    def release(self) -> None:
        self.released = True


class ListCommandStream:
    """A CommandStream (and TrimmableStream) over a list; optionally fails the first reads."""

    def __init__(self, entries: list[StreamEntry], failures: int = 0) -> None:
        self.entries = entries
        self.failures = failures
        self.reads = 0
        self.trims: list[str] = []  # the entry id of each trim_through call

    def trim_through(self, entry_id: str, limit: int) -> int:
        """Exact where Redis is approximate: deletes every entry up to ``entry_id``."""
        self.trims.append(entry_id)
        doomed = [e for e in self.entries if stream_id(e.entry_id) <= stream_id(entry_id)]
        doomed = doomed[:limit]
        self.entries = [e for e in self.entries if e not in doomed]
        return len(doomed)

    def read_after(self, offset: str, count: int, block_ms: int) -> list[StreamEntry]:
        self.reads += 1
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("redis unavailable: ConnectionError")
        after = [e for e in self.entries if stream_id(e.entry_id) > stream_id(offset)]
        return after[:count]


class InMemoryStreamStore:
    """A StreamAcceptanceStore (and StreamTrimPoints) keeping the offset compare-and-set
    contract, and trim marks written with the offset as accept_batch.lua writes them."""

    def __init__(self) -> None:
        self.offset = "0-0"
        self.accepted: list[str] = []
        self.malformed: list[str] = []
        self.marks: list[tuple[int, str]] = []  # (entries handled so far, offset), oldest first
        self.trim_point_failures = 0

    def read_offset(self, stream: str) -> str:
        return self.offset

    def stream_trim_point(self, stream: str, retention: int) -> str | None:
        if self.trim_point_failures:
            self.trim_point_failures -= 1
            raise StoreUnavailable("redis unavailable: TimeoutError")
        if not self.marks:
            return None
        keep_from = self.marks[-1][0] - retention
        older = [mark for mark in self.marks if mark[0] <= keep_from]
        if not older:
            return None
        self.marks = [mark for mark in self.marks if mark[0] >= older[-1][0]]
        return min(older[-1][1], self.offset, key=stream_id)

    def accept_stream_batch(
        self,
        stream: str,
        expected_offset: str,
        items: Sequence[PendingDelivery | MalformedCommand],
    ) -> StreamBatchResult:
        if expected_offset != self.offset:
            return StreamBatchResult(True, self.offset)
        results = []
        for item in items:
            if isinstance(item, MalformedCommand):
                self.malformed.append(item.stream_entry_id)
                results.append(
                    StreamEntryResult(
                        item.stream_entry_id, EntryVerdict.MALFORMED, None, item.failure_code
                    )
                )
            else:
                self.accepted.append(item.delivery.delivery_id)
                results.append(
                    StreamEntryResult(
                        item.stream_entry_id, EntryVerdict.CREATED, item.delivery.delivery_id
                    )
                )
        self.offset = items[-1].stream_entry_id
        handled = (self.marks[-1][0] if self.marks else 0) + len(items)
        self.marks.append((handled, self.offset))
        return StreamBatchResult(False, self.offset, tuple(results))

    def submit_stream_batch(
        self,
        stream: str,
        expected_offset: str,
        items: Sequence[PendingDelivery | MalformedCommand],
    ) -> Callable[[], StreamBatchResult]:
        result = self.accept_stream_batch(stream, expected_offset, items)
        return lambda: result


# What smtp mode needs besides the mode itself (the server is never reached
# in tests that only accept mail).
SMTP_MODE_ENV = {
    "MAIL_SMTP_MODE": "smtp",
    "MAIL_SMTP_ADDR": "127.0.0.1:2525",
    "MAIL_SMTP_FROM_EMAIL": "noreply@mail.example.com",
}
