"""SMTP credentials read from Secrets Manager (moto) and used against a real SMTP server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from mailcore.aws.secrets import secret_password_source
from mailcore.composition import build_provider
from mailcore.config import Settings
from mailcore.domain.model import Delivery, Envelope, PayloadMode, Source
from mailcore.domain.states import AttemptStatus, DeliveryStatus, ProviderOutcome
from mailcore.mail.mime import Sender, build_message
from tests.support.smtp_server import SmtpServerFactory


@pytest.fixture
def secrets(aws: Any) -> Any:
    return boto3.client("secretsmanager", region_name="eu-west-1")


def test_a_plain_secret_is_the_password(secrets: Any) -> None:
    arn = secrets.create_secret(Name="smtp", SecretString="pa55-word")["ARN"]
    assert secret_password_source(arn, secrets)() == "pa55-word"


def test_a_json_secret_gives_its_password_field(secrets: Any) -> None:
    arn = secrets.create_secret(
        Name="smtp-json", SecretString='{"username": "mailer", "password": "pa55-json"}'
    )["ARN"]
    assert secret_password_source(arn, secrets)() == "pa55-json"


def test_the_secret_is_cached_and_a_rotation_is_seen_after_the_cache_period(
    secrets: Any,
) -> None:
    arn = secrets.create_secret(Name="smtp-rotating", SecretString="first")["ARN"]
    cached = secret_password_source(arn, secrets, max_age=300)
    uncached = secret_password_source(arn, secrets, max_age=0)
    assert cached() == "first"

    secrets.put_secret_value(SecretId=arn, SecretString="second")

    assert cached() == "first"  # within the cache period: no Secrets Manager call
    assert uncached() == "second"


def test_the_smtp_provider_authenticates_with_the_secret(
    secrets: Any, smtp_server: SmtpServerFactory
) -> None:
    # Given an SMTP server that requires AUTH, and the password only in Secrets Manager
    server = smtp_server(tls="starttls", require_auth=("mailer", "s3cret-from-sm"))
    arn = secrets.create_secret(Name="smtp-auth", SecretString="s3cret-from-sm")["ARN"]
    settings = Settings.from_environ(
        {
            "MAIL_REDIS_ADDR": "127.0.0.1:6379",
            "MAIL_SMTP_MODE": "smtp",
            "MAIL_SMTP_ADDR": server.addr,
            "MAIL_SMTP_TLS": "starttls",
            "MAIL_SMTP_INSECURE_SKIP_VERIFY": "true",
            "MAIL_SMTP_USERNAME": "mailer",
            "MAIL_SMTP_PASSWORD_SECRET_ARN": arn,
            "MAIL_SMTP_FROM_EMAIL": "noreply@mail.example.com",
        }
    )
    provider = build_provider(settings, secrets_client=secrets)
    delivery = Delivery(
        delivery_id="dlv-secret-1",
        source=Source.NOTIFICATION,
        status=DeliveryStatus.SENDING,
        payload_mode=PayloadMode.RENDERED,
        envelope=Envelope(to=("ada@example.com",)),
        idempotency_key="k",
        created_at_ms=0,
        updated_at_ms=0,
    )
    message = build_message(
        delivery, "Hello", "Hi Ada", None, Sender("noreply@mail.example.com"), now=datetime.now(UTC)
    )

    # When a message is sent
    result = provider.send(
        message, envelope_from="noreply@mail.example.com", recipients=["ada@example.com"]
    )
    provider.close()

    # Then the server saw an authenticated, encrypted session, and the password is nowhere
    assert (result.outcome, result.attempt_status) == (
        ProviderOutcome.ACCEPTED,
        AttemptStatus.PROVIDER_ACCEPTED,
    )
    [received] = server.received
    assert (received.login, received.tls) == ("mailer", True)
    assert "s3cret-from-sm" not in result.summary
