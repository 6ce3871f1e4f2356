"""Bound the wall time of a call, whatever happens inside it.

A socket timeout bounds one wait; a call made of several (DNS, connect,
TLS, retries, a peer that trickles its answer) can still run far past it.
:func:`run_within` gives the caller its answer, or :class:`DeadlineExceeded`,
within a time it chooses. The call itself cannot be stopped from outside:
it carries on, on a daemon thread of its own, until its own timeouts end it,
and its result is dropped. Use it only for calls whose late completion does
no harm (a queue message the worker will find stale, a cached secret).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import cast


class DeadlineExceeded(TimeoutError):
    """The call did not finish within the time it was given."""


def run_within[T](seconds: float, call: Callable[[], T], *, name: str = "bounded-call") -> T:
    """``call()``'s result or exception if it finishes within ``seconds``; else DeadlineExceeded."""
    if seconds <= 0:
        raise DeadlineExceeded(f"{name}: no time left")
    done = threading.Event()
    outcome: list[tuple[bool, object]] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as error:  # handed to the caller below, if it still waits
            outcome.append((False, error))
        finally:
            done.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    if not done.wait(seconds):
        raise DeadlineExceeded(f"{name}: not finished within {seconds:.3g}s")
    finished, value = outcome[0]
    if finished:
        return cast(T, value)
    raise cast(BaseException, value)
