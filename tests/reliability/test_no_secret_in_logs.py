"""No login code, password or token in any log: every function at DEBUG, and the watch itself.

The session-wide watch (tests/support/secret_watch.py, loaded by
tests/conftest.py) fails the whole run if a known secret appears in any log
record or captured output of any test. Here: a run through every function,
at its most verbose, on the paths that handle those secrets (accepted,
replayed, refused, sent, rejected by a server quoting them, retried, read and
resent by an operator, Redis gone); and proof that the watch catches a leak.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailcore.config import Settings
from tests.support.api_events import api_event, body_of
from tests.support.commands import command, publish, template_payload
from tests.support.handlers import cold_start, invoke, service_logs_at_debug
from tests.support.redis_server import RedisServer
from tests.support.secret_watch import (
    KNOWN_SECRETS,
    LOGIN_CODE,
    REDIS_TOKEN,
    SECRET_VARIABLE,
    SMTP_PASSWORD,
    sightings,
    watch,
)
from tests.support.smtp_pipeline import smtp_environment
from tests.support.smtp_server import Reply, SmtpServerFactory

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE = "/api/v1/internal"
SMTP_USER = "mailer"


@pytest.fixture
def protected_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", password=REDIS_TOKEN)
    server.start()
    yield server
    server.stop()


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((REPO_ROOT / "events" / f"{name}.json").read_text())
    return event


def worker_batch(sqs: Any, queue_url: str) -> dict[str, Any]:
    """The SQS event for what waits on the attempt queue, as the event source mapping sends it."""
    template = sample("attempt_worker_sqs_batch")["Records"][0]
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    for message in messages:
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return {
        "Records": [{**template, "body": m["Body"], "messageId": m["MessageId"]} for m in messages]
    }


def login_code_request(key: str, **body: str) -> dict[str, Any]:
    return api_event(
        "POST",
        f"{BASE}/login-code-deliveries",
        headers={"Idempotency-Key": key},
        body={"email": "ada@example.com", "code": LOGIN_CODE, "locale": "en", **body},
    )


@pytest.fixture
def debug_logs() -> Iterator[None]:
    """The service's logs at DEBUG for the whole test, on this process's stdout."""
    with service_logs_at_debug():
        yield


def test_every_function_at_debug_keeps_every_secret_out_of_its_logs(
    debug_logs: None,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    protected_redis: RedisServer,
    smtp_server: SmtpServerFactory,
    aws: Any,
    attempt_queue_url: str,
) -> None:
    # Given Redis behind its AUTH token, an SMTP server behind a password that
    # quotes each mail's secret back when it refuses it, and every function
    # configured with those secrets, logging at DEBUG
    server = smtp_server(tls="starttls", require_auth=(SMTP_USER, SMTP_PASSWORD))
    server.script(
        *[Reply(451, f"4.7.1 later: {LOGIN_CODE}")] * 2,
        *[Reply(451, f"4.7.1 later: {SECRET_VARIABLE}")] * 2,
    )
    environment = smtp_environment(
        protected_redis.addr,
        attempt_queue_url,
        server.addr,
        MAIL_REDIS_PASSWORD=REDIS_TOKEN,
        MAIL_SMTP_TLS="starttls",
        MAIL_SMTP_INSECURE_SKIP_VERIFY="true",
        MAIL_SMTP_USERNAME=SMTP_USER,
        MAIL_SMTP_PASSWORD=SMTP_PASSWORD,
        MAIL_RETRY_SCHEDULE="1s",
        MAIL_SCHEDULER_POLL_INTERVAL="50ms",
    )
    functions = {
        name: cold_start(monkeypatch, name, environment)
        for name in ("intake_api", "stream_poller", "attempt_worker", "scheduler", "operator_api")
    }
    answers: list[dict[str, Any]] = []

    def send_until_dead_lettered() -> None:
        """A worker sends, the server refuses, the scheduler retries once, refused again."""
        worker = functions["attempt_worker"]
        assert invoke(worker, worker_batch(aws, attempt_queue_url)) == {"batchItemFailures": []}
        time.sleep(1.1)
        invoke(functions["scheduler"], sample("scheduler_scheduled"), timeout_ms=3400)
        assert invoke(worker, worker_batch(aws, attempt_queue_url)) == {"batchItemFailures": []}

    # When the Auth service sends a login code, replays it, conflicts and errs
    intake = functions["intake_api"]
    for event in (
        login_code_request("login-1"),
        login_code_request("login-1"),
        login_code_request("login-1", code="other-code-1"),
        login_code_request("login-2", email=LOGIN_CODE),
        login_code_request("login-3", code=LOGIN_CODE + "!"),
        login_code_request("login-4", extra=LOGIN_CODE),
    ):
        answers.append(invoke(intake, event))
    assert [a["statusCode"] for a in answers] == [200, 200, 409, 400, 400, 400]
    login_id = body_of(answers[0])["delivery_id"]
    # And the login code is refused until it is dead-lettered
    send_until_dead_lettered()

    # And the Notification service publishes a mail with a secret variable,
    # and a malformed command carrying it, and that mail is refused likewise
    client = protected_redis.client()
    variables = {"name": "Ada", "reset_token": SECRET_VARIABLE, "expires_minutes": 30}
    publish(client, command(1, mode="template", payload=template_payload(variables=variables)))
    broken = template_payload(variables=variables, unexpected=True)
    publish(client, command(2, mode="template", payload=broken))
    invoke(functions["stream_poller"], sample("stream_poller_scheduled"), timeout_ms=3600)
    send_until_dead_lettered()

    # And an operator reads everything and resends the login code
    operator = functions["operator_api"]
    path = {"delivery_id": login_id}
    for event in (
        api_event("GET", f"{BASE}/deliveries"),
        api_event("GET", f"{BASE}/deliveries/{{delivery_id}}", path_parameters=path),
        api_event("GET", f"{BASE}/deliveries/{{delivery_id}}/attempts", path_parameters=path),
        api_event("GET", f"{BASE}/dead-letters"),
        api_event("GET", f"{BASE}/malformed-commands"),
        api_event(
            "POST",
            f"{BASE}/deliveries/{{delivery_id}}/resend",
            path_parameters=path,
            headers={"Idempotency-Key": "resend-1"},
        ),
    ):
        answers.append(invoke(operator, event))

    # And Redis goes away under the intake
    protected_redis.stop()
    answers.append(invoke(intake, login_code_request("login-5")))

    # Then it all happened as it should
    statuses = {
        d["delivery_id"]: d["status"] for d in body_of(answers[6])["items"] if "delivery_id" in d
    }
    assert statuses == {login_id: "dead_letter", "notif-000001": "dead_letter"}
    assert answers[-2]["statusCode"] == 201
    assert answers[-1]["statusCode"] == 503
    assert server.received == []
    # And no answer carried a secret
    for name, value in KNOWN_SECRETS.items():
        assert [i for i, a in enumerate(answers) if value in a["body"]] == [], name
    # And no log record of this test did (its captured output is checked at the end
    # of the session, with every other test's)
    assert [s for s in sightings() if s.test == request.node.nodeid] == []


LEAKY_TESTS = """
import logging
import subprocess
import sys

