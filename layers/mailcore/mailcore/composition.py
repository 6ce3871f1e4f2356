"""Wiring: build the services from settings with their production adapters.

The Lambda handlers call these once per cold start, at module scope, so warm
invocations reuse the Redis connection pool.
"""

from __future__ import annotations

from mailcore.config import Settings
from mailcore.domain.clock import SystemClock
from mailcore.domain.ids import UlidGenerator
from mailcore.services.auth_intake import AuthIntake
from mailcore.store.client import build_redis_client
from mailcore.store.redis_store import RedisDeliveryStore


def build_delivery_store(settings: Settings) -> RedisDeliveryStore:
    return RedisDeliveryStore(
        build_redis_client(settings),
        idempotency_ttl=settings.idempotency_ttl,
        delivery_ttl=settings.delivery_ttl,
    )


def build_auth_intake(settings: Settings) -> AuthIntake:
    clock = SystemClock()
    return AuthIntake(
        build_delivery_store(settings), clock, UlidGenerator(clock), settings.smtp_mode
    )
