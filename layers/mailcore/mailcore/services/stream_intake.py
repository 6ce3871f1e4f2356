"""Accept generic mail from the command stream: decode, accept, advance, trim, loop.

:class:`StreamIntake` turns one read batch into deliveries and malformed
records, accepted together with the stream offset in atomic steps.
:class:`StreamTrimmer` removes handled entries from the stream, keeping the
last ``MAIL_STREAM_RETENTION`` of them. :class:`StreamPoller` is the loop a
``stream_poller`` invocation runs: it holds the lease, reads from the stored
offset, hands batches to the intake, trims now and then, and stops shortly
before its time is up.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Protocol

from mailcore.contracts.auth import AcceptanceOutcome
from mailcore.contracts.malformed import STORE_FAILURE_MESSAGES
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
    StreamBatchResult,
    StreamEntry,
    StreamTrimPoints,
    TrimmableStream,
)
from mailcore.services.dispatch import Dispatcher
from mailcore.services.leased import run_under_lease

# One script call carries at most this much payload, so a batch of large
# attachments never becomes one huge, server-blocking script.
MAX_CALL_BYTES = 4 * 1024 * 1024
# ... and at most this many entries: a read batch is accepted in a few
# pipelined steps (see StreamIntake.accept), short enough that the last one,
# which nothing overlaps, costs little, and that Redis is never blocked long.
MAX_CALL_ENTRIES = 20
# Trimming costs Redis work in proportion to what it deletes, so the poller
# trims at most once a second (and when it goes idle or stops), and one XTRIM
# deletes at most TRIM_LIMIT entries: a backlog of millions, after an upgrade
# or an outage, goes in short steps that never hold Redis for long.
TRIM_INTERVAL_MS = 1000
TRIM_LIMIT = 10_000
TRIM_CALLS = 10  # XTRIMs per trim at most; the rest waits for the next trim


@dataclass(frozen=True, slots=True)
class HandledEntry:
    """What became of one stream entry, for logs and metrics."""

    stream_entry_id: str
    verdict: EntryVerdict
    # The delivery created or found; for a malformed entry, the id it named, if any.
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
    # Redis failed after some steps of the batch went in: ``handled`` and
    # ``offset`` say what did; the rest is read again after a pause.
    interrupted_by: StoreUnavailable | None = None


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


class _Step:
    """One atomic step of a batch: what was built for it, then its answer."""

    def __init__(self) -> None:
        self.items: list[PendingDelivery | MalformedCommand] = []
        self.commands: dict[str, DeliveryCommand] = {}
        self.answer: Callable[[], StreamBatchResult] | None = None

    def settle(
        self, handled: list[HandledEntry], created: list[tuple[int, str]]
    ) -> StreamBatchResult:
        """Wait for the answer; say what became of each entry."""
        if self.answer is None:
            raise RuntimeError("a stream step was settled before it was submitted")
        answer, self.answer = self.answer, None
        result = answer()
        refused = {i.stream_entry_id: i for i in self.items if isinstance(i, MalformedCommand)}
        messages = {entry_id: item.message for entry_id, item in refused.items()}
        for entry_result in result.entries:
            command = self.commands.get(entry_result.stream_entry_id)
            # An entry refused undecoded still says in its (truncated) fields
            # which delivery and producer it was meant for, if it named them.
            undecoded = None if command else refused.get(entry_result.stream_entry_id)
            raw = undecoded.raw_fields if undecoded else {}
            handled.append(
                HandledEntry(
                    stream_entry_id=entry_result.stream_entry_id,
                    verdict=entry_result.verdict,
                    delivery_id=entry_result.delivery_id
                    or (command.delivery_id if command else raw.get("delivery_id") or None),
                    source=command.source if command else raw.get("source") or None,
                    template_id=command.template_id if command else None,
                    failure_code=entry_result.failure_code,
                    failure_message=messages.get(
                        entry_result.stream_entry_id,
                        STORE_FAILURE_MESSAGES.get(entry_result.failure_code or ""),
                    ),
                )
            )
            if entry_result.verdict is EntryVerdict.CREATED and entry_result.delivery_id:
                created.append((entry_result.partition, entry_result.delivery_id))
        return result

    def drain(self) -> None:
        if self.answer is not None:
            answer, self.answer = self.answer, None
            with contextlib.suppress(Exception):
                answer()


class StreamIntake:
    def __init__(
        self,
        store: StreamAcceptanceStore,
        clock: Clock,
        stream: str,
        limits: CommandLimits,
        max_call_bytes: int = MAX_CALL_BYTES,
        dispatcher: Dispatcher | None = None,
        max_call_entries: int = MAX_CALL_ENTRIES,
    ) -> None:
        self._store = store
        self._clock = clock
        self._stream = stream
        self._limits = limits
        self._max_call_bytes = max_call_bytes
        self._max_call_entries = max_call_entries
        self._dispatcher = dispatcher

    @property
    def stream(self) -> str:
        return self._stream

    def read_offset(self) -> str:
        return self._store.read_offset(self._stream)

    def accept(self, offset: str, entries: Sequence[StreamEntry]) -> IntakeResult:
        """Accept ``entries`` (read after ``offset``) in atomic steps, each moving the offset.

        The steps are pipelined: while Redis runs one, the next is decoded and
        built here, so the two work at the same time. Only one is ever in
        flight, and the next is sent only once the one before is answered, so
        it names the offset that one left behind.
        """
        now = self._clock.now_ms()
        handled: list[HandledEntry] = []
        created: list[tuple[int, str]] = []
        in_flight: _Step | None = None
        try:
            for chunk in [*self._chunks(entries), None]:  # None: settle the last step
                step = self._prepare(chunk, now) if chunk is not None else None
                if in_flight is not None:
                    result = in_flight.settle(handled, created)
                    in_flight = None
                    if result.offset_moved:
                        self._dispatch_now(created)
                        return IntakeResult(result.offset, tuple(handled), offset_moved=True)
                    offset = result.offset
                if step is not None:
                    step.answer = self._store.submit_stream_batch(self._stream, offset, step.items)
                    in_flight = step
        except StoreUnavailable as error:
            if not handled:
                raise
            # Earlier steps went in: say so (logs, metrics, dispatch) with the failure.
            self._dispatch_now(created)
            return IntakeResult(offset, tuple(handled), interrupted_by=error)
        finally:
            if in_flight is not None:
                # Failing while a step is in flight: its answer is still read,
                # so the connection it holds is not left with it pending.
                in_flight.drain()
        self._dispatch_now(created)
        return IntakeResult(offset, tuple(handled))

    def _prepare(self, chunk: Sequence[StreamEntry], now: int) -> _Step:
        step = _Step()
        for entry in chunk:
            decoded = decode_command(entry.entry_id, entry.fields, self._limits)
            if isinstance(decoded, MalformedCommand):
                step.items.append(decoded)
                continue
            step.commands[entry.entry_id] = decoded
            delivery, attempt = delivery_from_command(decoded, now)
            step.items.append(
                PendingDelivery(
                    stream_entry_id=entry.entry_id,
                    delivery=delivery,
                    first_attempt=attempt,
                    fingerprint=decoded.fingerprint(),
                    outcome=AcceptanceOutcome.SENT,
                    raw_fields=partial(redacted_raw_fields, entry.fields),
                )
            )
        return step

    def _dispatch_now(self, created: Sequence[tuple[int, str]]) -> None:
        """First attempts go to the workers at once, while claims in flight are below the bound.

        Acceptance already put them in the schedule, due now: what the bound
        (or a failure) leaves unclaimed stays there, untouched, for the scheduler.
        """
        if self._dispatcher is None or not created:
            return
        by_partition: dict[int, list[str]] = {}
        for partition, delivery_id in created:
            by_partition.setdefault(partition, []).append(delivery_id)
        for partition, delivery_ids in by_partition.items():
            self._dispatcher.dispatch_soon(delivery_ids, partition=partition)

    def _chunks(self, entries: Sequence[StreamEntry]) -> list[list[StreamEntry]]:
        chunks: list[list[StreamEntry]] = [[]]
        size = 0
        for entry in entries:
            entry_size = sum(len(name) + len(value) for name, value in entry.fields)
            full = len(chunks[-1]) >= self._max_call_entries
            if chunks[-1] and (full or size + entry_size > self._max_call_bytes):
                chunks.append([])
                size = 0
            chunks[-1].append(entry)
            size += entry_size
        return [chunk for chunk in chunks if chunk]


class StreamTrimmer:
    """Trims the command stream below what has been handled, keeping ``retention`` entries.

    The producer never trims its outbox (DESIGN 4.11), so the poller does.
    Where to trim is read back from the store each time: the newest entry
    at least ``retention`` handled entries behind the stored offset, found
    through the marks written in the same atomic step as the offset
    (``accept_batch.lua``). An entry is therefore trimmed only once it has
    been accepted or recorded malformed, whatever crashed in between. On a
    cluster the stream and the offset live in different slots, so the trim
    is a command of its own after that read; it is still safe, since the
    point it trims through was committed before it was read, and a
    committed offset never goes back.
    """

    def __init__(
        self,
        points: StreamTrimPoints,
        stream: TrimmableStream,
        stream_name: str,
        retention: int,
        *,
        limit: int = TRIM_LIMIT,
        calls: int = TRIM_CALLS,
    ) -> None:
        self._points = points
        self._stream = stream
        self._stream_name = stream_name
        self._retention = retention
        self._limit = limit
        self._calls = calls

    def trim(self) -> int:
        """Trim what may go now; how many entries went."""
        point = self._points.stream_trim_point(self._stream_name, self._retention)
        if point is None:
            return 0
        trimmed = 0
        for _ in range(self._calls):
            deleted = self._stream.trim_through(point, self._limit)
            trimmed += deleted
            if deleted == 0:
                break
        return trimmed


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
    trimmed: int = 0  # stream entries deleted, handled ones beyond the retention
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
        trimmer: StreamTrimmer | None = None,
        trim_interval_ms: int = TRIM_INTERVAL_MS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._intake = intake
        self._stream = stream
        self._lease = lease
        self._observer = observer
        self._batch_size = batch_size
        self._block_ms = block_ms
        self._reserve_ms = reserve_ms
        self._sleep = sleep
        self._trimmer = trimmer
        self._trim_interval_s = trim_interval_ms / 1000
        self._monotonic = monotonic

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
        trim = _TrimSchedule(self._monotonic, self._trim_interval_s)
        while True:
            budget = time_left_ms() - self._reserve_ms
            if budget <= 0:
                report.stopped_because = "time is up"
                self._trim(report, trim, stopping=True)
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
                    self._trim(report, trim, stopping=True)  # idle: catch up now
                    continue
                result = self._intake.accept(offset, entries)
                failures = 0
            except StoreUnavailable as error:
                failures += 1
                self._back_off(report, error, failures, budget)
                continue
            if result.handled:
                report.add(result.handled)
                self._observer.entries_handled(result.handled)
                trim.handled()
            offset = None if result.offset_moved else result.offset
            report.offset = result.offset
            if result.interrupted_by is not None:
                failures += 1
                self._back_off(report, result.interrupted_by, failures, budget)
            else:
                self._trim(report, trim, stopping=False)

    def _trim(self, report: PollReport, schedule: _TrimSchedule, *, stopping: bool) -> None:
        """Trim if entries were handled since the last trim and it is time (or now or never)."""
        if self._trimmer is None or not schedule.due(stopping):
            return
        schedule.trimmed()
        try:
            report.trimmed += self._trimmer.trim()
        except StoreUnavailable as error:
            # Nothing is lost: the next trim deletes what this one did not.
            report.store_errors += 1
            self._observer.store_unavailable(error)

    def _back_off(
        self, report: PollReport, error: StoreUnavailable, failures: int, budget: int
    ) -> None:
        # Redis dropped or stalled: the client reconnects on the next
        # command; back off a little so a dead Redis is not hammered.
        report.store_errors += 1
        self._observer.store_unavailable(error)
        self._sleep(min(0.05 * 2**failures, 1.0, max(budget, 0) / 1000))


class _TrimSchedule:
    """When the poller trims: once entries were handled, at most every ``interval_s``."""

    def __init__(self, monotonic: Callable[[], float], interval_s: float) -> None:
        self._monotonic = monotonic
        self._interval_s = interval_s
        self._pending = False  # entries handled since the last trim
        self._last = -interval_s

    def handled(self) -> None:
        self._pending = True

    def due(self, stopping: bool) -> bool:
        if not self._pending:
            return False
        return stopping or self._monotonic() - self._last >= self._interval_s

    def trimmed(self) -> None:
        self._pending = False
        self._last = self._monotonic()
