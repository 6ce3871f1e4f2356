"""The pipeline (tests/support/pipeline.py) sending over SMTP, with settings a test adjusts."""

from __future__ import annotations

from typing import Any

import redis

from mailcore.composition import build_provider, build_stream_poller
from mailcore.config import Settings
from tests.support.commands import STREAM, publish
from tests.support.pipeline import Pipeline
from tests.support.polling import RecordingObserver, until_drained

FROM_EMAIL = "noreply@mail.example.com"


def smtp_environment(
    redis_addr: str, queue_url: str, smtp_addr: str, **overrides: str
) -> dict[str, str]:
    """The ``MAIL_*`` settings of a service sending through ``smtp_addr``; overrides win."""
    return {
        "MAIL_REDIS_ADDR": redis_addr,
        "MAIL_SMTP_MODE": "smtp",
        "MAIL_SMTP_ADDR": smtp_addr,
        "MAIL_SMTP_TLS": "none",
        "MAIL_SMTP_FROM_EMAIL": FROM_EMAIL,
        "MAIL_SMTP_FROM_NAME": "Example Mail",
        "MAIL_SMTP_TIMEOUT": "2s",
        "MAIL_STREAM_BLOCK_TIMEOUT": "100ms",
        "MAIL_ATTEMPT_QUEUE_URL": queue_url,
        **overrides,
    }


def smtp_pipeline(sqs: Any, environment: dict[str, str]) -> Pipeline:
    settings = Settings.from_environ(environment)
    return Pipeline(settings, sqs, build_provider(settings))


def accept_from_stream(
    pipeline: Pipeline, client: redis.Redis, *entries: dict[str, str]
) -> RecordingObserver:
    """Publish the entries and run the stream poller until it has handled them all."""
    for entry in entries:
        publish(client, entry)
    observer = RecordingObserver()
    poller = build_stream_poller(pipeline.settings, observer, sqs_client=pipeline.sqs)
    poller.run(until_drained(client, STREAM))
    return observer
