"""AWS endpoints that never answer or refuse: every call is bounded (DESIGN §4.7).

A silent endpoint is a real TCP listener on a local port that accepts the
connection and never says a byte; a refused one is a port where nothing
listens. They stand in for SQS and Secrets Manager through the standard
``AWS_ENDPOINT_URL_<SERVICE>`` variables, so the clients are the ones the
functions build (``mailcore.aws.clients``). The login-code intake is the
``intake_api`` handler, cold-started in this process; the scheduler and the
worker that send afterwards are the pipeline of ``tests/support/pipeline.py``
on moto's SQS server and a real SMTP server.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

import pytest
import redis

from mailcore.aws.clients import CALL_LIMIT_S, TOTAL_ATTEMPTS
from mailcore.aws.secrets import secret_password_source
from mailcore.aws.sqs_queue import SqsAttemptQueue
from mailcore.composition import sqs_client_from_environment
from mailcore.ports import ClaimedAttempt, DeliveryQueries
from mailcore.services.dispatch import FAST_PATH_RESERVE_MS
from scripts.local_stack.attempt_queue import LocalSqs
from scripts.local_stack.sam_template import QueueSpec
from tests.support.faults import (
    load_handler,
    load_intake_handler,
    login_code_event,
    message_id,
)
from tests.support.network import SilentListener, refused_url
from tests.support.partitions import home_keys
from tests.support.redis_backend import RedisBackend
from tests.support.smtp_pipeline import smtp_environment, smtp_pipeline
from tests.support.smtp_server import SmtpServerFactory

pytestmark = pytest.mark.integration

REGION = "eu-west-1"
ACCOUNT = "123456789012"
NORMAL_RUNS = 5
# "Well under a second more than a normal intake" (the fast path gives up after 300 ms).
EXTRA_ALLOWED_S = 0.75
SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:smtp-password-AbCdEf"


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Region and (dummy) credentials, as Lambda provides them; no endpoint set yet."""
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    for service in ("SQS", "SECRETS_MANAGER"):
        monkeypatch.delenv(f"AWS_ENDPOINT_URL_{service}", raising=False)


@pytest.fixture
def moto_sqs(aws_environment: None) -> Iterator[LocalSqs]:
    """moto's SQS server on a local port, with the attempt queue."""
    local = LocalSqs(QueueSpec("Attempts", 30, 3600, None, None), REGION)
    local.start()
    yield local
    local.stop()


def finished_within[T](seconds: float, call: Callable[[], T], what: str) -> tuple[T, float]:
    """``call()``'s result and duration; fails the test if it has not returned after ``seconds``.

    The call runs on a thread of its own, so a call that hangs fails the test
    at once instead of hanging it.
    """
    outcome: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:
            errors.append(error)

    started = time.monotonic()
    thread = threading.Thread(target=run, name=what, daemon=True)
    thread.start()
    thread.join(seconds)
    elapsed = time.monotonic() - started
    if thread.is_alive():
        pytest.fail(f"{what}: still blocked after {elapsed:.1f}s")
    if errors:
        raise errors[0]
    return outcome[0], elapsed


# --------------------------------------------------------------------------- intake


@pytest.mark.parametrize("endpoint", ["silent", "refused"])
def test_a_login_code_is_answered_at_once_when_sqs_is_not_and_the_scheduler_sends_it_once(
    monkeypatch: pytest.MonkeyPatch,
    redis_server: RedisBackend,
    redis_client: redis.Redis,
    queries: DeliveryQueries,
    moto_sqs: LocalSqs,
    smtp_server: SmtpServerFactory,
    endpoint: str,
) -> None:
    server = smtp_server()
    environment = smtp_environment(
        redis_server.addr, moto_sqs.queue_url, server.addr, **redis_server.environ()
    )

    # Given the normal intake time, against an SQS that answers
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_sqs.endpoint)
    normal_intake = load_intake_handler(monkeypatch, environment)
    events = [login_code_event(f"normal-{n}", f"n{n}@example.com") for n in range(NORMAL_RUNS)]
    normal = [finished_within(10, partial(normal_intake, e), "POST")[1] for e in events]
    normal_s = statistics.median(normal)

    # And an intake whose SQS endpoint accepts connections and never answers, or refuses them
    with SilentListener() as silent:
        url = silent.url if endpoint == "silent" else refused_url()
        monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", url)
        stuck_intake = load_intake_handler(
            monkeypatch, {**environment, "MAIL_ATTEMPT_QUEUE_URL": f"{url}/{ACCOUNT}/attempts"}
        )

        # When a login code is posted
        answer, elapsed = finished_within(
            normal_s + EXTRA_ALLOWED_S,
            lambda: stuck_intake(login_code_event("while-sqs-is-away")),
            f"POST with a {endpoint} SQS",
        )

    # Then it is answered 200 (durably accepted) well within a second of a normal intake
    assert answer["statusCode"] == 200, answer
    assert elapsed < normal_s + EXTRA_ALLOWED_S
    delivery_id = json.loads(answer["body"])["delivery_id"]
    # And the claim the fast path could not queue is back in the schedule, due now
    keys = home_keys(redis_client, delivery_id)
    assert redis_client.zscore(keys.attempt_schedule(), delivery_id) is not None
    assert redis_client.zscore(keys.claims(), delivery_id) is None

    # When the scheduler polls and a worker takes what it queued
    pipeline = smtp_pipeline(moto_sqs.client(), environment)
    assert pipeline.tick().queued >= 1
    pipeline.work()

    # Then the mail arrived exactly once, as the delivery's first and only attempt
    arrived = [m for m in server.received if m.message["Message-ID"] == message_id(delivery_id)]
    assert len(arrived) == 1
    delivery = queries.delivery(delivery_id)
    assert delivery is not None
    assert delivery.status == "sent"
    [attempt] = queries.attempts(delivery_id, delivery.attempt_count)
    assert attempt.status == "provider_accepted"


