"""Operator reads on Redis: pages over the sorted-set indexes, and single records.

A page walks one index newest first (the smallest one the filters allow) and
checks the other filters by membership, so its cost depends on the page and
the filters' selectivity, never on how many deliveries are stored. The cursor
is the position of the last item looked at, ``created_at_ms:member`` in
base64; items arriving later are newer than any cursor, so they can neither be
skipped nor repeated by a page walk in progress.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

import redis

from mailcore.domain.model import Attempt, Delivery, Source
from mailcore.errors import InvalidCursor
from mailcore.ports import DeadLetter, DeliveryFilters, Page
from mailcore.store.codec import attempt_from_fields, delivery_from_fields
from mailcore.store.keys import RedisKeys
from mailcore.store.redis_store import translate_errors

# At most this many candidates are examined per requested item before a page
# is returned short (with a cursor to go on): the bound on a page's cost when
# filters match rarely.
SCAN_FACTOR = 20
CHUNK = 100
# Attempts of an expired delivery are read this many numbers at a time, on to
# the next chunk while the chunk's last one exists. Those still kept are the
# newest ones (each expires MAIL_ATTEMPT_TTL after it finished, so in order),
# and a delivery has one more attempt than the retry ladder has steps: one
# chunk covers it unless the ladder is longer than this.
ATTEMPT_PROBE = 16


@dataclass(frozen=True, slots=True, order=True)
class Position:
    score: int
    member: str

    def encode(self) -> str:
        raw = f"{self.score}:{self.member}".encode()
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> Position:
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
            score, _, member = text.partition(":")
            if not member or not score.isdigit():
                raise ValueError
            return cls(int(score), member)
        except (ValueError, UnicodeError, binascii.Error):
            raise InvalidCursor(
                "cursor is not valid; use next_cursor from a previous page"
            ) from None


class Walk(NamedTuple):
    found: list[Position]
    frontier: Position | None  # the last position examined; None: nothing older is left


def _position(cursor: str | None) -> Position | None:
    return Position.decode(cursor) if cursor else None


def _encode(position: Position | None) -> str | None:
    return position.encode() if position else None


class RedisQueries:
    """Implements ``DeliveryQueries``."""

    def __init__(self, client: redis.Redis, keys: RedisKeys | None = None) -> None:
        self._client = client
        self._keys = keys or RedisKeys()

    # -- deliveries ---------------------------------------------------------------------

    def delivery(self, delivery_id: str) -> Delivery | None:
        with translate_errors():
            fields = cast(dict[str, str], self._client.hgetall(self._keys.delivery(delivery_id)))
        return delivery_from_fields(fields) if fields else None

    def attempts(self, delivery_id: str, attempt_count: int | None) -> list[Attempt]:
        """Attempts 1..attempt_count, oldest first (expired ones are gone).

        Without the count (the delivery expired before its attempts did),
        attempts are read from number 1 on, a chunk at a time, up to the
        first chunk whose last number holds nothing.
        """
        k = self._keys
        with translate_errors():
            if attempt_count is not None:
                numbers = range(1, attempt_count + 1)
                records = self._hashes([k.attempt(delivery_id, n) for n in numbers])
            else:
                records = []
                while not records or records[-1]:
                    first = len(records) + 1
                    numbers = range(first, first + ATTEMPT_PROBE)
                    records += self._hashes([k.attempt(delivery_id, n) for n in numbers])
        return [attempt_from_fields(record) for record in records if record]

    def deliveries(
        self, filters: DeliveryFilters, limit: int, cursor: str | None
    ) -> Page[Delivery]:
        found, frontier = self.walk_deliveries(filters, limit, _position(cursor))
        items = self.deliveries_at([position.member for position in found])
        return Page(items, _encode(frontier))

    def walk_deliveries(self, filters: DeliveryFilters, limit: int, after: Position | None) -> Walk:
        """Positions of up to ``limit`` matching deliveries older than ``after``."""
        groups = self._filter_groups(filters)
        with translate_errors():
            if groups:
                sizes = [sum(self._sizes(group)) for group in groups]
                driving = groups.pop(sizes.index(min(sizes)))
            else:
                driving = [self._keys.index_created_at()]
            return self._walk(driving, groups, limit, after)

    def deliveries_at(self, delivery_ids: Sequence[str]) -> list[Delivery]:
        """The deliveries of a page, in its order (expired ones left out)."""
        with translate_errors():
            records = self._hashes([self._keys.delivery(m) for m in delivery_ids])
        return [delivery_from_fields(record) for record in records if record]

    def _filter_groups(self, filters: DeliveryFilters) -> list[list[str]]:
        """One group per filter: a delivery matches a filter if it is in any key of its group."""
        k = self._keys
        groups: list[list[str]] = []
        if filters.recipient:
            groups.append([k.index_recipient(filters.recipient)])
        if filters.status:
            groups.append([k.index_status(filters.status)])
        if filters.source:
            groups.append([k.index_source(filters.source)])
        if filters.template_id:
            groups.append([k.index_template(filters.template_id)])
        if filters.idempotency_key:
            sources = [filters.source] if filters.source else [str(s) for s in Source]
            groups.append([k.index_idempotency(s, filters.idempotency_key) for s in sources])
        return groups

    # -- malformed commands and dead letters --------------------------------------------

    def malformed_command(self, stream_entry_id: str) -> dict[str, str] | None:
        with translate_errors():
            key = self._keys.malformed_command(stream_entry_id)
            record = cast(dict[str, str], self._client.hgetall(key))
        return record or None

    def malformed_commands(self, limit: int, cursor: str | None) -> Page[dict[str, str]]:
        with translate_errors():
            found, frontier = self._walk(
                [self._keys.index_malformed()], [], limit, _position(cursor)
            )
            records = self._hashes([self._keys.malformed_command(p.member) for p in found])
        return Page([record for record in records if record], _encode(frontier))

    def dead_letters(self, limit: int, cursor: str | None) -> Page[DeadLetter]:
        found, frontier = self.walk_dead_letters(limit, _position(cursor))
        return Page(self.dead_letters_at([p.member for p in found]), _encode(frontier))

    def walk_dead_letters(self, limit: int, after: Position | None) -> Walk:
        with translate_errors():
            return self._walk([self._keys.index_dead_letters()], [], limit, after)

    def dead_letters_at(self, delivery_ids: Sequence[str]) -> list[DeadLetter]:
        k = self._keys
        with translate_errors():
            entries = self._hashes([k.dead_letter(m) for m in delivery_ids])
            deliveries = self._hashes([k.delivery(m) for m in delivery_ids])
        return [
            DeadLetter(
                delivery_id=entry["delivery_id"],
                attempts=int(entry.get("attempts", "0")),
                last_outcome=entry.get("last_outcome"),
                last_summary=entry.get("last_summary"),
                dead_lettered_at_ms=int(entry["dead_lettered_at_ms"]),
                delivery=delivery_from_fields(delivery) if delivery else None,
            )
            for entry, delivery in zip(entries, deliveries, strict=True)
            if entry
        ]

    # -- walking an index ---------------------------------------------------------------

    def _walk(
        self,
        driving: Sequence[str],
        checks: Sequence[Sequence[str]],
        limit: int,
        after: Position | None,
    ) -> Walk:
        """Members of ``driving`` (newest first, older than ``after``) in every group of ``checks``.

        Returns their positions and the position of the last member looked
        at (None when the index ran out): every member between ``after`` and
        it was examined.
        """
        position = after
        found: list[Position] = []
        budget = limit * SCAN_FACTOR
        while len(found) < limit and budget > 0:
            candidates = self._after(driving, position, min(CHUNK, budget))
            if not candidates:
                return Walk(found, None)
            budget -= len(candidates)
            matches = self._matching([member for member, _ in candidates], checks)
            for member, score in candidates:
                position = Position(score, member)
                if member in matches:
                    found.append(position)
                    if len(found) == limit:
                        break
        return Walk(found, position)

    def _after(
        self, keys: Sequence[str], position: Position | None, count: int
    ) -> list[tuple[str, int]]:
        """Up to ``count`` members after ``position`` across ``keys``, newest first."""
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            if position is None:
                pipe.zrange(
                    key,
                    "+inf",
                    "-inf",
                    desc=True,
                    byscore=True,
                    offset=0,
                    num=count,
                    withscores=True,
                )
            else:
                # The same instant first (members order the ties), then older ones.
                pipe.zrange(
                    key, position.score, position.score, desc=True, byscore=True, withscores=True
                )
                pipe.zrange(
                    key,
                    f"({position.score}",
                    "-inf",
                    desc=True,
                    byscore=True,
                    offset=0,
                    num=count,
                    withscores=True,
                )
        replies = cast(list[list[tuple[str, float]]], pipe.execute())
        merged: dict[str, int] = {}
        for reply in replies:
            for member, score in reply:
                merged[member] = int(score)
        ordered = sorted(merged.items(), key=lambda item: (item[1], item[0]), reverse=True)
        if position is not None:
            ordered = [
                (member, score)
                for member, score in ordered
                if (score, member) < (position.score, position.member)
            ]
        return ordered[:count]

    def _matching(self, members: Sequence[str], checks: Sequence[Sequence[str]]) -> set[str]:
        if not checks:
            return set(members)
        pipe = self._client.pipeline(transaction=False)
        for member in members:
            for group in checks:
                for key in group:
                    pipe.zscore(key, member)
        answers = iter(pipe.execute())
        matching = set()
        for member in members:
            # Consume every answer for this member before deciding (order matters).
            hits = [[next(answers) is not None for _ in group] for group in checks]
            if all(any(group_hits) for group_hits in hits):
                matching.add(member)
        return matching

    def _sizes(self, keys: Sequence[str]) -> list[int]:
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.zcard(key)
        return [int(size) for size in pipe.execute()]

    def _hashes(self, keys: Sequence[str]) -> list[dict[str, str]]:
        if not keys:
            return []
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        return cast(list[dict[str, str]], pipe.execute())
