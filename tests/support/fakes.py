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
    """A CommandStream over a list; optionally fails the first reads."""

    def __init__(self, entries: list[StreamEntry], failures: int = 0) -> None:
        self.entries = entries
        self.failures = failures
        self.reads = 0

    def read_after(self, offset: str, count: int, block_ms: int) -> list[StreamEntry]:
        self.reads += 1
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("redis unavailable: ConnectionError")
        ids = [entry.entry_id for entry in self.entries]
        start = ids.index(offset) + 1 if offset in ids else 0
        return self.entries[start : start + count]


class InMemoryStreamStore:
    """A StreamAcceptanceStore keeping the offset compare-and-set contract."""

    def __init__(self) -> None:
        self.offset = "0-0"
        self.accepted: list[str] = []
        self.malformed: list[str] = []

    def read_offset(self, stream: str) -> str:
        return self.offset

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
