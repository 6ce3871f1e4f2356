"""X-Ray subsegments, received by a real UDP socket standing in for the daemon.

The functions run as Lambda runs them with active tracing: the daemon's
address in ``AWS_XRAY_DAEMON_ADDRESS`` and the invocation's header in
``_X_AMZN_TRACE_ID``. Each test checks the subsegments' names, trace, parent
chain and annotations, and that no secret (login code, secret variable, SMTP
password, Redis token) and no address is in any datagram.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from mailcore.composition import (
    build_claimed_attempt_steps,
    build_stream_poller,
    load_catalog,
    sender_of,
)
from mailcore.config import Settings
from mailcore.services.attempts import AttemptExecutor
from mailcore.tracing import XRayProvider
from tests.support.api_events import api_event, body_of
from tests.support.commands import STREAM, command, publish, rendered_payload, template_payload
from tests.support.lambda_context import FakeLambdaContext
from tests.support.lambda_runner import invoke_in_fresh_process
from tests.support.pipeline import Pipeline
from tests.support.polling import RecordingObserver, until_drained
from tests.support.redis_backend import RedisBackend
from tests.support.redis_server import RedisServer
from tests.support.smtp_server import SmtpServerFactory
from tests.support.xray_daemon import Document, XRayDaemon, by_name, trace_header

REPO_ROOT = Path(__file__).resolve().parents[2]
LOGIN_CODE = "482913"
SMTP_USER, SMTP_PASSWORD = "mailer", "smtp-pa55word-never-traced"
REDIS_TOKEN = "redis-t0ken-never-traced"
SECRETS = [LOGIN_CODE, SMTP_PASSWORD, REDIS_TOKEN, "tok-SECRET-7781"]
ADDRESSES = ["ada@example.com", "bob@example.com", "audit@example.com"]


def assert_nothing_secret(daemon: XRayDaemon) -> None:
    assert daemon.raw, "no datagram received"
    for datagram in daemon.raw:
        for text in [*SECRETS, *ADDRESSES]:
            assert text.encode() not in datagram, text


def intake_event(key: str, body: dict[str, str]) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((REPO_ROOT / "events" / "intake_api_valid.json").read_text())
    event["body"] = json.dumps(body)
    event["headers"]["Idempotency-Key"] = key
    event["multiValueHeaders"]["Idempotency-Key"] = [key]
    return event


def reload_handler(
    monkeypatch: pytest.MonkeyPatch, module: str, environment: dict[str, str]
) -> ModuleType:
    """Cold-start a handler module in this process with exactly this configuration."""
    for name in Settings.variable_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return importlib.reload(importlib.import_module(module))


@pytest.fixture
def protected_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "auth", password=REDIS_TOKEN)
    server.start()
    yield server
    server.stop()


# --------------------------------------------------------------------------- acceptance


def test_the_auth_intake_traces_each_request_under_the_handler(
    redis_server: RedisBackend,
    redis_client: redis.Redis,
    xray_daemon: XRayDaemon,
    tmp_path: Path,
) -> None:
    # Given the intake in smtp mode, cold-started in its own process with tracing on
    header, root, parent = trace_header()
    body = {"email": "ada@example.com", "code": LOGIN_CODE, "locale": "en"}
    environment = {
        **redis_server.environ(),
        "MAIL_SMTP_MODE": "smtp",
        "MAIL_SMTP_ADDR": "127.0.0.1:2525",
        "MAIL_SMTP_FROM_EMAIL": "noreply@mail.example.com",
        "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address,
        "_X_AMZN_TRACE_ID": header,
    }

    # When a request arrives, is replayed, and its key is reused for another body
    answers, _ = invoke_in_fresh_process(
        "intake_api",
        tmp_path,
        environment,
        [
            intake_event("trace-key-1", body),
            intake_event("trace-key-1", body),
            intake_event("trace-key-1", {**body, "code": "111111"}),
        ],
    )

    # Then each invocation sent its acceptance and its handler subsegment, in that order
    assert [a["statusCode"] for a in answers] == [200, 200, 409]
    delivery_id = json.loads(answers[0]["body"])["delivery_id"]
    documents = xray_daemon.collect()
    assert [d["name"] for d in documents] == ["accept_login_code", "## handler"] * 3
    assert {d["trace_id"] for d in documents} == {root}
    invocations = [documents[i : i + 2] for i in (0, 2, 4)]
    for accept, handler in invocations:
        assert handler["parent_id"] == parent
        assert accept["parent_id"] == handler["id"]
        assert handler["annotations"]["Service"] == "mail"
    # And the handler says which invocation was the cold start
    assert [h["annotations"]["ColdStart"] for _, h in invocations] == [True, False, False]
    # And the acceptance is annotated with ids and enums
    (first, _), (replay, _), (conflict, _) = invocations
    assert first["annotations"] == {
        "source": "authsession",
        "template_id": "auth.login_code",
        "delivery_id": delivery_id,
        "outcome": "sent",
        "replayed": False,
    }
    assert replay["annotations"]["replayed"] is True
    assert replay["annotations"]["delivery_id"] == delivery_id
    # And a refused request is a client error, with our message as its cause
    assert conflict["error"] is True
    assert "fault" not in conflict
    [cause] = conflict["cause"]["exceptions"]
    assert cause["type"] == "IdempotencyConflict"
    assert "authsession" in cause["message"]
    assert_nothing_secret(xray_daemon)
    assert b"111111" not in b"".join(xray_daemon.raw)


def test_the_auth_intake_in_stub_mode_traces_a_suppressed_acceptance(
    monkeypatch: pytest.MonkeyPatch,
    redis_server: RedisBackend,
    redis_client: redis.Redis,
    xray_daemon: XRayDaemon,
) -> None:
    # Given the intake in stub mode, with tracing on
    header, root, parent = trace_header()
    module = reload_handler(
        monkeypatch,
        "intake_api",
        {
            **redis_server.environ(),
            "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address,
            "_X_AMZN_TRACE_ID": header,
        },
    )
    body = {"email": "ada@example.com", "code": LOGIN_CODE, "locale": "en"}

    # When a request arrives
    answer = module.handler(intake_event("stub-key-1", body), FakeLambdaContext())

    # Then the acceptance is traced as suppressed, under the handler
    assert answer["statusCode"] == 200
    named = by_name(xray_daemon.collect())
    accept, handler = named["accept_login_code"], named["## handler"]
    assert (handler["trace_id"], handler["parent_id"]) == (root, parent)
    assert accept["parent_id"] == handler["id"]
    assert accept["annotations"]["outcome"] == "suppressed"
    assert accept["annotations"]["delivery_id"] == body_of(answer)["delivery_id"]
    assert isinstance(handler["annotations"]["ColdStart"], bool)
    assert_nothing_secret(xray_daemon)


def test_an_invocation_that_is_not_sampled_sends_nothing(
    monkeypatch: pytest.MonkeyPatch,
    redis_server: RedisBackend,
    redis_client: redis.Redis,
    xray_daemon: XRayDaemon,
) -> None:
    module = reload_handler(
        monkeypatch,
        "intake_api",
        {
            **redis_server.environ(),
            "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address,
            "_X_AMZN_TRACE_ID": trace_header(sampled=False)[0],
        },
    )
    body = {"email": "ada@example.com", "code": LOGIN_CODE, "locale": "en"}

    answer = module.handler(intake_event("unsampled-1", body), FakeLambdaContext())

    assert answer["statusCode"] == 200
    assert xray_daemon.collect(wait=0.3) == []


def test_stream_acceptance_and_rendering_are_traced_per_batch_and_per_attempt(
    redis_server: RedisBackend,
    redis_client: redis.Redis,
    xray_daemon: XRayDaemon,
    smtp_server: SmtpServerFactory,
    aws: Any,
    attempt_queue_url: str,
) -> None:
    # Given a rendered command, a template command missing a variable, and a malformed entry
    server = smtp_server()
    settings = Settings.from_environ(
        {
            **redis_server.environ(),
            "MAIL_SMTP_MODE": "smtp",
            "MAIL_SMTP_ADDR": server.addr,
            "MAIL_SMTP_TLS": "none",
            "MAIL_SMTP_FROM_EMAIL": "noreply@mail.example.com",
            "MAIL_ATTEMPT_QUEUE_URL": attempt_queue_url,
        }
    )
    incomplete = template_payload(variables={"name": "Ada", "reset_token": "tok-SECRET-7781"})
    entry_ids = [
        publish(redis_client, command(1, payload=rendered_payload(attachments=[]))),
        publish(redis_client, command(2, payload=incomplete, mode="template")),
        publish(redis_client, command(3, source="somebody")),
    ]
    header, root, parent = trace_header()
    tracing = XRayProvider(settings.xray_daemon_address or xray_daemon.address, lambda: header)

    # When the poller accepts them and a worker executes both attempts
    poller = build_stream_poller(settings, RecordingObserver(), sqs_client=aws, tracing=tracing)
    poller.run(until_drained(redis_client, STREAM))
    pipeline = Pipeline(settings, aws, build_provider_for(settings))
    pipeline.executor = AttemptExecutor(
        build_claimed_attempt_steps(settings),
        load_catalog(settings),
        pipeline.provider,
        sender_of(settings),
        pipeline.clock,
        tracing=tracing,
    )
    reports = {report.delivery_id: report for report in pipeline.work()}

    # Then the batch is one subsegment, annotated with counts and entry ids
    assert reports["notif-000001"].status == "sent"
    assert reports["notif-000002"].outcome == "render_failed"
    documents = xray_daemon.collect()
    assert {d["trace_id"] for d in documents} == {root}
    assert {d["parent_id"] for d in documents} == {parent}
    [batch] = [d for d in documents if d["name"] == "accept_stream_batch"]
    assert batch["annotations"] == {
        "entries": 3,
        "first_entry_id": entry_ids[0],
        "last_entry_id": entry_ids[2],
        "accepted": 2,
        "duplicates": 0,
        "malformed": 1,
        "offset_moved": False,
    }
    # And each attempt rendered (or failed to), and only the rendered one was sent
    renders = {d["annotations"]["delivery_id"]: d for d in documents if d["name"] == "render"}
    sends = [d for d in documents if d["name"] == "provider_send"]
    assert renders["notif-000001"]["annotations"] == {
        "delivery_id": "notif-000001",
        "attempt_no": 1,
        "source": "notification",
        "outcome": "rendered",
    }
    failed = renders["notif-000002"]
    assert failed["annotations"]["outcome"] == "render_failed"
    assert failed["annotations"]["render_error"] == "missing_variables"
    assert failed["annotations"]["template_id"] == "account.password_reset"
    assert failed["error"] is True
    assert "fault" not in failed
    [cause] = failed["cause"]["exceptions"]
    assert cause["type"] == "RenderError"
    assert "expires_minutes" in cause["message"]
    [send] = sends
    assert send["annotations"]["delivery_id"] == "notif-000001"
    assert (send["annotations"]["outcome"], send["annotations"]["attempt_status"]) == (
        "accepted",
        "provider_accepted",
    )
    # And nothing of the commands' content is in the trace
    assert_nothing_secret(xray_daemon)
    for text in ["Your invoice", "Hello Ada", "Ada"]:
        assert not any(text.encode() in datagram for datagram in xray_daemon.raw), text


def build_provider_for(settings: Settings) -> Any:
    from mailcore.composition import build_provider

    return build_provider(settings)


# --------------------------------------------------------------------------- attempts and resend


@pytest.fixture
def traced_smtp_environment(
    protected_redis: RedisServer,
    smtp_server: SmtpServerFactory,
    xray_daemon: XRayDaemon,
    attempt_queue_url: str,
) -> dict[str, str]:
    """smtp mode against a password-protected Redis and an SMTP server that needs AUTH."""
    server = smtp_server(require_auth=(SMTP_USER, SMTP_PASSWORD))
    return {
        "MAIL_REDIS_ADDR": protected_redis.addr,
        "MAIL_REDIS_PASSWORD": REDIS_TOKEN,
        "MAIL_SMTP_MODE": "smtp",
        "MAIL_SMTP_ADDR": server.addr,
        "MAIL_SMTP_TLS": "none",
        "MAIL_SMTP_USERNAME": SMTP_USER,
        "MAIL_SMTP_PASSWORD": SMTP_PASSWORD,
        "MAIL_SMTP_FROM_EMAIL": "noreply@mail.example.com",
        "MAIL_SMTP_TIMEOUT": "2s",
        "MAIL_ATTEMPT_QUEUE_URL": attempt_queue_url,
        "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address,
    }


def work_queue(
    monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline, environment: dict[str, str], header: str
) -> dict[str, Any]:
    """The attempt_worker handler, cold-started here, on what the queue holds."""
    messages = pipeline.queued_messages()
    event = json.loads((REPO_ROOT / "events" / "attempt_worker_sqs_batch.json").read_text())
    records = [
        {**event["Records"][0], "body": m["Body"], "messageId": m["MessageId"]} for m in messages
    ]
    for message in messages:
        pipeline.sqs.delete_message(
            QueueUrl=pipeline.queue_url, ReceiptHandle=message["ReceiptHandle"]
        )
    worker = reload_handler(
        monkeypatch, "attempt_worker", {**environment, "_X_AMZN_TRACE_ID": header}
    )
    answer: dict[str, Any] = worker.handler({"Records": records}, FakeLambdaContext())
    return answer


def attempt_chain(documents: list[Document], parent: str) -> dict[str, Document]:
    """The worker invocation's subsegments, checked to nest handler > record > render, send."""
    named = by_name(documents)
    handler = named["## handler"]
    record = named["## attempt_worker.record_handler"]
    assert handler["parent_id"] == parent
    assert record["parent_id"] == handler["id"]
    assert named["render"]["parent_id"] == record["id"]
    assert named["provider_send"]["parent_id"] == record["id"]
    assert set(named) == {
        "## handler",
        "## attempt_worker.record_handler",
        "render",
        "provider_send",
    }
    return named


