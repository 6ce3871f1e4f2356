"""The Redis client is built from settings alone: address, auth, TLS, DB and timeouts."""

import pytest
import redis

from mailcore.config import Settings
from mailcore.store.client import build_redis_client, is_cluster


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


def test_a_cluster_client_is_built_without_touching_the_network() -> None:
    # Given cluster mode pointed at an address where nothing listens
    settings = Settings.from_environ(
        {"MAIL_REDIS_ADDR": "127.0.0.1:1", "MAIL_REDIS_CLUSTER": "true"}
    )

    # When the client is built and a script registered (as at cold start)
    client = build_redis_client(settings)
    script = client.register_script("return 1")

    # Then nothing connected yet: the script has its SHA, and is_cluster knows the client
    assert is_cluster(client)
    assert len(script.sha) == 40

    # And the first command fails as an ordinary connection error (a 503 upstream)
    with pytest.raises(redis.ConnectionError):
        client.ping()


def test_a_cluster_client_can_be_used_in_a_with_block_before_it_connects() -> None:
    # Given a cluster client that never connected
    settings = Settings.from_environ(
        {"MAIL_REDIS_ADDR": "127.0.0.1:1", "MAIL_REDIS_CLUSTER": "true"}
    )

    # When it is used and closed as a standalone client would be, Then nothing fails
    with build_redis_client(settings) as client:
        assert is_cluster(client)
