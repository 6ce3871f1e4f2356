"""Deliveries all the way to a real SMTP server on a local port."""

from __future__ import annotations

import base64
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from mailcore.composition import build_provider, build_stream_poller
from mailcore.config import Settings
from mailcore.domain.model import Source
from mailcore.domain.states import DeliveryStatus
from tests.support.commands import (
    LOGO_BYTES,
    PDF_BYTES,
    STREAM,
    command,
    publish,
    rendered_payload,
    template_payload,
)
from tests.support.lambda_context import FakeLambdaContext
from tests.support.lambda_runner import invoke_in_fresh_process
from tests.support.partitions import home_keys
from tests.support.pipeline import Pipeline
from tests.support.polling import RecordingObserver, until_drained
from tests.support.redis_backend import RedisBackend
from tests.support.smtp_server import Reply, SmtpServerFactory, SmtpTestServer, Stall

REPO_ROOT = Path(__file__).resolve().parents[2]
MakePipeline = Callable[[SmtpTestServer], Pipeline]


def smtp_environment(redis: RedisBackend, server: SmtpTestServer, queue_url: str) -> dict[str, str]:
    return {
        **redis.environ(),
        "MAIL_SMTP_MODE": "smtp",
        "MAIL_SMTP_ADDR": server.addr,
        "MAIL_SMTP_TLS": "none",
        "MAIL_SMTP_FROM_EMAIL": "noreply@mail.example.com",
        "MAIL_SMTP_FROM_NAME": "Example Mail",
        "MAIL_SMTP_TIMEOUT": "1s",
        "MAIL_STREAM_BLOCK_TIMEOUT": "100ms",
        "MAIL_ATTEMPT_QUEUE_URL": queue_url,
    }


@pytest.fixture
def make_pipeline(
    redis_server: RedisBackend, redis_client: redis.Redis, aws: Any, attempt_queue_url: str
) -> MakePipeline:
    def make(server: SmtpTestServer) -> Pipeline:
        settings = Settings.from_environ(smtp_environment(redis_server, server, attempt_queue_url))
        return Pipeline(settings, aws, build_provider(settings))

    return make


def accept_from_stream(pipeline: Pipeline, client: redis.Redis, *entries: dict[str, str]) -> None:
    for entry in entries:
        publish(client, entry)
    poller = build_stream_poller(pipeline.settings, RecordingObserver(), sqs_client=pipeline.sqs)
    poller.run(until_drained(client, STREAM))


def status(client: redis.Redis, delivery_id: str) -> str:
    return cast(str, client.hget(home_keys(client, delivery_id).delivery(delivery_id), "status"))


def attempt(client: redis.Redis, delivery_id: str, number: int) -> dict[str, str]:
    key = home_keys(client, delivery_id).attempt(delivery_id, number)
    return cast(dict[str, str], client.hgetall(key))


