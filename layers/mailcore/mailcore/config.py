"""The service's configuration: one validated model of the ``MAIL_*`` variables.

This module is the only place that reads the process environment
(:func:`load_settings`); everything else receives a :class:`Settings`.
Invalid configuration raises :class:`ConfigError` at cold start, naming every
offending variable, so a bad deploy fails loudly before it takes traffic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
)

from mailcore.durations import parse_duration


class ConfigError(ValueError):
    """Configuration is invalid; the message names each variable at fault."""


class SmtpMode(StrEnum):
    """How deliveries leave the service."""

    STUB = "stub"  # accept and record, never send: auth mail ends `suppressed`
    SMTP = "smtp"  # send over SMTP: auth mail is `queued` for a first attempt


def _go_duration(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be a positive duration")
    return value


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be host:port, for example 127.0.0.1:6379")
    return value


Duration = Annotated[timedelta, BeforeValidator(_go_duration), AfterValidator(_positive)]
HostPort = Annotated[str, AfterValidator(_host_port)]


class Settings(BaseModel):
    """Every ``MAIL_*`` setting; the alias of each field is its variable name."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    redis_addr: HostPort = Field(
        alias="MAIL_REDIS_ADDR",
        description="Redis (or ElastiCache) endpoint as host:port. Required.",
    )
    redis_username: str | None = Field(
        default=None,
        alias="MAIL_REDIS_USERNAME",
        description="Redis ACL user name; empty for the default user.",
    )
    redis_password: SecretStr | None = Field(
        default=None,
        alias="MAIL_REDIS_PASSWORD",
        description="Redis AUTH password or token. Never logged.",
    )
    redis_db: int = Field(
        default=0,
        ge=0,
        le=15,
        alias="MAIL_REDIS_DB",
        description="Logical database (standalone Redis only; clusters use 0).",
    )
    redis_tls_enabled: bool = Field(
        default=False,
        alias="MAIL_REDIS_TLS_ENABLED",
        description="Connect to Redis over TLS (required by ElastiCache Serverless).",
    )
    redis_operation_timeout: Duration = Field(
        default=timedelta(milliseconds=500),
        alias="MAIL_REDIS_OPERATION_TIMEOUT",
        description="Connect and per-command timeout; past it intake answers 503.",
    )
    smtp_mode: SmtpMode = Field(
        default=SmtpMode.STUB,
        alias="MAIL_SMTP_MODE",
        description="`stub` records auth mail as suppressed; `smtp` queues it for sending.",
    )
    idempotency_ttl: Duration = Field(
        default=timedelta(hours=168),
        alias="MAIL_IDEMPOTENCY_TTL",
        description="How long an Idempotency-Key is remembered for replays.",
    )
    delivery_ttl: Duration = Field(
        default=timedelta(hours=720),
        alias="MAIL_DELIVERY_TTL",
        description="Retention of a delivery after it reaches a terminal state.",
    )
    malformed_command_ttl: Duration = Field(
        default=timedelta(hours=2160),
        alias="MAIL_MALFORMED_COMMAND_TTL",
        description="Retention of a malformed stream command record.",
    )
    redis_command_stream: str = Field(
        default="mail:delivery_commands",
        min_length=1,
        max_length=200,
        alias="MAIL_REDIS_COMMAND_STREAM",
        description="The Redis Stream the Notification service adds mail commands to.",
    )
    stream_block_timeout: Duration = Field(
        default=timedelta(seconds=2),
        alias="MAIL_STREAM_BLOCK_TIMEOUT",
        description="How long one XREAD waits for new commands before the poller loops.",
    )
    stream_batch_size: int = Field(
        default=100,
        ge=1,
        le=1000,
        alias="MAIL_STREAM_BATCH_SIZE",
        description="Most stream entries read, and accepted in one atomic step, at a time.",
    )
    max_recipients: int = Field(
        default=50,
        ge=1,
        le=1000,
        alias="MAIL_MAX_RECIPIENTS",
        description="Most envelope recipients (to + cc + bcc) a stream command may carry.",
    )
    max_subject_chars: int = Field(
        default=255,
        ge=1,
        le=998,
        alias="MAIL_MAX_SUBJECT_CHARS",
        description="Longest subject a rendered stream command may carry.",
    )
    max_attachment_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=0,
        le=40 * 1024 * 1024,
        alias="MAIL_MAX_ATTACHMENT_BYTES",
        description="Most attachment bytes (decoded, all attachments) per stream command.",
    )

    @property
    def redis_host(self) -> str:
        return self.redis_addr.rpartition(":")[0].strip("[]")

    @property
    def redis_port(self) -> int:
        return int(self.redis_addr.rpartition(":")[2])

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Validate the ``MAIL_*`` entries of ``environ``; empty values count as unset."""
        values = {
            name: value
            for name, value in environ.items()
            if name.startswith("MAIL_") and value.strip() != ""
        }
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            raise ConfigError(_describe(error)) from None

    @classmethod
    def variable_names(cls) -> list[str]:
        return [str(field.alias) for field in cls.model_fields.values()]


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        variable = ".".join(str(part) for part in item["loc"]) or "configuration"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "is required"
        problems.append(f"{variable} {message}")
    return "invalid configuration: " + "; ".join(problems)


def load_settings() -> Settings:
    """Read the process environment once, at cold start."""
    return Settings.from_environ(os.environ)
