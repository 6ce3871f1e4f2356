"""Errors the application services raise; the handlers map each to an HTTP answer."""

from __future__ import annotations


class IdempotencyConflict(Exception):
    """The idempotency key was already used with a different request."""

    def __init__(self, source: str) -> None:
        super().__init__(f"Idempotency-Key was already used by {source} for a different request")


class StoreUnavailable(Exception):
    """The state store could not be reached or did not answer in time.

    Raised only when the store guarantees that no partial state was written:
    the write either happened whole or not at all, so the caller may retry
    with the same idempotency key.
    """


class StoreInvariantBroken(Exception):
    """The store refused a write that the service believed valid (a bug, not bad input)."""


class PartitionCountChanged(Exception):
    """The store was written with another ``MAIL_REDIS_PARTITIONS``: working on would
    break idempotency, or abandon the partitions no longer read (docs/scaling.md)."""


class InvalidCursor(ValueError):
    """A paging cursor that this service did not make."""


class NotFound(Exception):
    """No such delivery, attempt history or malformed command (or it has expired)."""


class NotResendable(Exception):
    """Only settled deliveries (sent, suppressed, failed, dead_letter) can be resent."""

    def __init__(self, delivery_id: str, status: str) -> None:
        super().__init__(
            f"delivery {delivery_id} is {status}; only sent, suppressed, failed and "
            "dead_letter deliveries can be resent"
        )
