"""The ports the application services depend on; adapters implement them.

Services receive these through their constructors, so tests can hand them
in-memory fakes and the Lambda composition roots hand them Redis adapters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mailcore.contracts.malformed import MalformedCommand
from mailcore.domain.clock import Clock
from mailcore.domain.ids import IdGenerator
from mailcore.domain.model import Attempt, Delivery
from mailcore.domain.states import AttemptStatus, ProviderOutcome

__all__ = [
    "AcceptanceResult",
    "AcceptanceStore",
    "AttemptQueue",
    "AttemptStore",
    "ClaimedAttempt",
    "ClaimedDelivery",
    "Clock",
    "CommandStream",
    "CompletionResult",
    "DeadLetter",
    "DeliveryFilters",
    "DeliveryQueries",
    "EntryVerdict",
    "IdGenerator",
    "Lease",
    "MailProvider",
    "Page",
    "PendingDelivery",
    "ScheduleStats",
    "SendResult",
    "StartResult",
    "StartVerdict",
    "StreamAcceptanceStore",
    "StreamBatchResult",
    "StreamEntry",
    "StreamEntryResult",
]


@dataclass(frozen=True, slots=True)
class AcceptanceResult:
    """What the store did with an acceptance request."""

    created: bool  # False: the idempotency key was already reserved
    delivery_id: str  # the new delivery, or the one the key already points at
    outcome: str  # the outcome recorded with the key
    fingerprint_matches: bool  # for a duplicate: was it the same request?
    partition: int = 0  # where the delivery lives (its first attempt is claimed there)


class AcceptanceStore(Protocol):
    def accept(
        self,
        delivery: Delivery,
        first_attempt: Attempt | None,
        *,
        fingerprint: str,
        outcome: str,
    ) -> AcceptanceResult:
        """Atomically reserve the idempotency key and store, index and schedule the delivery.

        Raises ``StoreUnavailable`` when the store cannot be reached; then
        nothing, or the whole acceptance, was written, never a part.
        """
        ...


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One raw entry of the command stream, bytes as Redis holds them."""

    entry_id: str
    fields: tuple[tuple[bytes, bytes], ...]  # in order; a name may repeat


def stream_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``<ms>-<seq>``) as what orders it: compare these, not the text."""
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


class CommandStream(Protocol):
    def read_after(self, offset: str, count: int, block_ms: int) -> list[StreamEntry]:
        """Entries after ``offset``, waiting up to ``block_ms`` for the first one."""
        ...


class TrimmableStream(Protocol):
    def trim_through(self, entry_id: str, limit: int) -> int:
        """Delete entries up to ``entry_id``, never one after it; at most ``limit`` at once.

        Approximately: whole storage nodes only, so a few entries at or below
        ``entry_id`` may stay. Answers how many were deleted.
        """
        ...


class StreamTrimPoints(Protocol):
    def stream_trim_point(self, stream: str, retention: int) -> str | None:
        """The newest handled entry that may go, keeping the last ``retention`` handled ones.

        None while there is nothing to trim. Never an entry after the stored offset.
        """
        ...


@dataclass(frozen=True, slots=True)
class PendingDelivery:
    """A decoded stream command, ready to be accepted."""

    stream_entry_id: str
    delivery: Delivery
    first_attempt: Attempt | None
    fingerprint: str
    outcome: str
    # The entry's fields as an operator may see them (redacted, truncated),
    # recorded if the store finds the command conflicting. Computed only
    # then: for an entry that is accepted it would be wasted work.
    raw_fields: Callable[[], Mapping[str, str]]


class EntryVerdict(StrEnum):
    CREATED = "created"
    DUPLICATE = "duplicate"  # the same command was accepted before: nothing written
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class StreamEntryResult:
    stream_entry_id: str
    verdict: EntryVerdict
    delivery_id: str | None = None
    failure_code: str | None = None
    partition: int = 0  # where the delivery lives


@dataclass(frozen=True, slots=True)
class StreamBatchResult:
    offset_moved: bool  # True: another poller advanced the offset; nothing was written
    offset: str  # the stored offset after the call
    entries: tuple[StreamEntryResult, ...] = ()


class StreamAcceptanceStore(Protocol):
    def read_offset(self, stream: str) -> str:
        """The id of the last entry handled, ``0-0`` before the first."""
        ...

    def accept_stream_batch(
        self,
        stream: str,
        expected_offset: str,
        items: Sequence[PendingDelivery | MalformedCommand],
    ) -> StreamBatchResult:
        """Accept or record every item and advance the offset to the last one, atomically.

        Writes nothing if the stored offset no longer equals ``expected_offset``.
        """
        ...

    def submit_stream_batch(
        self,
        stream: str,
        expected_offset: str,
        items: Sequence[PendingDelivery | MalformedCommand],
    ) -> Callable[[], StreamBatchResult]:
        """``accept_stream_batch`` without waiting for the answer.

        The batch is on its way when this returns; calling the result waits
        for its outcome (and raises what ``accept_stream_batch`` would). The
        caller builds its next batch meanwhile, and calls the result, exactly
        once, before it submits another.
        """
        ...


class Lease(Protocol):
    """A lease on a singleton job, held by one token at a time."""

    def acquire(self) -> bool: ...

    def renew(self) -> bool:
        """Extend the lease; False when it was lost (expired and taken)."""
        ...

    def release(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SendResult:
    """A provider's classified answer to one message."""

    outcome: ProviderOutcome
    # provider_accepted, provider_rejected, transport_failed or timed_out
    attempt_status: AttemptStatus
    summary: str  # one line, at most 300 characters, secrets removed: safe to store and show
    duration_ms: int


