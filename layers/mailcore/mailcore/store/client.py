"""Build redis-py clients from settings, once per cold start."""

from __future__ import annotations

from datetime import timedelta

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from mailcore.config import Settings


def build_redis_client(
    settings: Settings,
    *,
    decode_responses: bool = True,
    extra_read_time: timedelta = timedelta(0),
) -> redis.Redis:
    """A client for the service's Redis.

    ``extra_read_time`` lengthens the read timeout for a client that blocks on
    purpose (``XREAD BLOCK``); connecting still has the operation timeout.
    """
    timeout = settings.redis_operation_timeout.total_seconds()
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return redis.Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        username=settings.redis_username,
        password=password,
        ssl=settings.redis_tls_enabled,
        socket_timeout=timeout + extra_read_time.total_seconds(),
        socket_connect_timeout=timeout,
        decode_responses=decode_responses,
        # One immediate retry on a fresh connection covers the idle connection
        # a warm Lambda finds closed; more would only delay the 503. Timeouts
        # are not retried: the command may still be running on the server.
        retry=Retry(NoBackoff(), retries=1, supported_errors=(redis.ConnectionError,)),
    )
