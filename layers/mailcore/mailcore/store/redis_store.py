"""The delivery store on Redis: atomic acceptance and record reads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from importlib import resources
from typing import Any, cast

import redis

from mailcore.domain.model import Attempt, Delivery
from mailcore.domain.states import TERMINAL_DELIVERY_STATUSES
from mailcore.errors import StoreInvariantBroken, StoreUnavailable
from mailcore.ports import AcceptanceResult
from mailcore.store.codec import (
    attempt_from_fields,
    attempt_to_fields,
    delivery_from_fields,
    delivery_to_fields,
)
from mailcore.store.keys import RedisKeys

# Errors after which Redis has either run a whole script or none of it: the
# caller may safely retry with the same idempotency key.
_UNAVAILABLE = (
    redis.ConnectionError,  # includes BusyLoadingError
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a replica answering during failover
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)


def load_lua(name: str) -> str:
    return resources.files("mailcore.store").joinpath("lua", name).read_text(encoding="utf-8")


@contextmanager
def _translate_errors() -> Iterator[None]:
    try:
        yield
    except _UNAVAILABLE as error:
        raise StoreUnavailable(f"redis unavailable: {type(error).__name__}") from error
    except redis.ResponseError as error:
        if str(error).startswith("OOM"):
            # Redis refuses a script that would write under maxmemory before it runs.
            raise StoreUnavailable("redis is out of memory") from error
        raise


class RedisDeliveryStore:
    """Implements ``AcceptanceStore`` and ``DeliveryReader`` on one Redis partition."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        idempotency_ttl: timedelta,
        delivery_ttl: timedelta,
        keys: RedisKeys | None = None,
    ) -> None:
        self._client = client
        self._keys = keys or RedisKeys()
        self._idempotency_ttl_ms = int(idempotency_ttl.total_seconds() * 1000)
        self._delivery_ttl_ms = int(delivery_ttl.total_seconds() * 1000)
        # register_script sends EVALSHA and reloads the script on NOSCRIPT.
        self._accept_script: Callable[..., Any] = client.register_script(
            load_lua("accept_delivery.lua")
        )

    def accept(
        self,
        delivery: Delivery,
        first_attempt: Attempt | None,
        *,
        fingerprint: str,
        outcome: str,
    ) -> AcceptanceResult:
        k = self._keys
        index_keys = [
            k.index_created_at(),
            k.index_status(delivery.status),
            k.index_source(delivery.source),
            k.index_idempotency(delivery.source, delivery.idempotency_key),
            *(k.index_recipient(address) for address in delivery.envelope.recipients()),
        ]
        if delivery.template_id:
            index_keys.append(k.index_template(delivery.template_id))
        attempt_no = first_attempt.attempt_no if first_attempt else 1
        keys = [
            k.idempotency(delivery.source, delivery.idempotency_key),
            k.delivery(delivery.delivery_id),
            k.attempt(delivery.delivery_id, attempt_no),
            k.attempt_schedule(),
            *dict.fromkeys(index_keys),
        ]
        delivery_fields = delivery_to_fields(delivery)
        attempt_fields = attempt_to_fields(first_attempt) if first_attempt else {}
        born_terminal = delivery.status in TERMINAL_DELIVERY_STATUSES
        args: list[str | int] = [
            fingerprint,
            delivery.delivery_id,
            delivery.created_at_ms,
            self._idempotency_ttl_ms,
            self._delivery_ttl_ms if born_terminal else 0,
            first_attempt.scheduled_for_ms if first_attempt else "",
            outcome,
            len(delivery_fields),
            *_flatten(delivery_fields),
            *_flatten(attempt_fields),
        ]
        with _translate_errors():
            reply = self._accept_script(keys=keys, args=args)
        verdict = reply[0]
        if verdict == "created":
            return AcceptanceResult(True, reply[1], reply[2], True)
        if verdict == "duplicate":
            return AcceptanceResult(False, reply[1], reply[2], reply[3] == 1)
        raise StoreInvariantBroken(f"acceptance refused: {verdict} {reply[1]}")

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        with _translate_errors():
            fields = self._hgetall(self._keys.delivery(delivery_id))
        return delivery_from_fields(fields) if fields else None

    def get_attempt(self, delivery_id: str, attempt_no: int) -> Attempt | None:
        with _translate_errors():
            fields = self._hgetall(self._keys.attempt(delivery_id, attempt_no))
        return attempt_from_fields(fields) if fields else None

    def _hgetall(self, key: str) -> dict[str, str]:
        # The client decodes responses (build_redis_client), so keys and values are str.
        return cast(dict[str, str], self._client.hgetall(key))


def _flatten(fields: dict[str, str]) -> list[str]:
    return [part for pair in fields.items() for part in pair]
