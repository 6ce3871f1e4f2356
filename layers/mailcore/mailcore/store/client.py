"""Build the redis-py client from settings, once per cold start."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from mailcore.config import Settings


def build_redis_client(settings: Settings) -> redis.Redis:
    timeout = settings.redis_operation_timeout.total_seconds()
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return redis.Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        username=settings.redis_username,
        password=password,
        ssl=settings.redis_tls_enabled,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        # One immediate retry on a fresh connection covers the idle connection
        # a warm Lambda finds closed; more would only delay the 503. Timeouts
        # are not retried: the command may still be running on the server.
        retry=Retry(NoBackoff(), retries=1, supported_errors=(redis.ConnectionError,)),
    )
