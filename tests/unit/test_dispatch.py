"""The fast path's dispatch is best effort: a Redis failure leaves the work to the scheduler."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from mailcore.errors import StoreUnavailable
from mailcore.ports import ClaimedAttempt
from mailcore.services.dispatch import Dispatcher
from tests.support.fakes import FixedClock


class _UnreachableStore:
    def claim(self, *_: Any) -> list[ClaimedAttempt]:
        raise StoreUnavailable("redis unavailable: ConnectionError")


class _ClaimingStore:
    def claim(self, ids: list[str], now: int, deadline: int) -> list[ClaimedAttempt]:
        return [ClaimedAttempt(delivery_id, 1, f"token-{delivery_id}") for delivery_id in ids]

    def release(self, claims: list[ClaimedAttempt], now: int) -> int:
        return len(claims)


class _Queue:
    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.sent: list[ClaimedAttempt] = []

    def send(self, claims: Sequence[ClaimedAttempt]) -> list[ClaimedAttempt]:
        self.sent += claims
        return list(claims) if self.refuse else []


def dispatcher(store: Any, queue: _Queue) -> Dispatcher:
    return Dispatcher(store, queue, FixedClock(), timedelta(seconds=45))


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
