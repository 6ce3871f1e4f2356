"""Index cleanup: drop index members whose delivery (or record) has expired.

Settled deliveries expire after ``MAIL_DELIVERY_TTL``; their index members do
not (a sorted-set member cannot expire on its own). Readers already skip
them; this keeps the indexes from growing without bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

from mailcore.errors import StoreUnavailable


class IndexMaintenance(Protocol):
    def index_keys(self) -> list[str]:
        """Every index, in a stable order."""
        ...

    def remove_expired(self, index: str, start: int, count: int) -> tuple[int, int]:
        """Check ``count`` members from position ``start`` (oldest first).

        Returns (members examined, members removed).
        """
        ...


@dataclass
class CleanupReport:
    indexes: int = 0
    examined: int = 0
    removed: int = 0
    stopped_because: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class IndexCleanup:
    """Walks each index oldest first: expired deliveries are the oldest ones.

    The walk of an index stops at the first chunk with nothing to remove (the
    rest is younger and alive) or when the invocation's time runs low; the
    next run starts again from the oldest end.
    """

    def __init__(
        self, store: IndexMaintenance, *, chunk: int = 200, reserve_ms: int = 3000
    ) -> None:
        self._store = store
        self._chunk = chunk
        self._reserve_ms = reserve_ms

    def run(self, time_left_ms: Callable[[], int]) -> CleanupReport:
        report = CleanupReport()
        try:
            indexes = self._store.index_keys()
        except StoreUnavailable:
            report.stopped_because = "store unavailable"
            return report
        for index in indexes:
            report.indexes += 1
            position = 0
            while True:
                if time_left_ms() <= self._reserve_ms:
                    report.stopped_because = "time is up"
                    return report
                try:
                    examined, removed = self._store.remove_expired(index, position, self._chunk)
                except StoreUnavailable:
                    report.stopped_because = "store unavailable"
                    return report
                report.examined += examined
                report.removed += removed
                if examined < self._chunk or removed == 0:
                    break
                # Removed members shifted the rest toward the start.
                position += examined - removed
        report.stopped_because = "done"
        return report
