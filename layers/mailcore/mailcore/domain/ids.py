"""Delivery identifiers: time-ordered, unique, URL- and Redis-key-safe.

Ids are ULIDs (48-bit millisecond time + 80 random bits, Crockford base32),
prefixed ``dlv_``. Time order keeps same-millisecond ties in the indexes
roughly in creation order, and 80 random bits make collisions negligible
across concurrent Lambdas. Python 3.13 has no ``uuid7`` (it arrives in 3.14)
and a ULID is a few lines, so no dependency is taken for it.
"""

from __future__ import annotations

import re
import secrets
from typing import Protocol

from mailcore.domain.clock import Clock

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
DELIVERY_ID_PREFIX = "dlv_"
DELIVERY_ID_PATTERN = re.compile(r"^dlv_[0-9A-HJKMNP-TV-Z]{26}$")


class IdGenerator(Protocol):
    def new_delivery_id(self) -> str: ...


def encode_ulid(timestamp_ms: int, randomness: int) -> str:
    value = (timestamp_ms & ((1 << 48) - 1)) << 80 | (randomness & ((1 << 80) - 1))
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


class UlidGenerator:
    """Production id source: clock time plus 80 bits from ``secrets``."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def new_delivery_id(self) -> str:
        return DELIVERY_ID_PREFIX + encode_ulid(self._clock.now_ms(), secrets.randbits(80))


def is_delivery_id(text: str) -> bool:
    return DELIVERY_ID_PATTERN.fullmatch(text) is not None
