"""Delivery and attempt life cycles: the one explicit transition table.

A forbidden transition raises :class:`ForbiddenTransition`; nothing in the
service overwrites a status without asking :func:`check_delivery_transition`
or :func:`check_attempt_transition` first.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class DeliveryStatus(StrEnum):
    ACCEPTED = "accepted"  # durably stored, not yet queued for an attempt
    QUEUED = "queued"  # waiting for its next attempt in the schedule
    RENDERED = "rendered"  # a worker claimed it and rendered the message
    SENDING = "sending"  # handed to the provider, outcome not yet recorded
    SENT = "sent"  # the provider accepted the message
    SUPPRESSED = "suppressed"  # deliberately not sent; not a failure
    FAILED = "failed"  # permanent provider rejection or render failure
    DEAD_LETTER = "dead_letter"  # transient failures exhausted the retry ladder


class AttemptStatus(StrEnum):
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"  # rendered and handed to the provider
    PROVIDER_ACCEPTED = "provider_accepted"
    PROVIDER_REJECTED = "provider_rejected"
    TRANSPORT_FAILED = "transport_failed"
    TIMED_OUT = "timed_out"
    RENDER_FAILED = "render_failed"  # the message could not be built: no provider was contacted


class ProviderOutcome(StrEnum):
    """How a provider's answer is classified."""

    ACCEPTED = "accepted"
    SUPPRESSED = "suppressed"
    TRANSIENT_FAILURE = "transient_failure"
    PERMANENT_FAILURE = "permanent_failure"


class ForbiddenTransition(Exception):
    """A status change that the life cycle does not allow."""

    def __init__(self, kind: str, current: str, target: str) -> None:
        super().__init__(f"{kind} cannot move from {current!r} to {target!r}")
        self.kind = kind
        self.current = current
        self.target = target


_D = DeliveryStatus
DELIVERY_TRANSITIONS: Mapping[DeliveryStatus, frozenset[DeliveryStatus]] = {
    # Acceptance either queues the first attempt or settles at once
    # (stub mode suppresses; an unrenderable template fails).
    _D.ACCEPTED: frozenset({_D.QUEUED, _D.SUPPRESSED, _D.FAILED}),
    # A claimed delivery is rendered, or fails to render. A claim whose
    # worker died before rendering is recovered and dead-lettered if the
    # ladder is exhausted.
    _D.QUEUED: frozenset({_D.RENDERED, _D.FAILED, _D.DEAD_LETTER}),
    # A worker that died after rendering leaves it to recovery: back to the
    # schedule, or dead-lettered when the ladder is spent.
    _D.RENDERED: frozenset({_D.SENDING, _D.QUEUED, _D.DEAD_LETTER}),
    # The provider's classified answer settles the attempt; transient
    # failures go back to the schedule until the ladder is spent.
    _D.SENDING: frozenset({_D.SENT, _D.SUPPRESSED, _D.FAILED, _D.QUEUED, _D.DEAD_LETTER}),
    # Terminal: a resend creates a linked clone, the parent never changes.
    _D.SENT: frozenset(),
    _D.SUPPRESSED: frozenset(),
    _D.FAILED: frozenset(),
    _D.DEAD_LETTER: frozenset(),
}

_A = AttemptStatus
ATTEMPT_TRANSITIONS: Mapping[AttemptStatus, frozenset[AttemptStatus]] = {
    # A scheduled attempt is claimed by a worker, which renders it: it goes
    # on to the provider, or ends there when the message cannot be built.
    # Recovery of a delivery whose claim expired before the attempt started
    # times it out.
    _A.SCHEDULED: frozenset({_A.IN_PROGRESS, _A.RENDER_FAILED, _A.TIMED_OUT}),
    _A.IN_PROGRESS: frozenset(
        {_A.PROVIDER_ACCEPTED, _A.PROVIDER_REJECTED, _A.TRANSPORT_FAILED, _A.TIMED_OUT}
    ),
    _A.PROVIDER_ACCEPTED: frozenset(),
    _A.PROVIDER_REJECTED: frozenset(),
    _A.TRANSPORT_FAILED: frozenset(),
    _A.TIMED_OUT: frozenset(),
    _A.RENDER_FAILED: frozenset(),
}

TERMINAL_DELIVERY_STATUSES = frozenset(s for s, nxt in DELIVERY_TRANSITIONS.items() if not nxt)
TERMINAL_ATTEMPT_STATUSES = frozenset(s for s, nxt in ATTEMPT_TRANSITIONS.items() if not nxt)
RESENDABLE_STATUSES = frozenset({_D.SENT, _D.SUPPRESSED, _D.FAILED, _D.DEAD_LETTER})


def check_delivery_transition(current: DeliveryStatus, target: DeliveryStatus) -> None:
    if target not in DELIVERY_TRANSITIONS[current]:
        raise ForbiddenTransition("delivery", current, target)


def check_attempt_transition(current: AttemptStatus, target: AttemptStatus) -> None:
    if target not in ATTEMPT_TRANSITIONS[current]:
        raise ForbiddenTransition("attempt", current, target)


def is_resendable(status: DeliveryStatus) -> bool:
    """Only settled deliveries may be resent (as a clone)."""
    return status in RESENDABLE_STATUSES