def test_the_received_message_has_the_right_envelope_headers_parts_and_attachments(
    smtp_server: SmtpServerFactory, make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    # Given a rendered command with to, cc, bcc, reply-to, an attachment and an inline image
    server = smtp_server()
    pipeline = make_pipeline(server)
    accept_from_stream(pipeline, redis_client, command(1))

    # When a worker sends it
    reports = pipeline.work()

    # Then the server got one envelope for all recipients, from the configured sender
    assert [r.status for r in reports] == ["sent"]
    [received] = server.received
    assert received.mail_from == "noreply@mail.example.com"
    assert sorted(received.rcpt_tos) == [
        "ada@example.com",
        "audit@example.com",
        "bob@example.com",
    ]
    message = received.message
    assert message["From"] == "Example Mail <noreply@mail.example.com>"
    assert message["To"] == "ada@example.com"
    assert message["Cc"] == "bob@example.com"
    assert message["Reply-To"] == "support@example.com"
    assert message["Bcc"] is None
    assert message["Subject"] == "Your invoice #42"
    assert message["Message-ID"] == "<notif-000001@mail.example.com>"
    assert message["Date"]
    # And the parts: text, HTML with its inline image, and the PDF
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert "your invoice is attached" in text.get_content()
    assert html is not None
    assert "cid:logo@example.com" in html.get_content()
    files = {part.get_filename(): part for part in message.iter_attachments()}
    assert files["invoice-42.pdf"].get_content() == PDF_BYTES
    inline = next(p for p in message.walk() if p["Content-ID"] == "<logo@example.com>")
    assert inline.get_content() == LOGO_BYTES
    assert inline.get_content_disposition() == "inline"
    # And the delivery records the provider's answer
    assert attempt(redis_client, "notif-000001", 1)["summary"].startswith("250")


def test_the_message_id_stays_the_same_across_retries(
    smtp_server: SmtpServerFactory, make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    # Given a server that takes the message only at the second attempt, after a drop-out
    server = smtp_server()
    server.script(Reply(451, "4.3.0 try again later"))
    pipeline = make_pipeline(server)
    accept_from_stream(pipeline, redis_client, command(2))

    pipeline.run_ladder(rounds=1)

    assert status(redis_client, "notif-000002") == "sent"
    assert [m.message["Message-ID"] for m in server.received] == ["<notif-000002@mail.example.com>"]
    first = attempt(redis_client, "notif-000002", 1)
    assert (first["status"], first["outcome"]) == ("provider_rejected", "transient_failure")
    assert first["summary"].startswith("451")


@pytest.mark.parametrize(
    ("behaviour", "attempt_status", "delivery_status"),
    [
        (Reply(421, "4.4.2 closing"), "provider_rejected", "queued"),
        (Reply(452, "4.3.1 insufficient storage", at="rcpt"), "provider_rejected", "queued"),
        (Reply(550, "5.1.1 no such user", at="rcpt"), "provider_rejected", "failed"),
        (Reply(554, "5.7.1 rejected as spam"), "provider_rejected", "failed"),
        (Stall(2.5), "timed_out", "queued"),
    ],
    ids=["421", "452", "550", "554", "stall"],
)
def test_smtp_answers_are_classified_into_the_delivery_life_cycle(
    smtp_server: SmtpServerFactory,
    make_pipeline: MakePipeline,
    redis_client: redis.Redis,
    behaviour: Reply | Stall,
    attempt_status: str,
    delivery_status: str,
) -> None:
    server = smtp_server()
    server.script(behaviour)
    pipeline = make_pipeline(server)
    accept_from_stream(pipeline, redis_client, command(3))

    pipeline.work()

    first = attempt(redis_client, "notif-000003", 1)
    assert first["status"] == attempt_status
    assert status(redis_client, "notif-000003") == delivery_status


def test_html_is_escaped_and_subjects_cannot_inject_headers(
    smtp_server: SmtpServerFactory, make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    # Given a template delivery whose variables try markup and a header break
    server = smtp_server()
    pipeline = make_pipeline(server)
    payload = template_payload(
        variables={
            "name": '<script>alert("x")</script>\r\nBcc: victim@example.org',
            "reset_token": "tok-1",
            "expires_minutes": 30,
        },
        secret_variables=["reset_token"],
    )
    accept_from_stream(pipeline, redis_client, command(4, mode="template", payload=payload))

    pipeline.work()

    [received] = server.received
    # Then the envelope is exactly the intended one, and no header was added
    assert received.rcpt_tos == ["ada@example.com"]
    assert received.message["Bcc"] is None
    assert b"\r\nBcc:" not in received.data.split(b"\r\n\r\n", 1)[0]
    # And the HTML shows the markup as text
    html = received.message.get_body(preferencelist=("html",))
    assert html is not None
    content = html.get_content()
    assert "<script>" not in content
    assert "&lt;script&gt;" in content


def test_the_login_code_travels_in_the_message_but_never_in_the_worker_logs(
    smtp_server: SmtpServerFactory,
    make_pipeline: MakePipeline,
    redis_server: RedisBackend,
    redis_client: redis.Redis,
    attempt_queue_url: str,
    tmp_path: Path,
) -> None:
    # Given a login code accepted and claimed (its SQS message ready for a worker)
    server = smtp_server()
    pipeline = make_pipeline(server)
    delivery_id = pipeline.accept_login_code(locale="fr")
    [message] = pipeline.queued_messages()
    event = json.loads((REPO_ROOT / "events" / "attempt_worker_sqs_batch.json").read_text())
    record = {**event["Records"][0], "body": message["Body"], "messageId": message["MessageId"]}

    # When the attempt worker handles it in its own process, at its most verbose
    environment = smtp_environment(redis_server, server, attempt_queue_url)
    answers, printed = invoke_in_fresh_process(
        "attempt_worker",
        tmp_path,
        {**environment, "POWERTOOLS_LOG_LEVEL": "DEBUG"},
        [{"Records": [record]}],
    )

    # Then the message with the code reached the server, in French
    assert answers == [{"batchItemFailures": []}]
    assert status(redis_client, delivery_id) == "sent"
    [received] = server.received
    body = received.message.get_body(preferencelist=("plain",))
    assert body is not None
    assert "482913" in body.get_content()
    assert received.message["Subject"] == "Votre code de connexion"
    # And the worker logged and counted the attempt, without the code
    assert delivery_id in printed
    assert "AttemptsAccepted" in printed
    assert "482913" not in printed
    assert Source.AUTHSESSION in printed


def test_the_scheduler_handler_dispatches_due_work_when_ticked(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    smtp_server: SmtpServerFactory,
    make_pipeline: MakePipeline,
    redis_server: RedisBackend,
    redis_client: redis.Redis,
    attempt_queue_url: str,
) -> None:
    # Given an accepted delivery whose fast path did not happen (no queue at acceptance)
    server = smtp_server()
    pipeline = make_pipeline(server)
    payload = rendered_payload(attachments=[], cc=[], bcc=[])
    publish(redis_client, command(5, payload=payload))
    no_queue = pipeline.settings.model_copy(update={"attempt_queue_url": None})
    build_stream_poller(no_queue, RecordingObserver()).run(until_drained(redis_client, STREAM))
    keys = home_keys(redis_client, "notif-000005")
    assert redis_client.zscore(keys.attempt_schedule(), "notif-000005") is not None

    # When EventBridge ticks the scheduler with its sample event
    for name, value in smtp_environment(redis_server, server, attempt_queue_url).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MAIL_SCHEDULER_POLL_INTERVAL", "50ms")
    module = importlib.reload(importlib.import_module("scheduler"))
    event = json.loads((REPO_ROOT / "events" / "scheduler_scheduled.json").read_text())
    answer = module.handler(event, FakeLambdaContext(timeout_ms=3400))

    # Then it claimed the delivery and queued it for a worker, which sends it
    assert answer["lease_acquired"] is True
    assert answer["queued"] == 1
    # And it reported the schedule's gauges as EMF metrics
    printed = capsys.readouterr().out
    metrics = [json.loads(line) for line in printed.splitlines() if line.startswith('{"_aws"')]
    names = {m["Name"] for line in metrics for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"AttemptScheduleDepth", "AttemptScheduleOldestAge"} <= names
    # And how many deliveries each status held when it looked (before claiming):
    # one gauge per status, every partition added up
    by_status = {
        line["status"]: line["DeliveriesByStatus"]
        for line in metrics
        if "DeliveriesByStatus" in line
    }
    assert set(by_status) == {str(status) for status in DeliveryStatus}
    assert by_status["queued"] == [1.0]
    assert by_status["sent"] == [0.0]
    pipeline.work()
    assert status(redis_client, "notif-000005") == "sent"
    assert len(server.received) == 1


def test_the_attempt_worker_handler_counts_an_attempt_that_timed_out(
    smtp_server: SmtpServerFactory,
    make_pipeline: MakePipeline,
    redis_server: RedisBackend,
    redis_client: redis.Redis,
    attempt_queue_url: str,
    tmp_path: Path,
) -> None:
    # Given a claimed login code, and a server that stalls past the 1 s SMTP timeout
    server = smtp_server()
    server.script(Stall(2.5))
    pipeline = make_pipeline(server)
    delivery_id = pipeline.accept_login_code()
    [message] = pipeline.queued_messages()
    event = json.loads((REPO_ROOT / "events" / "attempt_worker_sqs_batch.json").read_text())
    record = {**event["Records"][0], "body": message["Body"], "messageId": message["MessageId"]}

    # When the attempt worker handles it in its own process
    environment = smtp_environment(redis_server, server, attempt_queue_url)
    answers, printed = invoke_in_fresh_process(
        "attempt_worker", tmp_path, environment, [{"Records": [record]}]
    )

    # Then the attempt ended timed_out and waits for its retry
    assert answers == [{"batchItemFailures": []}]
    assert attempt(redis_client, delivery_id, 1)["status"] == "timed_out"
    assert status(redis_client, delivery_id) == "queued"
    # And the worker counted it among its EMF metrics
    lines = [json.loads(line) for line in printed.splitlines() if line.startswith('{"_aws"')]
    counted = {name: line[name] for line in lines for name in line if name[:1].isupper()}
    assert counted["AttemptsTimedOut"] == [1.0]
    assert counted["AttemptsTransientFailures"] == [1.0]


def test_the_attempt_worker_handler_skips_claims_it_does_not_hold(
    monkeypatch: pytest.MonkeyPatch,
    smtp_server: SmtpServerFactory,
    redis_server: RedisBackend,
    redis_client: redis.Redis,
    attempt_queue_url: str,
) -> None:
    # Given the sample SQS batch, whose claims this Redis has never seen
    server = smtp_server()
    for name, value in smtp_environment(redis_server, server, attempt_queue_url).items():
        monkeypatch.setenv(name, value)
    module = importlib.reload(importlib.import_module("attempt_worker"))
    event = json.loads((REPO_ROOT / "events" / "attempt_worker_sqs_batch.json").read_text())

    # When the worker gets it
    answer = module.handler(event, FakeLambdaContext())

    # Then nothing is sent and nothing is retried: stale work is dropped
    assert answer == {"batchItemFailures": []}
    assert server.received == []


def test_a_message_that_is_not_a_claim_is_reported_as_a_batch_item_failure(
    monkeypatch: pytest.MonkeyPatch,
    smtp_server: SmtpServerFactory,
    redis_server: RedisBackend,
    redis_client: redis.Redis,
    attempt_queue_url: str,
) -> None:
    server = smtp_server()
    for name, value in smtp_environment(redis_server, server, attempt_queue_url).items():
        monkeypatch.setenv(name, value)
    module = importlib.reload(importlib.import_module("attempt_worker"))
    event = json.loads((REPO_ROOT / "events" / "attempt_worker_sqs_batch.json").read_text())
    event["Records"][1]["body"] = base64.b64encode(b"not json").decode()

    answer = module.handler(event, FakeLambdaContext())

    assert answer == {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["messageId"]}]}
