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
