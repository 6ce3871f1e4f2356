"""The scheduler's loop: dispatch due attempts, take back expired claims."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from mailcore.errors import StoreUnavailable
from mailcore.ports import AttemptStore, Clock, Lease, ScheduleStats
from mailcore.services.dispatch import Dispatcher
from mailcore.services.leased import run_under_lease

RECOVERY_INTERVAL_MS = 30_000
# Expired claims taken back per script call; a recovery loops over such
# batches until none that expired is left (or the invocation's time is up).
RECOVERY_BATCH = 100


class SchedulerObserver(Protocol):
    def recovered(self, recoveries: list[tuple[str, str]]) -> None: ...

    def schedule_stats(self, stats: ScheduleStats) -> None: ...

    def store_unavailable(self, error: StoreUnavailable) -> None: ...


@dataclass
class SchedulerReport:
    lease_acquired: bool = False
    polls: int = 0
    claimed: int = 0
    queued: int = 0
    released: int = 0
    recovered: int = 0
    store_errors: int = 0
    stopped_because: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Scheduler:
    """One invocation: hold the lease, poll every interval until little time is left.

    Each poll claims up to ``claims_per_poll`` due attempts (more at once when
    a backlog is found, poll after poll without sleeping), within the
    dispatcher's bound on claims in flight, and hands them to the workers.
    Every 30 s, and at the start, every expired claim is taken back, in
    batches, renewing the lease between them, and the gauges (the schedule,
    the claims, the deliveries per status) are read: a few O(1) reads per
    partition twice a minute, rather than at every poll.
    """

    def __init__(
        self,
        stores: AttemptStore | Sequence[AttemptStore],
        dispatcher: Dispatcher,
        lease: Lease,
        observer: SchedulerObserver,
        clock: Clock,
        *,
        poll_interval_ms: int,
        claims_per_poll: int,
        reserve_ms: int = 3000,
        recovery_batch: int = RECOVERY_BATCH,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._stores = list(stores) if isinstance(stores, Sequence) else [stores]
        self._dispatcher = dispatcher
        self._lease = lease
        self._observer = observer
        self._clock = clock
        self._poll_interval_ms = poll_interval_ms
        self._claims_per_poll = claims_per_poll
        self._reserve_ms = reserve_ms
        self._recovery_batch = recovery_batch
        self._sleep = sleep

    def run(self, time_left_ms: Callable[[], int]) -> SchedulerReport:
        return run_under_lease(
            self._lease,
            self._observer,
            SchedulerReport(),
            lambda report: self._loop(time_left_ms, report),
            holder="scheduler",
        )

    def _loop(self, time_left_ms: Callable[[], int], report: SchedulerReport) -> None:
        next_recovery = 0
        failures = 0
        while time_left_ms() > self._reserve_ms:
            busy = False
            try:
                if not self._lease.renew():
                    report.stopped_because = "lease lost"
                    return
                now = self._clock.now_ms()
                if now >= next_recovery:
                    if not self._recover(now, time_left_ms, report):
                        report.stopped_because = "lease lost"
                        return
                    self._observer.schedule_stats(self._stats(now))
                    next_recovery = now + RECOVERY_INTERVAL_MS
                result = self._dispatcher.dispatch_due(self._claims_per_poll)
                report.polls += 1
                report.claimed += result.claimed
                report.queued += result.queued
                report.released += result.released
                busy = result.saturated
                failures = 0
            except StoreUnavailable as error:
                report.store_errors += 1
                self._observer.store_unavailable(error)
                failures += 1
                self._sleep(min(0.05 * 2**failures, 1.0))
                continue
            if not busy:
                self._sleep(self._poll_interval_ms / 1000)
        report.stopped_because = "time is up"

    def _recover(self, now: int, time_left_ms: Callable[[], int], report: SchedulerReport) -> bool:
        """Take back every claim that expired before ``now``, a batch at a time.

        Stops at the first batch that is not full (nothing more expired, or a
        claim changed under it: the next recovery sees it), or when the
        invocation's time is up. The lease is renewed between batches, as
        between polls; False when it was lost.
        """
        for store in self._stores:
            while True:
                recoveries = store.recover_expired(now, self._recovery_batch)
                report.recovered += len(recoveries)
                if recoveries:
                    self._observer.recovered(recoveries)
                if time_left_ms() <= self._reserve_ms:
                    return True
                if len(recoveries) < self._recovery_batch:
                    break
                if not self._lease.renew():
                    return False
        return True

    def _stats(self, now: int) -> ScheduleStats:
        """The schedule's gauges over every partition."""
        each = [store.stats(now) for store in self._stores]
        by_status: Counter[str] = Counter()
        for stats in each:
            by_status.update(stats.by_status)
        return ScheduleStats(
            depth=sum(s.depth for s in each),
            oldest_due_age_ms=max(s.oldest_due_age_ms for s in each),
            claimed=sum(s.claimed for s in each),
            by_status=dict(by_status),  # zeros kept: a gauge at 0 says so
        )
