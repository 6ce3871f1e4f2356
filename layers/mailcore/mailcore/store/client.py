"""Build redis-py clients from settings, once per cold start."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.commands.core import Script
from redis.credentials import CredentialProvider
from redis.exceptions import RedisClusterException
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


class LazyRedisCluster:
    """A ``redis.RedisCluster`` made on first use, not at cold start.

    redis-py's cluster client asks a node for the slot map in its
    constructor. Made at module scope, that would put a network round trip
    in every cold start, and a cluster that is down would fail the
    function's init instead of answering 503. Everything but script
    registration (which needs no server) is passed to the real client,
    made once, on the first command; failing to reach the cluster then is
    a ``redis.ConnectionError`` like any other outage, tried again next time.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._cluster: redis.RedisCluster | None = None
        self._lock = threading.Lock()

    @property
    def cluster(self) -> redis.RedisCluster:
        if self._cluster is None:
            with self._lock:
                if self._cluster is None:
                    try:
                        self._cluster = redis.RedisCluster(**self._options)
                    except RedisClusterException as error:
                        raise redis.ConnectionError(
                            f"could not reach the Redis cluster ({type(error).__name__})"
                        ) from None
        return self._cluster

    def register_script(self, script: str) -> Script:
        # As bytes, a Script computes its SHA without asking the client for an encoder.
        return Script(cast(redis.Redis, self), script.encode())

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.close()

    # Dunder methods are looked up on the type, past __getattr__: a ``with``
    # block must work on this client as it does on a standalone one.
    def __enter__(self) -> LazyRedisCluster:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cluster, name)


def is_cluster(client: object) -> bool:
    return isinstance(client, LazyRedisCluster | redis.RedisCluster)


def build_redis_client(
    settings: Settings,
    *,
    decode_responses: bool = True,
    extra_read_time: timedelta = timedelta(0),
) -> redis.Redis:
    """A client for the service's Redis: standalone, or a cluster with ``MAIL_REDIS_CLUSTER``.

    A cluster client answers the same commands, so the stores take either
    (typed as ``redis.Redis``); the few paths that differ ask :func:`is_cluster`.

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
    connection: dict[str, Any] = {
        "host": settings.redis_host,
        "port": settings.redis_port,
        "username": None if provider else settings.redis_username,
        "password": None if provider else password,
        "credential_provider": provider,
        "ssl": settings.redis_tls_enabled,
        "socket_timeout": timeout + extra_read_time.total_seconds(),
        "socket_connect_timeout": timeout,
        "decode_responses": decode_responses,
    }
    if settings.redis_cluster:
        # A failover moves a slot to the promoted replica within seconds: a
        # few backed-off retries (each refreshing the slot map) ride it out;
        # past them the caller sees StoreUnavailable (a 503).
        retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3)
        return cast(redis.Redis, LazyRedisCluster(**connection, retry=retry))
    return redis.Redis(
        **connection,
        db=settings.redis_db,
        # One immediate retry on a fresh connection covers the idle connection
        # a warm Lambda finds closed; more would only delay the 503. Timeouts
        # are not retried: the command may still be running on the server.
        retry=Retry(NoBackoff(), retries=1, supported_errors=(redis.ConnectionError,)),
    )
