"""A read batch is accepted in pipelined atomic steps (StreamIntake against in-memory ports)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from mailcore.contracts.stream import (
    CommandLimits,
    DeliveryCommand,
    MalformedCommand,
    RawFields,
    decode_command,
)
from mailcore.errors import StoreUnavailable
from mailcore.ports import EntryVerdict, PendingDelivery, StreamBatchResult, StreamEntry
from mailcore.services.stream_intake import StreamIntake, StreamPoller
from tests.support.commands import STREAM, command
from tests.support.fakes import FixedClock, InMemoryStreamStore, ListCommandStream, ScriptedLease
from tests.support.polling import RecordingObserver

DECODER = "mailcore.services.stream_intake.decode_command"


def calls_left(count: int) -> Callable[[], int]:
    """time_left_ms that allows `count` loop turns, then reports time up."""
    remaining = [count]

    def time_left_ms() -> int:
        remaining[0] -= 1
        return 60_000 if remaining[0] >= 0 else 0

    return time_left_ms


def entries(count: int) -> list[StreamEntry]:
    return [
        StreamEntry(
            f"1-{number}",
            tuple((name.encode(), value.encode()) for name, value in command(number).items()),
        )
        for number in range(count)
    ]


class LoggingStore(InMemoryStreamStore):
    """Says when each step is sent and when its answer is awaited; can be overtaken."""

    def __init__(self, log: list[str], overtaken_at_step: int | None = None) -> None:
        super().__init__()
        self.log = log
        self.steps: list[tuple[str, int]] = []  # (expected offset, entries) per step
        self.overtaken_at_step = overtaken_at_step

    def submit_stream_batch(
        self,
        stream: str,
        expected_offset: str,
        items: Sequence[PendingDelivery | MalformedCommand],
    ) -> Callable[[], StreamBatchResult]:
        step = len(self.steps) + 1
        self.steps.append((expected_offset, len(items)))
        self.log.append(f"send {step}")
        if step == self.overtaken_at_step:
            self.offset = "9-9"  # another poller moved the offset meanwhile
        result = self.accept_stream_batch(stream, expected_offset, items)

        def answer() -> StreamBatchResult:
            self.log.append(f"answer {step}")
            return result

        return answer


class RecordingDispatcher:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def dispatch_soon(self, delivery_ids: Sequence[str], *, partition: int = 0) -> int:
        assert partition == 0  # the fake store has one partition
        self.calls.append(list(delivery_ids))
        return len(delivery_ids)


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every entry decoded, in order, next to the store's sends and answers."""
    events: list[str] = []

    def logged(
        entry_id: str, fields: RawFields, limits: CommandLimits | None = None
    ) -> DeliveryCommand | MalformedCommand:
        events.append(f"decode {entry_id}")
        return decode_command(entry_id, fields, limits)

    monkeypatch.setattr(DECODER, logged)
    return events


def intake(
    store: InMemoryStreamStore, dispatcher: RecordingDispatcher | None = None
) -> StreamIntake:
    return StreamIntake(
        store,
        FixedClock(),
        STREAM,
        CommandLimits(),
        dispatcher=dispatcher,  # type: ignore[arg-type]
        max_call_entries=2,
    )


def test_each_step_is_built_while_the_one_before_runs_and_names_its_offset(
    log: list[str],
) -> None:
    store = LoggingStore(log)

    result = intake(store).accept("0-0", entries(5))

    # Steps of at most two entries, each expecting the offset the one before left
    assert store.steps == [("0-0", 2), ("1-1", 2), ("1-3", 1)]
    # The next step is decoded before the answer of the one in flight is awaited,
    # and sent only after that answer: one step in flight at a time
    assert log == [
        "decode 1-0",
        "decode 1-1",
        "send 1",
        "decode 1-2",
        "decode 1-3",
        "answer 1",
        "send 2",
        "decode 1-4",
        "answer 2",
        "send 3",
        "answer 3",
    ]
    assert (result.offset, result.offset_moved) == ("1-4", False)
    assert [entry.verdict for entry in result.handled] == [EntryVerdict.CREATED] * 5
    assert store.offset == "1-4"


