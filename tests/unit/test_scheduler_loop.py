"""The scheduler's loop against in-memory ports: recovery in batches, lease, time, gauges."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, cast

from aws_lambda_powertools import Logger, Metrics

from mailcore.errors import StoreUnavailable
from mailcore.ports import ClaimedAttempt, ScheduleStats
from mailcore.services.dispatch import Dispatcher
from mailcore.services.scheduler import Scheduler
from mailcore.telemetry import Metric, SchedulerTelemetry
from tests.support.fakes import FixedClock, ScriptedLease


class ExpiredClaims:
    """An AttemptStore with ``expired`` claims past their deadline and nothing due."""

    def __init__(self, expired: int) -> None:
        self.expired = expired
        self.batches: list[int] = []

    def recover_expired(self, now_ms: int, limit: int = 100) -> list[tuple[str, str]]:
        taken = min(limit, self.expired)
        self.expired -= taken
        self.batches.append(taken)
        return [(f"d-{self.expired + n}", "rescheduled") for n in range(taken)]

    def stats(self, now_ms: int) -> ScheduleStats:
        return ScheduleStats(depth=0, oldest_due_age_ms=0, claimed=0)

    def due_delivery_ids(self, now_ms: int, limit: int) -> list[str]:
        return []


class CountedPartition(ExpiredClaims):
    """A partition with nothing to recover and these deliveries per status."""

    def __init__(self, by_status: dict[str, int]) -> None:
        super().__init__(0)
        self.by_status = by_status

    def stats(self, now_ms: int) -> ScheduleStats:
        return ScheduleStats(depth=1, oldest_due_age_ms=5, claimed=2, by_status=self.by_status)


class NoQueue:
    def send(self, claims: Sequence[ClaimedAttempt]) -> list[ClaimedAttempt]:
        return []


class Observer:
    def __init__(self) -> None:
        self.recovered_batches: list[int] = []
        self.stats: list[ScheduleStats] = []

    def recovered(self, recoveries: list[tuple[str, str]]) -> None:
        self.recovered_batches.append(len(recoveries))

    def schedule_stats(self, stats: ScheduleStats) -> None:
        self.stats.append(stats)

    def store_unavailable(self, error: StoreUnavailable) -> None:
        pass


class CountingLease(ScriptedLease):
    def __init__(self, renewals: int = 1_000_000) -> None:
        super().__init__(renewals=renewals)
        self.renewed = 0

    def renew(self) -> bool:
        self.renewed += 1
        return super().renew()


def calls_left(count: int) -> Callable[[], int]:
    """time_left_ms that answers plenty of time ``count`` times, then time up."""
    remaining = [count]

    def time_left_ms() -> int:
        remaining[0] -= 1
        return 60_000 if remaining[0] >= 0 else 0

    return time_left_ms


def scheduler(store: ExpiredClaims, lease: ScriptedLease, observer: Observer) -> Scheduler:
    clock = FixedClock()
    typed_store = cast(Any, store)
    return Scheduler(
        typed_store,
        Dispatcher(typed_store, NoQueue(), clock, timedelta(seconds=45), 200),
        lease,
        observer,
        clock,
        poll_interval_ms=250,
        claims_per_poll=40,
        sleep=lambda _: None,
    )


def test_one_recovery_takes_back_every_expired_claim_in_batches() -> None:
    # Given 1,050 expired claims (far more than one batch of 100)
    store, lease, observer = ExpiredClaims(1_050), CountingLease(), Observer()

    # When one scheduler loop turn runs
    report = scheduler(store, lease, observer).run(calls_left(30))

    # Then all of them were taken back at once, in batches of 100, the lease
    # renewed between batches, and each batch reported
    assert report.recovered == 1_050
    assert store.batches == [100] * 10 + [50]
    assert observer.recovered_batches == [100] * 10 + [50]
    assert lease.renewed >= 11
    assert report.stopped_because == "time is up"


def test_recovery_stops_when_the_lease_is_lost_between_batches() -> None:
    # Given a lease that can be renewed only three times (once for the loop turn)
    store, observer = ExpiredClaims(1_000), Observer()

    # When the scheduler recovers
    report = scheduler(store, CountingLease(renewals=3), observer).run(calls_left(30))

    # Then it stops after the batch whose renewal failed, and says so
    assert report.recovered == 300
    assert store.expired == 700
    assert report.stopped_because == "lease lost"


def test_recovery_stops_when_the_invocation_runs_out_of_time() -> None:
    # Given time for the loop turn and two more checks
    store, observer = ExpiredClaims(1_000), Observer()

    # When the scheduler recovers
    report = scheduler(store, CountingLease(), observer).run(calls_left(3))

    # Then it takes back what it could before the reserve, and leaves the rest
    assert report.recovered == 300
    assert store.expired == 700
    assert report.stopped_because == "time is up"


class RecordingMetrics:
    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def add_metric(self, name: str, unit: Any, value: float) -> None:
        self.values[name] = value


def test_the_schedule_gauges_include_the_claims_in_flight() -> None:
    metrics = RecordingMetrics()
    telemetry = SchedulerTelemetry(Logger(service="test"), cast(Metrics, metrics))

    telemetry.schedule_stats(ScheduleStats(depth=12, oldest_due_age_ms=3_000, claimed=200))

    assert metrics.values == {
        Metric.SCHEDULE_DEPTH: 12,
        Metric.OLDEST_SCHEDULED_AGE: 3_000,
        Metric.CLAIMS_IN_FLIGHT: 200,
    }


def test_the_deliveries_per_status_are_added_up_over_the_partitions() -> None:
    # Given two partitions' status indexes
    partitions = [
        CountedPartition({"queued": 3, "sending": 1, "sent": 40, "failed": 0}),
        CountedPartition({"queued": 2, "sending": 0, "sent": 2, "failed": 0}),
    ]
    clock = FixedClock()
    stores = cast(Any, partitions)
    observer = Observer()

    # When one scheduler turn reads the gauges
    Scheduler(
        stores,
        Dispatcher(stores, NoQueue(), clock, timedelta(seconds=45), 200),
        CountingLease(),
        observer,
        clock,
        poll_interval_ms=250,
        claims_per_poll=40,
        sleep=lambda _: None,
    ).run(calls_left(2))

    # Then each status is the sum over the partitions, and a status at zero says so
    [stats] = observer.stats
    assert stats.by_status == {"queued": 5, "sending": 1, "sent": 42, "failed": 0}
    assert (stats.depth, stats.oldest_due_age_ms, stats.claimed) == (2, 5, 4)
