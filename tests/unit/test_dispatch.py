"""Dispatch: best effort on the fast path, and bounded except for the auth intake's."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from mailcore.errors import StoreUnavailable
from mailcore.ports import ClaimedAttempt
from mailcore.services.dispatch import FAST_PATH_LIMIT_MS, FAST_PATH_RESERVE_MS, Dispatcher
from tests.support.fakes import FixedClock


class _UnreachableStore:
    def claim(self, *_: Any) -> list[ClaimedAttempt]:
        raise StoreUnavailable("redis unavailable: ConnectionError")


class _ClaimingStore:
    """Claims every candidate, up to the bound it is given (as claim.lua does)."""

    def __init__(self, in_flight: int = 0, due: Sequence[str] = ()) -> None:
        self.in_flight = in_flight
        self.due = list(due)
        self.bounds: list[int | None] = []
        self.released: list[ClaimedAttempt] = []

    def claim(
        self, ids: list[str], now: int, deadline: int, max_in_flight: int | None = None
    ) -> list[ClaimedAttempt]:
        self.bounds.append(max_in_flight)
        room = len(ids) if max_in_flight is None else max(0, max_in_flight - self.in_flight)
        self.in_flight += min(room, len(ids))
        return [ClaimedAttempt(d, 1, f"token-{d}") for d in ids[:room]]

    def due_delivery_ids(self, now: int, limit: int) -> list[str]:
        return self.due[:limit]

    def release(self, claims: list[ClaimedAttempt], now: int) -> int:
        self.released += claims
        return len(claims)


class _Queue:
    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.sent: list[ClaimedAttempt] = []

    def send(self, claims: Sequence[ClaimedAttempt]) -> list[ClaimedAttempt]:
        self.sent += claims
        return list(claims) if self.refuse else []


class _SilentQueue:
    """SQS that takes the request and does not answer (for ten seconds, then it says yes)."""

    def __init__(self) -> None:
        self.sent: list[ClaimedAttempt] = []
        self.answer = threading.Event()

    def send(self, claims: Sequence[ClaimedAttempt]) -> list[ClaimedAttempt]:
        self.sent += claims
        self.answer.wait(10)
        return []


def dispatcher(store: Any, queue: _Queue | _SilentQueue, bound: int | None = None) -> Dispatcher:
    return Dispatcher(store, queue, FixedClock(), timedelta(seconds=45), bound)


def test_dispatch_soon_counts_what_reached_the_queue() -> None:
    queue = _Queue()
    assert dispatcher(_ClaimingStore(), queue).dispatch_soon(["a", "b"]) == 2
    assert [c.delivery_id for c in queue.sent] == ["a", "b"]


def test_dispatch_soon_reports_nothing_queued_when_the_queue_refuses() -> None:
    assert dispatcher(_ClaimingStore(), _Queue(refuse=True)).dispatch_soon(["a"]) == 0


def test_dispatch_soon_never_raises_when_redis_is_down() -> None:
    queue = _Queue()
    assert dispatcher(_UnreachableStore(), queue).dispatch_soon(["a"]) == 0
    assert queue.sent == []


def test_the_stream_fast_path_and_the_scheduler_claim_within_the_bound() -> None:
    # Given a bound of 10 with 7 claims already in flight, and 5 deliveries due
    store = _ClaimingStore(in_flight=7, due=["d1", "d2", "d3", "d4", "d5"])
    queue = _Queue()
    bounded = dispatcher(store, queue, bound=10)

    # When the fast path offers two, and the scheduler then polls for the rest
    fast = bounded.dispatch_soon(["n1", "n2"])
    due = bounded.dispatch_due(40)

    # Then the store was asked to stay within the bound each time: 3 claims in all
    assert store.bounds == [10, 10]
    assert (fast, due.claimed) == (2, 1)
    assert [c.delivery_id for c in queue.sent] == ["n1", "n2", "d1"]


def test_the_auth_fast_path_dispatches_past_the_bound() -> None:
    # Given a dispatcher whose bound is reached
    store = _ClaimingStore(in_flight=10)
    queue = _Queue()

    # When a login code is dispatched unbounded
    queued = dispatcher(store, queue, bound=10).dispatch_soon(["login"], bounded=False)

    # Then it goes to the queue: no bound was passed to the store
    assert queued == 1
    assert store.bounds == [None]


def test_a_dispatcher_without_a_bound_claims_everything_due() -> None:
    store = _ClaimingStore(in_flight=1_000)
    assert dispatcher(store, _Queue()).dispatch_soon(["a", "b"]) == 2
    assert store.bounds == [None]


def test_the_fast_path_gives_up_on_a_silent_queue_and_leaves_the_claim_to_the_scheduler() -> None:
    # Given a queue that takes the claims and never answers
    store = _ClaimingStore()
    queue = _SilentQueue()

    # When the fast path dispatches a login code with plenty of invocation time left
    started = time.monotonic()
    queued = dispatcher(store, queue).dispatch_soon(
        ["login"], bounded=False, time_left_ms=lambda: 9_000
    )
    elapsed = time.monotonic() - started
    queue.answer.set()

    # Then it stops waiting after its own limit, counts nothing as queued,
    # and gives the claim back to the schedule for the scheduler
    assert queued == 0
    assert [c.delivery_id for c in queue.sent] == ["login"]
    assert [c.delivery_id for c in store.released] == ["login"]
    assert FAST_PATH_LIMIT_MS / 1000 <= elapsed < 2


def test_the_fast_path_claims_nothing_when_the_invocation_has_no_time_for_it() -> None:
    # Given an invocation with no more than its reserve left
    store = _ClaimingStore()
    queue = _Queue()

    # When the fast path is asked to dispatch
    queued = dispatcher(store, queue).dispatch_soon(
        ["late"], time_left_ms=lambda: FAST_PATH_RESERVE_MS
    )

    # Then nothing is claimed or queued: the delivery waits in the schedule
    assert queued == 0
    assert store.bounds == []
    assert queue.sent == []
