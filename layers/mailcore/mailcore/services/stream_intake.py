"""Accept generic mail from the command stream: decode, accept, advance, loop.

:class:`StreamIntake` turns one read batch into deliveries and malformed
records, accepted together with the stream offset in atomic steps.
:class:`StreamPoller` is the loop a ``stream_poller`` invocation runs: it holds
the lease, reads from the stored offset, hands batches to the intake and stops
shortly before its time is up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from mailcore.contracts.auth import AcceptanceOutcome
from mailcore.contracts.stream import (
    CommandLimits,
    DeliveryCommand,
    MalformedCommand,
    RenderedPayload,
    TemplatePayload,
    decode_command,
    redacted_raw_fields,
)
from mailcore.domain.model import Attachment, Attempt, Content, Delivery, Envelope
from mailcore.domain.states import AttemptStatus, DeliveryStatus
from mailcore.errors import StoreUnavailable
from mailcore.ports import (
    Clock,
    CommandStream,
    EntryVerdict,
    Lease,
    PendingDelivery,
    StreamAcceptanceStore,
    StreamEntry,
    StreamEntryResult,
)
from mailcore.services.dispatch import Dispatcher
from mailcore.services.leased import run_under_lease

# Refusals the store decides (they depend on what is already stored).
STORE_FAILURE_MESSAGES = {
    "idempotency_conflict": "idempotency_key was already used for a different command",
    "delivery_id_conflict": "delivery_id already belongs to another delivery",
}

# One script call carries at most this much payload, so a batch of large
# attachments never becomes one huge, server-blocking script.
MAX_CALL_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class HandledEntry:
    """What became of one stream entry, for logs and metrics."""

    stream_entry_id: str
    verdict: EntryVerdict
    delivery_id: str | None = None
    source: str | None = None
    template_id: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True, slots=True)
class IntakeResult:
    offset: str
    handled: tuple[HandledEntry, ...]
    offset_moved: bool = False  # another poller got there first; re-read the offset


def delivery_from_command(command: DeliveryCommand, now_ms: int) -> tuple[Delivery, Attempt]:
    """A decoded command as a queued delivery with its first attempt due now."""
    payload = command.payload
    template = payload if isinstance(payload, TemplatePayload) else None
    rendered = payload if isinstance(payload, RenderedPayload) else None
    delivery = Delivery(
        delivery_id=command.delivery_id,
        source=command.source,
        status=DeliveryStatus.QUEUED,
        payload_mode=command.payload_mode,
        envelope=Envelope(
            to=tuple(payload.to),
            cc=tuple(payload.cc),
            bcc=tuple(payload.bcc),
            reply_to=tuple(payload.reply_to),
        ),
        idempotency_key=command.idempotency_key,
        created_at_ms=now_ms,
        updated_at_ms=now_ms,
        template_id=template.template_id if template else None,
        locale=template.locale if template else None,
        variables=template.variables if template else {},
        secret_variables=frozenset(template.secret_variables) if template else frozenset(),
        content=(
            Content(rendered.subject, rendered.text_body, rendered.html_body) if rendered else None
        ),
        attachments=tuple(
            Attachment(a.filename, a.content_type, a.content_base64, a.inline, a.content_id)
            for a in payload.attachments
        ),
        attempt_count=1,
        requested_at_ms=command.requested_at_ms,
        request_id=command.request_id,
        trace_id=command.trace_id,
    )
    attempt = Attempt(command.delivery_id, 1, AttemptStatus.SCHEDULED, now_ms, now_ms)
    return delivery, attempt


class StreamIntake:
    def __init__(
        self,
        store: StreamAcceptanceStore,
        clock: Clock,
        stream: str,
        limits: CommandLimits,
        max_call_bytes: int = MAX_CALL_BYTES,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._stream = stream
        self._limits = limits
        self._max_call_bytes = max_call_bytes
        self._dispatcher = dispatcher

    @property
    def stream(self) -> str:
        return self._stream

    def read_offset(self) -> str:
        return self._store.read_offset(self._stream)

    def accept(self, offset: str, entries: Sequence[StreamEntry]) -> IntakeResult:
        """Accept ``entries`` (read after ``offset``), in as few atomic steps as fit."""
        now = self._clock.now_ms()
        handled: list[HandledEntry] = []
        for chunk in self._chunks(entries):
            items: list[PendingDelivery | MalformedCommand] = []
            commands: dict[str, DeliveryCommand] = {}
            for entry in chunk:
                decoded = decode_command(entry.entry_id, entry.fields, self._limits)
                if isinstance(decoded, MalformedCommand):
                    items.append(decoded)
                    continue
                commands[entry.entry_id] = decoded
                delivery, attempt = delivery_from_command(decoded, now)
                items.append(
                    PendingDelivery(
                        stream_entry_id=entry.entry_id,
                        delivery=delivery,
                        first_attempt=attempt,
                        fingerprint=decoded.fingerprint(),
                        outcome=AcceptanceOutcome.SENT,
                        raw_fields=redacted_raw_fields(entry.fields),
                    )
                )
            result = self._store.accept_stream_batch(self._stream, offset, items)
            if result.offset_moved:
                return IntakeResult(result.offset, tuple(handled), offset_moved=True)
            offset = result.offset
            messages = {
                i.stream_entry_id: i.message for i in items if isinstance(i, MalformedCommand)
            }
            for entry_result in result.entries:
                command = commands.get(entry_result.stream_entry_id)
                handled.append(
                    HandledEntry(
                        stream_entry_id=entry_result.stream_entry_id,
                        verdict=entry_result.verdict,
                        delivery_id=entry_result.delivery_id,
                        source=command.source if command else None,
                        template_id=command.template_id if command else None,
                        failure_code=entry_result.failure_code,
                        failure_message=messages.get(
                            entry_result.stream_entry_id,
                            STORE_FAILURE_MESSAGES.get(entry_result.failure_code or ""),
                        ),
                    )
                )
            self._dispatch_now(result.entries)
        return IntakeResult(offset, tuple(handled))

    def _dispatch_now(self, results: Sequence[StreamEntryResult]) -> None:
        """First attempts go to the workers at once; the scheduler covers any failure."""
        created = [
            r.delivery_id for r in results if r.verdict is EntryVerdict.CREATED and r.delivery_id
        ]
        if self._dispatcher is not None and created:
            self._dispatcher.dispatch_soon(created)

    def _chunks(self, entries: Sequence[StreamEntry]) -> list[list[StreamEntry]]:
        chunks: list[list[StreamEntry]] = [[]]
        size = 0
        for entry in entries:
            entry_size = sum(len(name) + len(value) for name, value in entry.fields)
            if chunks[-1] and size + entry_size > self._max_call_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append(entry)
            size += entry_size
        return [chunk for chunk in chunks if chunk]


class PollObserver(Protocol):
    """Told what the poller does, for logs and metrics (the poller itself stays quiet)."""

    def entries_handled(self, handled: Sequence[HandledEntry]) -> None: ...

    def store_unavailable(self, error: StoreUnavailable) -> None: ...


@dataclass
class PollReport:
    lease_acquired: bool = False
    batches: int = 0
    accepted: int = 0
    duplicates: int = 0
    malformed: int = 0
    store_errors: int = 0
    offset: str | None = None
    stopped_because: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def add(self, handled: Sequence[HandledEntry]) -> None:
        self.batches += 1
        for entry in handled:
            if entry.verdict is EntryVerdict.CREATED:
                self.accepted += 1
            elif entry.verdict is EntryVerdict.DUPLICATE:
                self.duplicates += 1
            else:
                self.malformed += 1


class StreamPoller:
    """One invocation's loop: lease, read from the offset, accept, repeat until time is up."""

    def __init__(
        self,
        intake: StreamIntake,
        stream: CommandStream,
        lease: Lease,
        observer: PollObserver,
        *,
        batch_size: int,
        block_ms: int,
        reserve_ms: int = 3000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._intake = intake
        self._stream = stream
        self._lease = lease
        self._observer = observer
        self._batch_size = batch_size
        self._block_ms = block_ms
        self._reserve_ms = reserve_ms
        self._sleep = sleep

    def run(self, time_left_ms: Callable[[], int]) -> PollReport:
        """Consume until less than the block timeout plus a reserve is left."""
        return run_under_lease(
            self._lease,
            self._observer,
            PollReport(),
            lambda report: self._loop(time_left_ms, report),
            holder="poller",
        )

    def _loop(self, time_left_ms: Callable[[], int], report: PollReport) -> None:
        offset: str | None = None
        failures = 0
        while True:
            budget = time_left_ms() - self._reserve_ms
            if budget <= 0:
                report.stopped_because = "time is up"
                return
            try:
                if not self._lease.renew():
                    report.stopped_because = "lease lost"
                    return
                if offset is None:
                    offset = self._intake.read_offset()
                    report.offset = offset
                entries = self._stream.read_after(
                    offset, self._batch_size, min(self._block_ms, budget)
                )
                if not entries:
                    failures = 0
                    continue
                result = self._intake.accept(offset, entries)
                failures = 0
            except StoreUnavailable as error:
                # Redis dropped or stalled: the client reconnects on the next
                # command; back off a little so a dead Redis is not hammered.
                report.store_errors += 1
                self._observer.store_unavailable(error)
                failures += 1
                self._sleep(min(0.05 * 2**failures, 1.0, max(budget, 0) / 1000))
                continue
            if result.handled:
                report.add(result.handled)
                self._observer.entries_handled(result.handled)
            offset = None if result.offset_moved else result.offset
            report.offset = result.offset