def test_an_attempt_traces_render_and_send_under_the_worker_without_secrets(
    monkeypatch: pytest.MonkeyPatch,
    traced_smtp_environment: dict[str, str],
    xray_daemon: XRayDaemon,
    aws: Any,
) -> None:
    # Given a login code accepted and claimed, over an authenticated Redis and SMTP server
    settings = Settings.from_environ(traced_smtp_environment)
    pipeline = Pipeline(settings, aws, build_provider_for(settings))
    delivery_id = pipeline.accept_login_code(locale="de")

    # When the worker executes it in a sampled invocation
    header, root, parent = trace_header()
    answer = work_queue(monkeypatch, pipeline, traced_smtp_environment, header)

    # Then rendering and sending are subsegments of the record, under the handler
    assert answer == {"batchItemFailures": []}
    named = attempt_chain(xray_daemon.collect(), parent)
    assert {d["trace_id"] for d in named.values()} == {root}
    expected = {
        "delivery_id": delivery_id,
        "attempt_no": 1,
        "source": "authsession",
        "template_id": "auth.login_code",
    }
    assert named["render"]["annotations"] == {
        **expected,
        "outcome": "rendered",
        "locale_fallback_used": False,
    }
    assert named["provider_send"]["annotations"] == {
        **expected,
        "outcome": "accepted",
        "attempt_status": "provider_accepted",
    }
    assert named["## handler"]["annotations"]["Service"] == "mail"
    # And neither the code, the SMTP password, the Redis token nor the address is in it
    assert_nothing_secret(xray_daemon)