class MailProvider(Protocol):
    """Sends one message to one envelope. Implementations: SMTP and the stub."""

    def send(
        self,
        message: EmailMessage,
        *,
        envelope_from: str,
        recipients: Sequence[str],
        secrets: Sequence[str] = (),
    ) -> SendResult:
        """Never raises for a delivery problem: every failure is a classified SendResult.

        ``secrets`` are values (a login code) that must not appear in the summary.
        """
        ...

    def close(self) -> None:
        """End of a worker batch: close any connection kept open across messages."""
        ...


@dataclass(frozen=True, slots=True)
class ClaimedAttempt:
    """A due attempt a worker may execute while the claim token is valid."""

    delivery_id: str
    attempt_no: int
    claim_token: str
    partition: int = 0  # the store partition holding the delivery


class AttemptQueue(Protocol):
    def send(self, claims: Sequence[ClaimedAttempt]) -> list[ClaimedAttempt]:
        """Queue claimed attempts for the workers; return those that could not be queued."""
        ...


class StartVerdict(StrEnum):
    STARTED = "started"  # the delivery is `sending`: go ahead and send
    FAILED = "failed"  # a render failure was recorded: the delivery is `failed`
    REFUSED = "refused"  # stale or duplicate work: do nothing


@dataclass(frozen=True, slots=True)
class StartResult:
    verdict: StartVerdict
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class CompletionResult:
    completed: bool
    status: str | None = None  # the delivery's new status when completed
    reason: str | None = None  # why it was refused otherwise


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """What a worker reads before starting: the delivery and the live claim on it."""

    delivery: Delivery
    claim_token: str | None
    attempt_status: AttemptStatus | None


@dataclass(frozen=True, slots=True)
class ScheduleStats:
    depth: int  # deliveries waiting in the schedule
    oldest_due_age_ms: int  # how overdue the most overdue one is (0 when none is due)
    claimed: int  # deliveries handed to workers right now
    # Deliveries per status, from the status indexes: exact for the live
    # statuses; a settled one counts until it expires (MAIL_DELIVERY_TTL) and
    # the cleanup removes its index member.
    by_status: Mapping[str, int] = field(default_factory=dict)


class ClaimedAttemptSteps(Protocol):
    """What a worker does with a claim: read it, start the attempt, record its outcome."""

    def read_claimed(self, claim: ClaimedAttempt) -> ClaimedDelivery | None: ...

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
    ) -> StartResult: ...

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
    ) -> CompletionResult: ...


class AttemptStore(ClaimedAttemptSteps, Protocol):
    """Claims, attempts and recovery; every change atomic and token-checked."""

    @property
    def retry_schedule(self) -> tuple[timedelta, ...]: ...

    def due_delivery_ids(self, now_ms: int, limit: int) -> list[str]: ...

    def claim(
        self,
        delivery_ids: Sequence[str],
        now_ms: int,
        deadline_ms: int,
        max_in_flight: int | None = None,
    ) -> list[ClaimedAttempt]: ...

    def release(self, claims: Sequence[ClaimedAttempt], now_ms: int) -> int: ...

    def recover_expired(self, now_ms: int, limit: int = ...) -> list[tuple[str, str]]: ...

    def stats(self, now_ms: int) -> ScheduleStats: ...


@dataclass(frozen=True, slots=True)
class DeliveryFilters:
    recipient: str | None = None
    status: str | None = None
    source: str | None = None
    template_id: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Page[T]:
    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    delivery_id: str
    attempts: int
    last_outcome: str | None
    last_summary: str | None
    dead_lettered_at_ms: int
    delivery: Delivery | None


class DeliveryQueries(Protocol):
    """Operator reads; pages cost what the page needs, not what the store holds."""

    def delivery(self, delivery_id: str) -> Delivery | None: ...

    def attempts(self, delivery_id: str, attempt_count: int | None) -> list[Attempt]:
        """The delivery's attempts still kept, oldest first.

        ``attempt_count`` is the delivery's, or None when the delivery has
        expired: attempts are kept longer (``MAIL_ATTEMPT_TTL``), and are
        then found by their own keys.
        """
        ...

    def deliveries(
        self, filters: DeliveryFilters, limit: int, cursor: str | None
    ) -> Page[Delivery]: ...

    def malformed_command(self, stream_entry_id: str) -> dict[str, str] | None: ...

    def malformed_commands(self, limit: int, cursor: str | None) -> Page[dict[str, str]]: ...

    def dead_letters(self, limit: int, cursor: str | None) -> Page[DeadLetter]: ...
