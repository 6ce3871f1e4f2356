"""Hand due attempts to the workers: claim them, queue them, give back what did not go."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from math import ceil

from mailcore.errors import StoreUnavailable
from mailcore.ports import AttemptQueue, AttemptStore, Clock


@dataclass(frozen=True, slots=True)
class DispatchResult:
    claimed: int = 0
    queued: int = 0
    released: int = 0  # claimed but refused by the queue: due again at once
    saturated: bool = False  # a partition had more due than it was asked for: poll again


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

    With several partitions (one attempt store each) every partition keeps
    its own claims set, so each gets an equal share of the bound.
    """

    def __init__(
        self,
        stores: AttemptStore | Sequence[AttemptStore],
        queue: AttemptQueue,
        clock: Clock,
        claim_timeout: timedelta,
        max_claims_in_flight: int | None = None,
    ) -> None:
        self._stores = list(stores) if isinstance(stores, Sequence) else [stores]
        self._queue = queue
        self._clock = clock
        self._claim_timeout_ms = int(claim_timeout.total_seconds() * 1000)
        self._max_claims_in_flight = max_claims_in_flight
        # Shares add up to the bound (each at least 1, or a partition would never send).
        partitions = len(self._stores)
        self._bounds: list[int | None] = [
            None
            if max_claims_in_flight is None
            else max(
                1, max_claims_in_flight // partitions + (n < max_claims_in_flight % partitions)
            )
            for n in range(partitions)
        ]

    @property
    def max_claims_in_flight(self) -> int | None:
        return self._max_claims_in_flight

    def dispatch(
        self, delivery_ids: Sequence[str], *, bounded: bool = True, partition: int = 0
    ) -> DispatchResult:
        """Claim these deliveries of one partition if due (and, if bounded, while there
        is room); queue them."""
        if not delivery_ids:
            return DispatchResult()
        store = self._stores[partition]
        now = self._clock.now_ms()
        bound = self._bounds[partition] if bounded else None
        claims = store.claim(delivery_ids, now, now + self._claim_timeout_ms, bound)
        if not claims:
            return DispatchResult()
        refused = self._queue.send(claims)
        released = store.release(refused, now) if refused else 0
        return DispatchResult(len(claims), len(claims) - len(refused), released)

    def dispatch_soon(
        self, delivery_ids: Sequence[str], *, bounded: bool = True, partition: int = 0
    ) -> int:
        """The intakes' and resend's fast path: best effort, never raises.

        The deliveries are already accepted and due in the schedule, so if
        Redis fails here, or the bound leaves no room for some of them, the
        scheduler dispatches them on a later poll, exactly as if this had
        never run. Returns how many went to the queue.
        """
        try:
            return self.dispatch(delivery_ids, bounded=bounded, partition=partition).queued
        except StoreUnavailable:
            return 0

    def dispatch_due(self, limit: int) -> DispatchResult:
        """Claim and queue up to ``limit`` deliveries whose attempt is due, within the bound.

        With several partitions each is asked for its share of ``limit``.
        """
        share = max(1, ceil(limit / len(self._stores)))
        claimed = queued = released = 0
        saturated = False
        for partition, store in enumerate(self._stores):
            due = store.due_delivery_ids(self._clock.now_ms(), share)
            result = self.dispatch(due, partition=partition)
            claimed += result.claimed
            queued += result.queued
            released += result.released
            saturated |= result.claimed == share and result.released == 0
        return DispatchResult(claimed, queued, released, saturated)