from tests.support.secret_watch import LOGIN_CODE, REDIS_TOKEN, SECRET_VARIABLE, watch

# A logger that keeps its records to itself: pytest never sees them.
QUIET = logging.getLogger("quiet.service")
QUIET.propagate = False
QUIET.addHandler(logging.NullHandler())


def test_prints_a_login_code():
    print("sending code", LOGIN_CODE)


def test_logs_a_token_where_pytest_does_not_look():
    QUIET.error("connecting with %s", REDIS_TOKEN)


def test_hands_in_what_a_subprocess_printed():
    code = "import sys; print(sys.argv[1])"
    out = subprocess.run(
        [sys.executable, "-c", code, SECRET_VARIABLE], capture_output=True, text=True
    ).stdout
    watch(out, "the stdout of a subprocess")


def test_clean():
    print("nothing to see")
"""


def test_the_watch_fails_a_session_where_a_secret_was_logged(tmp_path: Path) -> None:
    # Given a session whose tests all pass but leak a secret three different ways
    (tmp_path / "test_leaky.py").write_text(textwrap.dedent(LEAKY_TESTS))

    # When it runs with the watch
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
            *("-p", "tests.support.secret_watch", "test_leaky.py"),
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # Then the session fails, naming each leaking test and which secret, never its value
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output
    assert "4 passed" in output
    assert "known secrets in captured output" in output
    assert "test_prints_a_login_code: the login code in Captured stdout call" in output
    assert (
        "test_logs_a_token_where_pytest_does_not_look: "
        "the Redis AUTH token in log record of quiet.service"
    ) in output
    assert (
        "test_hands_in_what_a_subprocess_printed: "
        "the secret template variable in the stdout of a subprocess"
    ) in output
    assert "test_clean:" not in output
    for value in KNOWN_SECRETS.values():
        assert value not in output
    watch(output, "the inner session's report")  # and the report itself is clean


def test_secrets_in_the_service_settings_are_never_shown() -> None:
    # Given settings carrying the SMTP password and the Redis token
    settings = Settings.from_environ(
        {
            "MAIL_REDIS_ADDR": "127.0.0.1:6379",
            "MAIL_REDIS_PASSWORD": REDIS_TOKEN,
            "MAIL_SMTP_MODE": "smtp",
            "MAIL_SMTP_ADDR": "127.0.0.1:2525",
            "MAIL_SMTP_FROM_EMAIL": "noreply@mail.example.com",
            "MAIL_SMTP_USERNAME": SMTP_USER,
            "MAIL_SMTP_PASSWORD": SMTP_PASSWORD,
        }
    )

    # When they are printed, logged or dumped the usual ways
    shown = [repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())]

    # Then neither secret appears
    for text in shown:
        assert REDIS_TOKEN not in text
        assert SMTP_PASSWORD not in text


def test_a_secret_in_a_binary_body_is_not_logged(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, redis_server: RedisServer
) -> None:
    # Given a request whose body is binary (base64 in the event) and unreadable
    intake = cold_start(
        monkeypatch,
        "intake_api",
        {
            "MAIL_REDIS_ADDR": redis_server.addr,
            "MAIL_SMTP_MODE": "stub",
        },
    )
    event = api_event("POST", f"{BASE}/login-code-deliveries", headers={"Idempotency-Key": "b"})
    raw = json.dumps({"email": "ada@example.com", "code": LOGIN_CODE}).encode() + b"\xff"
    event.update(body=base64.b64encode(raw).decode(), isBase64Encoded=True)

    # When the intake refuses it, at DEBUG
    with service_logs_at_debug():
        answer = invoke(intake, event)

    # Then neither the answer nor the logs carry the code
    assert answer["statusCode"] == 400
    assert LOGIN_CODE not in answer["body"]
    assert [s for s in sightings() if s.test == request.node.nodeid] == []