def test_a_login_code_arriving_late_in_its_invocation_is_left_to_the_scheduler(
    monkeypatch: pytest.MonkeyPatch,
    redis_server: RedisBackend,
    redis_client: redis.Redis,
    moto_sqs: LocalSqs,
    smtp_server: SmtpServerFactory,
) -> None:
    # Given an intake invocation with less time left than the fast path keeps in reserve
    server = smtp_server()
    environment = smtp_environment(
        redis_server.addr, moto_sqs.queue_url, server.addr, **redis_server.environ()
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_sqs.endpoint)
    intake = load_handler(monkeypatch, "intake_api", environment, timeout_ms=FAST_PATH_RESERVE_MS)

    # When a login code is posted
    answer = intake(login_code_event("late-in-the-invocation"))

    # Then it is accepted, and nothing was claimed or queued: it waits in the schedule
    assert answer["statusCode"] == 200, answer
    delivery_id = json.loads(answer["body"])["delivery_id"]
    keys = home_keys(redis_client, delivery_id)
    assert redis_client.zscore(keys.attempt_schedule(), delivery_id) is not None
    pipeline = smtp_pipeline(moto_sqs.client(), environment)
    assert pipeline.queued_messages() == []

    # And the scheduler sends it, once
    assert pipeline.tick().queued == 1
    pipeline.work()
    assert [m.message["Message-ID"] for m in server.received] == [message_id(delivery_id)]


# --------------------------------------------------------------------------- clients


@pytest.mark.parametrize("endpoint", ["silent", "refused"])
def test_the_attempt_queue_gives_up_on_sqs_within_the_client_bound(
    monkeypatch: pytest.MonkeyPatch, aws_environment: None, endpoint: str
) -> None:
    # Given the SQS client the functions build, pointed at an SQS that never answers or refuses
    with SilentListener() as silent:
        url = silent.url if endpoint == "silent" else refused_url()
        monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", url)
        queue = SqsAttemptQueue(sqs_client_from_environment(), f"{url}/{ACCOUNT}/attempts")
        claims = [ClaimedAttempt(f"dlv-{n}", 1, f"token-{n}") for n in range(25)]

        # When the scheduler hands it three batches of claims
        refused, elapsed = finished_within(
            CALL_LIMIT_S + 2, lambda: queue.send(claims), f"SendMessageBatch to a {endpoint} SQS"
        )

        # Then every claim comes back refused (to be released) within one call's bound,
        # after one retry, without trying the other batches
        assert refused == claims
        assert elapsed <= CALL_LIMIT_S + 0.5
        if endpoint == "silent":
            assert silent.connections == TOTAL_ATTEMPTS


def test_a_secrets_manager_that_never_answers_costs_a_bounded_wait(
    monkeypatch: pytest.MonkeyPatch, aws_environment: None
) -> None:
    # Given the password source the functions build, and a Secrets Manager that never answers
    with SilentListener() as silent:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", silent.url)
        password = secret_password_source(SECRET_ARN)

        # When the password is read
        def read() -> BaseException | None:
            try:
                password()
            except Exception as error:
                return error
            return None

        error, elapsed = finished_within(CALL_LIMIT_S + 2, read, "GetSecretValue")

    # Then the read fails after one retry, within the client's bound, not the Lambda timeout
    assert error is not None
    assert "timeout" in repr(error).lower()
    assert elapsed <= CALL_LIMIT_S + 0.5
    assert silent.connections == TOTAL_ATTEMPTS
