"""The retry ladder: when a transiently failed delivery is tried again."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta


def next_attempt_due(
    failed_attempt_no: int, failed_at_ms: int, ladder: Sequence[timedelta]
) -> int | None:
    """Due time of the attempt after ``failed_attempt_no`` (1-based), or None when spent.

    With the ladder 1m, 5m, 30m a delivery gets four attempts: the first, then
    one minute, five minutes and thirty minutes after each failure.
    """
    if failed_attempt_no > len(ladder):
        return None
    delay = ladder[failed_attempt_no - 1]
    return failed_at_ms + int(delay.total_seconds() * 1000)
