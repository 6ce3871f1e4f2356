"""The poller's loop against in-memory ports: lease, stop conditions, errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mailcore.contracts.stream import CommandLimits, MalformedCommand
from mailcore.ports import PendingDelivery, StreamBatchResult, StreamEntry, stream_id
from mailcore.services.stream_intake import StreamIntake, StreamPoller, StreamTrimmer
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


# -- trimming the stream -------------------------------------------------------------------


class SteppedClock:
    """A monotonic clock that moves ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def trimming_poller(
    stream: ListCommandStream,
    store: InMemoryStreamStore,
    retention: int,
    *,
    clock: SteppedClock | None = None,
    limit: int = 10_000,
) -> tuple[StreamPoller, RecordingObserver]:
    observer = RecordingObserver()
    intake = StreamIntake(store, FixedClock(), STREAM, CommandLimits())
    trimmer = StreamTrimmer(store, stream, STREAM, retention, limit=limit, calls=10)
    built = StreamPoller(
        intake,
        stream,
        ScriptedLease(),
        observer,
        batch_size=10,
        block_ms=100,
        sleep=lambda _: None,
        trimmer=trimmer,
        monotonic=clock or SteppedClock(0.0),
    )
    return built, observer


def ids(stream: ListCommandStream) -> list[str]:
    return [entry.entry_id for entry in stream.entries]


def test_handled_entries_beyond_the_retention_are_trimmed_the_rest_kept() -> None:
    # Given 95 commands, and a poller that keeps the last 30 handled entries
    stream, store = ListCommandStream(entries(95)), InMemoryStreamStore()
    run, _ = trimming_poller(stream, store, retention=30)

    # When it has handled them all
    report = run.run(calls_left(12))

    # Then the stream holds at least the last 30, less than a batch more
    assert report.accepted == 95
    kept = ids(stream)
    assert kept[-1] == "1-94"
    assert 30 <= len(kept) < 30 + 10
    assert report.trimmed == 95 - len(kept)


def test_nothing_after_the_stored_offset_is_ever_trimmed() -> None:
    # Given a poller keeping no handled entry at all, and commands still arriving
    stream, store = ListCommandStream(entries(40)), InMemoryStreamStore()
    run, _ = trimming_poller(stream, store, retention=0)

    # When it handles what it can in a few turns (batches of 10), twenty more arriving
    run.run(calls_left(2))
    stream.entries += entries(20, start=40)
    run.run(calls_left(2))

    # Then every trim went through a handled entry, and every unhandled entry is there
    assert all(stream_id(point) <= stream_id(store.offset) for point in stream.trims)
    assert ids(stream) == [f"1-{n}" for n in range(40, 60) if stream_id(f"1-{n}") > (1, 39)]


def test_a_burst_is_trimmed_once_a_second_and_once_more_when_the_poller_stops() -> None:
    # Given a clock that moves 0.3 s each time the poller looks at it
    stream, store = ListCommandStream(entries(100)), InMemoryStreamStore()
    run, _ = trimming_poller(stream, store, retention=0, clock=SteppedClock(0.3))

    # When ten batches are handled back to back
    run.run(calls_left(10))

    # Then it trimmed about every fourth batch (1 s), not after each, and at the end
    # (each trim is XTRIMs through one point until one deletes nothing)
    points = list(dict.fromkeys(stream.trims))
    assert 3 <= len(points) <= 5
    assert points[-1] == store.offset


def test_a_trim_larger_than_one_call_is_done_in_several() -> None:
    stream, store = ListCommandStream(entries(50)), InMemoryStreamStore()
    run, _ = trimming_poller(stream, store, retention=0, limit=7)

    report = run.run(calls_left(6))

    assert report.trimmed == 50
    assert stream.entries == []


def test_a_failed_trim_is_a_store_error_and_the_next_trim_catches_up() -> None:
    # Given a store that cannot answer the first trim
    stream, store = ListCommandStream(entries(30)), InMemoryStreamStore()
    store.trim_point_failures = 1
    run, observer = trimming_poller(stream, store, retention=5)

    # When the poller runs on
    report = run.run(calls_left(6))

    # Then the failure is told, intake went on, and later trims kept exactly the retention
    assert report.store_errors == 1
    assert len(observer.store_errors) == 1
    assert report.accepted == 30
    assert 5 <= len(stream.entries) < 15


def test_without_a_trimmer_nothing_is_trimmed() -> None:
    stream, store, lease = ListCommandStream(entries(25)), InMemoryStreamStore(), ScriptedLease()
    run, _, _ = poller(stream, store, lease)

    report = run.run(calls_left(5))

    assert (report.accepted, report.trimmed) == (25, 0)
    assert len(stream.entries) == 25