def test_a_resend_is_traced_with_parent_and_clone_and_the_clone_attempt_too(
    monkeypatch: pytest.MonkeyPatch,
    traced_smtp_environment: dict[str, str],
    xray_daemon: XRayDaemon,
    aws: Any,
) -> None:
    # Given a login code that was delivered
    settings = Settings.from_environ(traced_smtp_environment)
    pipeline = Pipeline(settings, aws, build_provider_for(settings))
    parent_id = pipeline.accept_login_code()
    pipeline.work()

    # When an operator resends it, and asks to resend one that does not exist
    header, root, parent = trace_header()
    operator = reload_handler(
        monkeypatch, "operator_api", {**traced_smtp_environment, "_X_AMZN_TRACE_ID": header}
    )
    path = "/api/v1/internal/deliveries/{delivery_id}/resend"
    answers = [
        operator.handler(
            api_event(
                "POST",
                path,
                path_parameters={"delivery_id": delivery_id},
                headers={"Idempotency-Key": "resend-trace-1"},
            ),
            FakeLambdaContext(),
        )
        for delivery_id in (parent_id, "dlv_unknown")
    ]

    # Then the resend is a subsegment under the handler, naming parent and clone
    assert [a["statusCode"] for a in answers] == [201, 404]
    clone_id = body_of(answers[0])["delivery_id"]
    documents = xray_daemon.collect()
    assert [d["name"] for d in documents] == ["resend", "## handler"] * 2
    (resend, handler), (missing, _) = documents[:2], documents[2:]
    assert (handler["trace_id"], handler["parent_id"]) == (root, parent)
    assert resend["parent_id"] == handler["id"]
    assert resend["annotations"] == {
        "parent_delivery_id": parent_id,
        "delivery_id": clone_id,
        "source": "operator_resend",
        "template_id": "auth.login_code",
        "replayed": False,
    }
    # And an unknown delivery is a client error, with our message as its cause
    assert missing["error"] is True
    assert missing["annotations"] == {"parent_delivery_id": "dlv_unknown"}
    assert missing["cause"]["exceptions"][0] == {
        "id": missing["cause"]["exceptions"][0]["id"],
        "type": "NotFound",
        "message": "no delivery dlv_unknown",
    }

    # When a worker sends the clone, in the next sampled invocation
    header, _, parent = trace_header()
    answer = work_queue(monkeypatch, pipeline, traced_smtp_environment, header)

    # Then its attempt is traced as the clone's, from the operator's resend
    assert answer == {"batchItemFailures": []}
    named = attempt_chain(xray_daemon.collect(), parent)
    assert named["render"]["annotations"]["delivery_id"] == clone_id
    assert named["render"]["annotations"]["source"] == "operator_resend"
    assert named["provider_send"]["annotations"]["outcome"] == "accepted"
    assert_nothing_secret(xray_daemon)
