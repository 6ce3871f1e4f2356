"""Hand due attempts to the workers: claim them, queue them, give back what did not go."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from math import ceil

from mailcore.deadlines import DeadlineExceeded, run_within
from mailcore.errors import StoreUnavailable
from mailcore.ports import AttemptQueue, AttemptStore, ClaimedAttempt, Clock

# The fast path's whole budget (claim and queue), whatever SQS does. SQS
# answers in tens of milliseconds; past this the answer to the caller would
# wait for a send the scheduler does within one poll (250 ms) anyway.
FAST_PATH_LIMIT_MS = 300
# Kept back from the invocation's remaining time: giving the claims back
# (one Redis call, bounded by MAIL_REDIS_OPERATION_TIMEOUT) and answering.
FAST_PATH_RESERVE_MS = 1000


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

    The intakes' fast path (:meth:`dispatch_soon`) is best effort and bounded
    in wall time: at most ``FAST_PATH_LIMIT_MS``, and never past the
    invocation's remaining time less ``FAST_PATH_RESERVE_MS``. Claims whose
    queue send has not finished by then are given back to the schedule, due
    at once, for the scheduler; if the send still lands later, the worker
    finds the claim token spent and skips it, so the mail goes out once.

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
        self,
        delivery_ids: Sequence[str],
        *,
        bounded: bool = True,
        partition: int = 0,
        deadline: float | None = None,
    ) -> DispatchResult:
        """Claim these deliveries of one partition if due (and, if bounded, while there
        is room); queue them.

        With a ``deadline`` (``time.monotonic()`` seconds), claims not known
        to be queued by then are released, as if the queue had refused them.
        """
        if not delivery_ids:
            return DispatchResult()
        store = self._stores[partition]
        now = self._clock.now_ms()
        bound = self._bounds[partition] if bounded else None
        claims = store.claim(delivery_ids, now, now + self._claim_timeout_ms, bound)
        if not claims:
            return DispatchResult()
        refused = self._queue.send(claims) if deadline is None else self._send_by(claims, deadline)
        released = store.release(refused, now) if refused else 0
        return DispatchResult(len(claims), len(claims) - len(refused), released)

    def dispatch_soon(
        self,
        delivery_ids: Sequence[str],
        *,
        bounded: bool = True,
        partition: int = 0,
        time_left_ms: Callable[[], int] | None = None,
    ) -> int:
        """The intakes' and resend's fast path: best effort, bounded in time, never raises.

        The deliveries are already accepted and due in the schedule, so if
        Redis fails here, the bound leaves no room for some of them, or the
        queue does not take them in time, the scheduler dispatches them on a
        later poll, exactly as if this had never run. ``time_left_ms`` is
        the invocation's remaining time, when the caller has one. Returns how
        many went to the queue.
        """
        budget_ms = FAST_PATH_LIMIT_MS
        if time_left_ms is not None:
            budget_ms = min(budget_ms, time_left_ms() - FAST_PATH_RESERVE_MS)
        if budget_ms <= 0:
            return 0
        deadline = time.monotonic() + budget_ms / 1000
        try:
            return self.dispatch(
                delivery_ids, bounded=bounded, partition=partition, deadline=deadline
            ).queued
        except StoreUnavailable:
            return 0

    def _send_by(self, claims: Sequence[ClaimedAttempt], deadline: float) -> list[ClaimedAttempt]:
        """Queue the claims; any not known to be queued by ``deadline`` count as refused."""
        try:
            return run_within(
                deadline - time.monotonic(), lambda: self._queue.send(claims), name="fast-dispatch"
            )
        except DeadlineExceeded:
            return list(claims)

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
