"""Go-style duration strings (``250ms``, ``15s``, ``1h30m``, ``168h``).

The seed service was configured with Go's ``time.ParseDuration`` syntax and the
deployed environments keep those values, so we accept exactly that grammar.
No well-kept Python library parses it (``pytimeparse`` has no ``ms``/``us`` and
accepts prose), and the grammar is a dozen lines.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNIT_MICROSECONDS = {
    "ns": 0.001,
    "us": 1.0,
    "µs": 1.0,
    "ms": 1_000.0,
    "s": 1_000_000.0,
    "m": 60_000_000.0,
    "h": 3_600_000_000.0,
}
_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration; raise ``ValueError`` with a precise reason."""
    raw = text.strip()
    if not raw:
        raise ValueError("empty duration")
    sign = 1
    body = raw
    if body[0] in "+-":
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return timedelta(0)
    position = 0
    total_us = 0.0
    while position < len(body):
        match = _TERM.match(body, position)
        if match is None:
            raise ValueError(f"invalid duration {raw!r}: expected terms like 250ms, 15s, 1h30m")
        total_us += float(match.group(1)) * _UNIT_MICROSECONDS[match.group(2)]
        position = match.end()
    return timedelta(microseconds=sign * total_us)


def format_duration(value: timedelta) -> str:
    """Render a duration the way Go would print it, for docs and messages."""
    total_ms = int(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    if total_ms % 1000:
        return f"{total_ms}ms"
    seconds = total_ms // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = ""
    if hours:
        text += f"{hours}h"
    if minutes:
        text += f"{minutes}m"
    if seconds or not text:
        text += f"{seconds}s"
    return text
