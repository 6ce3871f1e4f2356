"""The poller's loop against in-memory ports: lease, stop conditions, errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mailcore.contracts.stream import CommandLimits, MalformedCommand
from mailcore.ports import PendingDelivery, StreamBatchResult, StreamEntry
from mailcore.services.stream_intake import StreamIntake, StreamPoller
from tests.support.commands import STREAM, command
from tests.support.fakes import (
    FixedClock,
    InMemoryStreamStore,
    ListCommandStream,
    ScriptedLease,
)
from tests.support.polling import RecordingObserver


def entries(count: int, start: int = 0) -> list[StreamEntry]:
    return [
        StreamEntry(
            f"1-{number}",
            tuple((name.encode(), value.encode()) for name, value in command(number).items()),
        )
        for number in range(start, start + count)
    ]


def calls_left(count: int) -> Callable[[], int]:
    """time_left_ms that allows `count` loop turns, then reports time up."""
    remaining = [count]

    def time_left_ms() -> int:
        remaining[0] -= 1
        return 60_000 if remaining[0] >= 0 else 0

    return time_left_ms


def poller(
    stream: ListCommandStream,
    store: InMemoryStreamStore,
    lease: ScriptedLease,
    batch_size: int = 10,
) -> tuple[StreamPoller, RecordingObserver, list[float]]:
    observer = RecordingObserver()
    sleeps: list[float] = []
    intake = StreamIntake(store, FixedClock(), STREAM, CommandLimits())
    built = StreamPoller(
        intake, stream, lease, observer, batch_size=batch_size, block_ms=100, sleep=sleeps.append
    )
    return built, observer, sleeps


def test_a_poller_without_the_lease_reads_nothing() -> None:
    stream, store, lease = (
        ListCommandStream(entries(5)),
        InMemoryStreamStore(),
        ScriptedLease(False),
    )
    run, _, _ = poller(stream, store, lease)

    report = run.run(calls_left(10))

    assert not report.lease_acquired
    assert report.stopped_because == "another poller holds the lease"
    assert stream.reads == 0
    assert store.accepted == []


def test_it_consumes_in_batches_then_stops_when_time_is_up_and_releases_the_lease() -> None:
    stream, store, lease = ListCommandStream(entries(25)), InMemoryStreamStore(), ScriptedLease()
    run, observer, _ = poller(stream, store, lease)

    report = run.run(calls_left(5))

    assert (report.batches, report.accepted) == (3, 25)
    assert store.offset == "1-24"
    assert len(observer.handled) == 25
    assert report.stopped_because == "time is up"
    assert lease.released


def test_it_stops_as_soon_as_the_lease_is_lost() -> None:
    stream, store, lease = (
        ListCommandStream(entries(25)),
        InMemoryStreamStore(),
        ScriptedLease(renewals=1),
    )
    run, _, _ = poller(stream, store, lease)

    report = run.run(calls_left(100))

    assert report.stopped_because == "lease lost"
    assert report.accepted == 10  # one batch under the lease, none after losing it


def test_store_errors_are_survived_with_growing_bounded_backoff() -> None:
    stream = ListCommandStream(entries(3), failures=4)
    store, lease = InMemoryStreamStore(), ScriptedLease()
    run, observer, sleeps = poller(stream, store, lease)

    report = run.run(calls_left(10))

    assert report.store_errors == 4
    assert len(observer.store_errors) == 4
    assert sleeps == sorted(sleeps)
    assert all(0 < pause <= 1.0 for pause in sleeps)
    assert report.accepted == 3


class OvertakenStore(InMemoryStreamStore):
    """Another poller accepts the first ten entries right after this one read the offset."""

    def __init__(self) -> None:
        super().__init__()
        self.overtaken = False

    def accept_stream_batch(
        self,
        stream: str,
        expected_offset: str,
        items: Sequence[PendingDelivery | MalformedCommand],
    ) -> StreamBatchResult:
        if not self.overtaken:
            self.overtaken = True
            self.offset = "1-9"
            self.accepted = [f"notif-{n:06d}" for n in range(10)]
        return super().accept_stream_batch(stream, expected_offset, items)


def test_an_offset_moved_by_another_poller_is_re_read_and_nothing_is_doubled() -> None:
    stream, store, lease = ListCommandStream(entries(20)), OvertakenStore(), ScriptedLease()
    run, _, _ = poller(stream, store, lease)

    report = run.run(calls_left(6))

    # The overtaken batch wrote nothing; the poller re-read the offset and went on
    assert report.accepted == 10
    assert store.accepted == [f"notif-{n:06d}" for n in range(20)]
