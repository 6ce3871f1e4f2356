"""Wiring: build the services from settings with their production adapters.

The Lambda handlers call these once per cold start, at module scope, so warm
invocations reuse the Redis connection pools.
"""

from __future__ import annotations

from datetime import timedelta

import redis

from mailcore.config import Settings
from mailcore.contracts.stream import CommandLimits
from mailcore.domain.clock import Clock, SystemClock
from mailcore.domain.ids import UlidGenerator
from mailcore.services.auth_intake import AuthIntake
from mailcore.services.stream_intake import PollObserver, StreamIntake, StreamPoller
from mailcore.store.client import build_redis_client
from mailcore.store.command_stream import RedisCommandStream
from mailcore.store.keys import RedisKeys
from mailcore.store.lease import RedisLease
from mailcore.store.redis_store import RedisDeliveryStore

STREAM_POLLER_LEASE = "stream_poller"


def build_delivery_store(
    settings: Settings, clock: Clock | None = None, client: redis.Redis | None = None
) -> RedisDeliveryStore:
    return RedisDeliveryStore(
        client or build_redis_client(settings),
        clock=clock or SystemClock(),
        idempotency_ttl=settings.idempotency_ttl,
        delivery_ttl=settings.delivery_ttl,
        malformed_command_ttl=settings.malformed_command_ttl,
    )


def build_auth_intake(settings: Settings) -> AuthIntake:
    clock = SystemClock()
    return AuthIntake(
        build_delivery_store(settings, clock), clock, UlidGenerator(clock), settings.smtp_mode
    )


def command_limits(settings: Settings) -> CommandLimits:
    return CommandLimits(
        max_recipients=settings.max_recipients,
        max_subject_chars=settings.max_subject_chars,
        max_attachment_bytes=settings.max_attachment_bytes,
    )


def build_stream_poller(settings: Settings, observer: PollObserver) -> StreamPoller:
    clock = SystemClock()
    client = build_redis_client(settings)
    store = build_delivery_store(settings, clock, client)
    intake = StreamIntake(store, clock, settings.redis_command_stream, command_limits(settings))
    block = settings.stream_block_timeout
    # Blocking reads get their own client: raw bytes, and a read timeout past the block.
    stream = RedisCommandStream(
        build_redis_client(settings, decode_responses=False, extra_read_time=block),
        settings.redis_command_stream,
    )
    # Renewed every loop (at most one block apart), so three blocks and some
    # slack are enough; a poller that dies holds the next one up that long.
    lease = RedisLease(
        client, RedisKeys().lease(STREAM_POLLER_LEASE), length=3 * block + timedelta(seconds=10)
    )
    return StreamPoller(
        intake,
        stream,
        lease,
        observer,
        batch_size=settings.stream_batch_size,
        block_ms=int(block.total_seconds() * 1000),
    )
