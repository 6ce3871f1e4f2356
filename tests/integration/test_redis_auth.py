"""Redis AUTH: a password from the environment or a token from Secrets Manager (moto)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from mailcore.config import Settings
from mailcore.errors import StoreUnavailable
from mailcore.store.client import build_redis_client
from mailcore.store.redis_store import translate_errors
from tests.support.redis_server import RedisServer

TOKEN = "redis-t0ken-from-secrets"


@pytest.fixture
def protected_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "auth", password=TOKEN)
    server.start()
    yield server
    server.stop()


def test_a_token_from_secrets_manager_authenticates(protected_redis: RedisServer, aws: Any) -> None:
    # Given the AUTH token only in Secrets Manager
    secrets = boto3.client("secretsmanager", region_name="eu-west-1")
    arn = secrets.create_secret(Name="redis-auth", SecretString=TOKEN)["ARN"]
    settings = Settings.from_environ(
        {"MAIL_REDIS_ADDR": protected_redis.addr, "MAIL_REDIS_PASSWORD_SECRET_ARN": arn}
    )

    # When the service's client talks to Redis, Then it is let in
    client = build_redis_client(settings)
    assert client.ping()
    assert TOKEN not in repr(client)


def test_a_password_from_the_environment_authenticates(protected_redis: RedisServer) -> None:
    settings = Settings.from_environ(
        {"MAIL_REDIS_ADDR": protected_redis.addr, "MAIL_REDIS_PASSWORD": TOKEN}
    )
    assert build_redis_client(settings).ping()


def test_a_wrong_token_is_the_store_being_unavailable(protected_redis: RedisServer) -> None:
    settings = Settings.from_environ(
        {"MAIL_REDIS_ADDR": protected_redis.addr, "MAIL_REDIS_PASSWORD": "wrong"}
    )
    client = build_redis_client(settings)
    with pytest.raises(StoreUnavailable), translate_errors():
        client.ping()


def test_password_and_secret_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        Settings.from_environ(
            {
                "MAIL_REDIS_ADDR": "127.0.0.1:6379",
                "MAIL_REDIS_PASSWORD": "x",
                "MAIL_REDIS_PASSWORD_SECRET_ARN": (
                    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:redis-AbCdEf"
                ),
            }
        )


def test_an_unreadable_token_is_the_store_being_unavailable(
    protected_redis: RedisServer, aws: Any
) -> None:
    # Given a secret ARN that Secrets Manager does not know
    missing = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:gone-AbCdEf"
    settings = Settings.from_environ(
        {"MAIL_REDIS_ADDR": protected_redis.addr, "MAIL_REDIS_PASSWORD_SECRET_ARN": missing}
    )
    client = build_redis_client(settings)

    # Then talking to Redis fails like an outage (503 at the APIs, back-off in loops)
    with pytest.raises(StoreUnavailable), translate_errors():
        client.ping()
