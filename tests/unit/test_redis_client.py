"""The Redis client is built from settings alone: address, auth, TLS, DB and timeouts."""

import redis

from mailcore.config import Settings
from mailcore.store.client import build_redis_client


def test_the_client_carries_every_connection_setting() -> None:
    settings = Settings.from_environ(
        {
            "MAIL_REDIS_ADDR": "master.cache.internal:6380",
            "MAIL_REDIS_USERNAME": "mail-service",
            "MAIL_REDIS_PASSWORD": "token-abc-123",
            "MAIL_REDIS_DB": "2",
            "MAIL_REDIS_TLS_ENABLED": "true",
            "MAIL_REDIS_OPERATION_TIMEOUT": "750ms",
        }
    )

    client = build_redis_client(settings)

    pool = client.connection_pool
    assert pool.connection_class is redis.SSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("master.cache.internal", 6380, 2)
    assert (kwargs["username"], kwargs["password"]) == ("mail-service", "token-abc-123")
    assert kwargs["socket_timeout"] == 0.75
    assert kwargs["socket_connect_timeout"] == 0.75
    assert "token-abc-123" not in repr(client)


def test_plain_tcp_is_used_when_tls_is_off() -> None:
    client = build_redis_client(Settings.from_environ({"MAIL_REDIS_ADDR": "127.0.0.1:6379"}))
    assert client.connection_pool.connection_class is redis.Connection
    assert client.connection_pool.connection_kwargs["password"] is None
