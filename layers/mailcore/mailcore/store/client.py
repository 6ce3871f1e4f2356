"""Build redis-py clients from settings, once per cold start."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import redis
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider
from redis.retry import Retry

from mailcore.config import Settings


class SecretTokenProvider(CredentialProvider):
    """Redis AUTH from a secret: asked on every new connection, so a rotated
    token is used as soon as the secret's cache lets it through."""

    def __init__(self, username: str | None, password: Callable[[], str | None]) -> None:
        self._username = username
        self._password = password

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        try:
            token = self._password() or ""
        except Exception as error:
            # Without its token the service cannot reach its store: callers
            # treat that like any other Redis outage (503, back off, retry).
            raise redis.ConnectionError(
                f"could not read the Redis token ({type(error).__name__})"
            ) from None
        return (self._username, token) if self._username else (token,)


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
    provider = None
    if settings.redis_password_secret_arn:
        from mailcore.aws.secrets import secret_password_source

        provider = SecretTokenProvider(
            settings.redis_username, secret_password_source(settings.redis_password_secret_arn)
        )
    return redis.Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        username=None if provider else settings.redis_username,
        password=None if provider else password,
        credential_provider=provider,
        ssl=settings.redis_tls_enabled,
        socket_timeout=timeout + extra_read_time.total_seconds(),
        socket_connect_timeout=timeout,
        decode_responses=decode_responses,
        # One immediate retry on a fresh connection covers the idle connection
        # a warm Lambda finds closed; more would only delay the 503. Timeouts
        # are not retried: the command may still be running on the server.
        retry=Retry(NoBackoff(), retries=1, supported_errors=(redis.ConnectionError,)),
    )
