"""Running a singleton loop under a lease: the shape the poller and the scheduler share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from mailcore.errors import StoreUnavailable
from mailcore.ports import Lease


class LeasedReport(Protocol):
    lease_acquired: bool
    store_errors: int
    stopped_because: str


class StoreTroubleObserver(Protocol):
    def store_unavailable(self, error: StoreUnavailable) -> None: ...


def run_under_lease[R: LeasedReport](
    lease: Lease,
    observer: StoreTroubleObserver,
    report: R,
    loop: Callable[[R], None],
    *,
    holder: str,
) -> R:
    """Take the lease, run ``loop``, always give the lease back; the report says how it went.

    ``holder`` names who else may hold it ("another scheduler holds the lease").
    A lease that cannot be released (Redis down) simply expires; the next run
    waits at most one lease length.
    """
    try:
        report.lease_acquired = lease.acquire()
    except StoreUnavailable as error:
        observer.store_unavailable(error)
        report.store_errors += 1
        report.stopped_because = "store unavailable"
        return report
    if not report.lease_acquired:
        report.stopped_because = f"another {holder} holds the lease"
        return report
    try:
        loop(report)
    finally:
        try:
            lease.release()
        except StoreUnavailable as error:
            observer.store_unavailable(error)
    return report
