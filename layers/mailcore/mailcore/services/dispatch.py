"""Hand due attempts to the workers: claim them, queue them, give back what did not go."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from mailcore.errors import StoreUnavailable
from mailcore.ports import AttemptQueue, AttemptStore, Clock


@dataclass(frozen=True, slots=True)
class DispatchResult:
    claimed: int = 0
    queued: int = 0
    released: int = 0  # claimed but refused by the queue: due again at once


class Dispatcher:
    """Used by the scheduler for due work, and by both intakes for a first attempt.

    A claim lives ``claim_timeout`` (the SMTP timeout plus 30 s); if its worker
    never reports, the scheduler's recovery takes it back.
    """

    def __init__(
        self, store: AttemptStore, queue: AttemptQueue, clock: Clock, claim_timeout: timedelta
    ) -> None:
        self._store = store
        self._queue = queue
        self._clock = clock
        self._claim_timeout_ms = int(claim_timeout.total_seconds() * 1000)

    def dispatch(self, delivery_ids: Sequence[str]) -> DispatchResult:
        """Claim these deliveries if they are due, and queue them."""
        if not delivery_ids:
            return DispatchResult()
        now = self._clock.now_ms()
        claims = self._store.claim(delivery_ids, now, now + self._claim_timeout_ms)
        if not claims:
            return DispatchResult()
        refused = self._queue.send(claims)
        released = self._store.release(refused, now) if refused else 0
        return DispatchResult(len(claims), len(claims) - len(refused), released)

    def dispatch_soon(self, delivery_ids: Sequence[str]) -> int:
        """The intakes' and resend's fast path: best effort, never raises.

        The deliveries are already accepted and due in the schedule, so if
        Redis fails here the scheduler dispatches them on its next poll.
        Returns how many went to the queue.
        """
        try:
            return self.dispatch(delivery_ids).queued
        except StoreUnavailable:
            return 0

    def dispatch_due(self, limit: int) -> DispatchResult:
        """Claim and queue up to ``limit`` deliveries whose attempt is due."""
        due = self._store.due_delivery_ids(self._clock.now_ms(), limit)
        return self.dispatch(due)