def test_an_offset_moved_during_a_batch_stops_it_after_the_steps_already_taken(
    log: list[str],
) -> None:
    store = LoggingStore(log, overtaken_at_step=2)
    dispatcher = RecordingDispatcher()

    result = intake(store, dispatcher).accept("0-0", entries(5))

    # The first step counts; the second wrote nothing; the third was never sent
    assert result.offset_moved
    assert result.offset == "9-9"
    assert [entry.stream_entry_id for entry in result.handled] == ["1-0", "1-1"]
    assert len(store.steps) == 2
    assert store.accepted == ["notif-000000", "notif-000001"]
    # What was created is still dispatched at once
    assert dispatcher.calls == [["notif-000000", "notif-000001"]]


def test_the_deliveries_of_a_batch_are_dispatched_together_once_it_is_accepted(
    log: list[str],
) -> None:
    dispatcher = RecordingDispatcher()

    intake(LoggingStore(log), dispatcher).accept("0-0", entries(5))

    assert dispatcher.calls == [[f"notif-{n:06d}" for n in range(5)]]


def test_a_failure_while_a_step_is_in_flight_still_collects_its_answer(
    log: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LoggingStore(log)

    def failing(
        entry_id: str, fields: RawFields, limits: CommandLimits | None = None
    ) -> DeliveryCommand | MalformedCommand:
        if entry_id == "1-2":
            raise RuntimeError("decoder bug")
        return decode_command(entry_id, fields, limits)

    monkeypatch.setattr(DECODER, failing)

    with pytest.raises(RuntimeError):
        intake(store).accept("0-0", entries(5))

    # The step sent before the failure had its answer read (its connection is
    # not left with a reply pending), and nothing more was sent
    assert log[-2:] == ["send 1", "answer 1"]
    assert len(store.steps) == 1


class FailingStore(LoggingStore):
    """Redis fails while step ``failing_step`` is in flight (it writes nothing)."""

    def __init__(self, log: list[str], failing_step: int, failures: int = 1) -> None:
        super().__init__(log)
        self.failing_step = failing_step
        self.failures = failures

    def submit_stream_batch(
        self,
        stream: str,
        expected_offset: str,
        items: Sequence[PendingDelivery | MalformedCommand],
    ) -> Callable[[], StreamBatchResult]:
        if len(self.steps) + 1 == self.failing_step and self.failures:
            self.failures -= 1
            self.steps.append((expected_offset, len(items)))

            def answer() -> StreamBatchResult:
                raise StoreUnavailable("redis unavailable: TimeoutError")

            return answer
        return super().submit_stream_batch(stream, expected_offset, items)


def test_redis_failing_after_some_steps_reports_them_with_the_failure(
    log: list[str],
) -> None:
    store = FailingStore(log, failing_step=2)
    dispatcher = RecordingDispatcher()

    result = intake(store, dispatcher).accept("0-0", entries(5))

    # The first step went in and is reported; the failure comes with it
    assert isinstance(result.interrupted_by, StoreUnavailable)
    assert not result.offset_moved
    assert result.offset == "1-1"
    assert [entry.stream_entry_id for entry in result.handled] == ["1-0", "1-1"]
    assert dispatcher.calls == [["notif-000000", "notif-000001"]]


def test_redis_failing_on_the_first_step_raises(log: list[str]) -> None:
    with pytest.raises(StoreUnavailable):
        intake(FailingStore(log, failing_step=1)).accept("0-0", entries(5))


def test_the_poller_reports_the_steps_taken_backs_off_and_resumes_after_them(
    log: list[str],
) -> None:
    store = FailingStore(log, failing_step=2)
    observer = RecordingObserver()
    sleeps: list[float] = []
    poller = StreamPoller(
        intake(store),
        ListCommandStream(entries(5)),
        ScriptedLease(),
        observer,
        batch_size=10,
        block_ms=100,
        sleep=sleeps.append,
    )

    report = poller.run(calls_left(3))

    # Every entry accepted once: two before the failure, three after the pause
    assert store.accepted == [f"notif-{n:06d}" for n in range(5)]
    assert (report.accepted, report.store_errors) == (5, 1)
    assert len(observer.handled) == 5
    assert len(observer.store_errors) == 1
    assert len(sleeps) == 1
    assert store.offset == "1-4"
