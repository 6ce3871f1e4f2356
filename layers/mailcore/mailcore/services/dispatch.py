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

    ``max_claims_in_flight`` bounds the claims outstanding at once
    (``MAIL_MAX_CLAIMS_IN_FLIGHT``): a bounded dispatch claims only while the
    claims set is below it, and leaves the rest due in the schedule, where the
    scheduler finds it once workers have made room. The queue then never holds
    more than the workers reach before a claim's deadline. Only the auth
    intake dispatches unbounded (``bounded=False``).
    """

    def __init__(
        self,
        store: AttemptStore,
        queue: AttemptQueue,
        clock: Clock,
        claim_timeout: timedelta,
        max_claims_in_flight: int | None = None,
    ) -> None:
        self._store = store
        self._queue = queue
        self._clock = clock
        self._claim_timeout_ms = int(claim_timeout.total_seconds() * 1000)
        self._max_claims_in_flight = max_claims_in_flight

    @property
    def max_claims_in_flight(self) -> int | None:
        return self._max_claims_in_flight

    def dispatch(self, delivery_ids: Sequence[str], *, bounded: bool = True) -> DispatchResult:
        """Claim these deliveries if due (and, if bounded, while there is room); queue them."""
        if not delivery_ids:
            return DispatchResult()
        now = self._clock.now_ms()
        bound = self._max_claims_in_flight if bounded else None
        claims = self._store.claim(delivery_ids, now, now + self._claim_timeout_ms, bound)
        if not claims:
            return DispatchResult()
        refused = self._queue.send(claims)
        released = self._store.release(refused, now) if refused else 0
        return DispatchResult(len(claims), len(claims) - len(refused), released)

    def dispatch_soon(self, delivery_ids: Sequence[str], *, bounded: bool = True) -> int:
        """The intakes' and resend's fast path: best effort, never raises.

        The deliveries are already accepted and due in the schedule, so if
        Redis fails here, or the bound leaves no room for some of them, the
        scheduler dispatches them on a later poll, exactly as if this had
        never run. Returns how many went to the queue.
        """
        try:
            return self.dispatch(delivery_ids, bounded=bounded).queued
        except StoreUnavailable:
            return 0

    def dispatch_due(self, limit: int) -> DispatchResult:
        """Claim and queue up to ``limit`` deliveries whose attempt is due, within the bound."""
        due = self._store.due_delivery_ids(self._clock.now_ms(), limit)
        return self.dispatch(due)
