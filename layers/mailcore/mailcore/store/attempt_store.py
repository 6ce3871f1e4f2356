"""The attempt pipeline on Redis: claim, start, complete, release and recover.

Every state change is one Lua script with the domain's transition tables
compiled in (``scripts.load_lua_with_rules``); reads that pick candidates run
just before and are re-checked inside the script.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

import redis

from mailcore.domain.retry import next_attempt_due
from mailcore.domain.states import AttemptStatus, DeliveryStatus, ProviderOutcome
from mailcore.ports import (
    ClaimedAttempt,
    ClaimedDelivery,
    CompletionResult,
    ScheduleStats,
    StartResult,
    StartVerdict,
)
from mailcore.store.codec import delivery_from_fields
from mailcore.store.keys import RedisKeys
from mailcore.store.redis_store import translate_errors
from mailcore.store.scripts import load_lua, load_lua_with_rules

if TYPE_CHECKING:
    from mailcore.store.layout import PartitionLayout

# Candidates per script call: bounded so one call never blocks Redis for long.
MAX_BATCH = 100
# A scheduled attempt claimed this many times without a worker starting it is
# counted as timed out (the ladder then ends it) instead of re-queued forever.
MAX_CLAIMS_WITHOUT_START = 5


class RedisAttemptStore:
    """Implements ``AttemptStore`` on one Redis partition."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        delivery_ttl: timedelta,
        attempt_ttl: timedelta,
        retry_schedule: Sequence[timedelta],
        claim_timeout: timedelta = timedelta(seconds=45),
        partition: int = 0,
        layout: PartitionLayout | None = None,
    ) -> None:
        self._client = client
        self._layout = layout
        self._partition = partition
        self._keys = RedisKeys.of_partition(partition)
        self._delivery_ttl_ms = int(delivery_ttl.total_seconds() * 1000)
        self._attempt_ttl_ms = int(attempt_ttl.total_seconds() * 1000)
        self._ladder = tuple(retry_schedule)
        self._claim_timeout_ms = int(claim_timeout.total_seconds() * 1000)
        script: Callable[[str], Callable[..., Any]] = client.register_script
        self._claim = script(load_lua("claim.lua"))
        self._release = script(load_lua("release_claim.lua"))
        self._start = script(load_lua_with_rules("start_attempt.lua"))
        self._complete = script(load_lua_with_rules("complete_attempt.lua"))
        self._recover = script(load_lua_with_rules("recover_claims.lua"))

    @property
    def retry_schedule(self) -> tuple[timedelta, ...]:
        return self._ladder

    @property
    def partition(self) -> int:
        return self._partition

    # -- scheduling ---------------------------------------------------------------------

    def due_delivery_ids(self, now_ms: int, limit: int) -> list[str]:
        if self._layout is not None:
            self._layout.verify()  # the scheduler's rounds start here
        with translate_errors():
            due = self._client.zrangebyscore(
                self._keys.attempt_schedule(), "-inf", now_ms, start=0, num=limit
            )
        return cast(list[str], due)

    def claim(
        self,
        delivery_ids: Sequence[str],
        now_ms: int,
        deadline_ms: int,
        max_in_flight: int | None = None,
    ) -> list[ClaimedAttempt]:
        """Claim those still due; with ``max_in_flight``, only while the claims set is below it.

        The bound is checked inside the claim script, against the claims set
        itself, so concurrent claimers together never go past it.
        """
        claimed: list[ClaimedAttempt] = []
        bound: str | int = "" if max_in_flight is None else max_in_flight
        for start in range(0, len(delivery_ids), MAX_BATCH):
            chunk = delivery_ids[start : start + MAX_BATCH]
            keys = [self._keys.attempt_schedule(), self._keys.claims()]
            keys += [self._keys.delivery(delivery_id) for delivery_id in chunk]
            args: list[str | int] = [now_ms, deadline_ms, bound]
            for delivery_id in chunk:
                args += [delivery_id, secrets.token_urlsafe(18)]
            with translate_errors():
                reply = self._claim(keys=keys, args=args)
            claimed += [
                ClaimedAttempt(item[0], int(item[1]), item[2], self._partition) for item in reply
            ]
        return claimed

    def release(self, claims: Sequence[ClaimedAttempt], now_ms: int) -> int:
        if not claims:
            return 0
        keys = [self._keys.attempt_schedule(), self._keys.claims()]
        keys += [self._keys.delivery(claim.delivery_id) for claim in claims]
        with translate_errors():
            released = self._release(keys=keys, args=[now_ms, *(c.claim_token for c in claims)])
        return int(released)

    # -- one attempt --------------------------------------------------------------------

    def read_claimed(self, claim: ClaimedAttempt) -> ClaimedDelivery | None:
        with translate_errors():
            pipe = self._client.pipeline(transaction=False)
            pipe.hgetall(self._keys.delivery(claim.delivery_id))
            pipe.hget(self._keys.attempt(claim.delivery_id, claim.attempt_no), "status")
            fields, attempt_status = pipe.execute()
        if not fields:
            return None
        return ClaimedDelivery(
            delivery=delivery_from_fields(fields),
            claim_token=fields.get("claim_token"),
            attempt_status=AttemptStatus(attempt_status) if attempt_status else None,
        )

    def start(
        self,
        claim: ClaimedAttempt,
        now_ms: int,
        *,
        rendered: bool,
        locale_fallback_used: bool | None = None,
        resolved_locale: str | None = None,
        failure_summary: str = "",
        rendered_subject: str | None = None,
    ) -> StartResult:
        k = self._keys
        target = DeliveryStatus.SENDING if rendered else DeliveryStatus.FAILED
        keys = [
            k.delivery(claim.delivery_id),
            k.attempt(claim.delivery_id, claim.attempt_no),
            k.claims(),
            k.index_status(DeliveryStatus.QUEUED),
            k.index_status(target),
        ]
        fallback = "" if locale_fallback_used is None else ("1" if locale_fallback_used else "0")
        args = [
            claim.claim_token,
            now_ms,
            claim.attempt_no,
            "rendered" if rendered else "render_failed",
            fallback,
            resolved_locale or "",
            failure_summary,
            self._delivery_ttl_ms,
            self._attempt_ttl_ms,
            now_ms + self._claim_timeout_ms,
            rendered_subject or "",
        ]
        with translate_errors():
            reply = self._start(keys=keys, args=args)
        if reply[0] == "refused":
            return StartResult(StartVerdict.REFUSED, reply[1])
        return StartResult(StartVerdict(reply[0]))

    def complete(
        self,
        claim: ClaimedAttempt,
        now_ms: int,
        *,
        outcome: ProviderOutcome,
        attempt_status: AttemptStatus,
        summary: str,
        duration_ms: int,
        failure_code: str | None = None,
    ) -> CompletionResult:
        """Record the outcome; the retry ladder decides what a transient failure becomes."""
        target, next_due = self._target_for(outcome, claim.attempt_no, now_ms)
        k = self._keys
        keys = [
            k.delivery(claim.delivery_id),
            k.attempt(claim.delivery_id, claim.attempt_no),
            k.claims(),
            k.attempt_schedule(),
            k.attempt(claim.delivery_id, claim.attempt_no + 1),
            k.index_status(DeliveryStatus.SENDING),
            k.index_status(target),
            k.dead_letter(claim.delivery_id),
            k.index_dead_letters(),
        ]
        args = [
            claim.claim_token,
            now_ms,
            claim.attempt_no,
            target,
            attempt_status,
            outcome,
            summary,
            duration_ms,
            "" if next_due is None else next_due,
            self._delivery_ttl_ms,
            self._attempt_ttl_ms,
            failure_code or "",
        ]
        with translate_errors():
            reply = self._complete(keys=keys, args=args)
        if reply[0] == "refused":
            return CompletionResult(False, reason=reply[1])
        return CompletionResult(True, status=reply[1])

    def _target_for(
        self, outcome: ProviderOutcome, attempt_no: int, now_ms: int
    ) -> tuple[DeliveryStatus, int | None]:
        if outcome is ProviderOutcome.ACCEPTED:
            return DeliveryStatus.SENT, None
        if outcome is ProviderOutcome.SUPPRESSED:
            return DeliveryStatus.SUPPRESSED, None
        if outcome is ProviderOutcome.PERMANENT_FAILURE:
            return DeliveryStatus.FAILED, None
        next_due = next_attempt_due(attempt_no, now_ms, self._ladder)
        if next_due is None:
            return DeliveryStatus.DEAD_LETTER, None
        return DeliveryStatus.QUEUED, next_due

    # -- recovery -----------------------------------------------------------------------

    def recover_expired(self, now_ms: int, limit: int = MAX_BATCH) -> list[tuple[str, str]]:
        """Take back claims past their deadline; returns (delivery id, what happened)."""
        k = self._keys
        with translate_errors():
            expired = cast(
                list[str],
                self._client.zrangebyscore(k.claims(), "-inf", now_ms - 1, start=0, num=limit),
            )
            if not expired:
                return []
            pipe = self._client.pipeline(transaction=False)
            for delivery_id in expired:
                pipe.hget(k.delivery(delivery_id), "attempt_count")
            attempt_counts = pipe.execute()
        keys = [
            k.claims(),
            k.attempt_schedule(),
            k.index_dead_letters(),
            k.index_status(DeliveryStatus.QUEUED),
            k.index_status(DeliveryStatus.SENDING),
            k.index_status(DeliveryStatus.DEAD_LETTER),
        ]
        args: list[str | int] = [
            now_ms,
            self._delivery_ttl_ms,
            self._attempt_ttl_ms,
            MAX_CLAIMS_WITHOUT_START,
        ]
        for delivery_id, count in zip(expired, attempt_counts, strict=True):
            attempt_no = int(count) if count else 0
            next_due = next_attempt_due(attempt_no, now_ms, self._ladder) if attempt_no else None
            keys += [
                k.delivery(delivery_id),
                k.attempt(delivery_id, attempt_no),
                k.attempt(delivery_id, attempt_no + 1),
                k.dead_letter(delivery_id),
            ]
            args += [
                delivery_id,
                str(attempt_no) if count else "",
                "" if next_due is None else next_due,
            ]
        with translate_errors():
            reply = self._recover(keys=keys, args=args)
        return [(item[0], item[1]) for item in reply]

    # -- gauges -------------------------------------------------------------------------

    def stats(self, now_ms: int) -> ScheduleStats:
        """The schedule's gauges and the deliveries per status: one round trip of O(1) reads."""
        k = self._keys
        with translate_errors():
            pipe = self._client.pipeline(transaction=False)
            pipe.zcard(k.attempt_schedule())
            pipe.zrange(k.attempt_schedule(), 0, 0, withscores=True)
            pipe.zcard(k.claims())
            for status in DeliveryStatus:
                pipe.zcard(k.index_status(status))
            depth, oldest, claimed, *per_status = pipe.execute()
        oldest_age = max(0, now_ms - int(oldest[0][1])) if oldest else 0
        by_status = {str(s): int(n) for s, n in zip(DeliveryStatus, per_status, strict=True)}
        return ScheduleStats(int(depth), oldest_age, int(claimed), by_status)
