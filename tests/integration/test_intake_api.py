"""The intake_api Lambda handler, invoked with API Gateway events as Lambda would."""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from mailcore.config import Settings
from mailcore.domain.model import Source
from mailcore.store.keys import RedisKeys, partition_of
from tests.support.api_events import body_of, header
from tests.support.fakes import SMTP_MODE_ENV
from tests.support.lambda_context import FakeLambdaContext
from tests.support.lambda_runner import invoke_in_fresh_process
from tests.support.network import free_port
from tests.support.partitions import home_keys, total
from tests.support.redis_backend import RedisBackend
from tests.support.redis_server import RedisServer
from tests.support.store_invariants import count_deliveries, find_partial_state, text_keys

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS = REPO_ROOT / "events"
Invoke = Callable[[dict[str, Any]], dict[str, Any]]


def sample_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"intake_api_{name}.json").read_text())
    return event


def request_event(
    body: object = None,
    *,
    key: str | None = "key-0001",
    raw_body: str | None = None,
) -> dict[str, Any]:
    """The valid sample event with its body and Idempotency-Key replaced."""
    event = sample_event("valid")
    event["body"] = raw_body if raw_body is not None else json.dumps(body)
    for headers in (event["headers"], event["multiValueHeaders"]):
        headers.pop("Idempotency-Key")
        if key is not None:
            headers["Idempotency-Key"] = key if headers is event["headers"] else [key]
    return event


VALID_BODY = {"email": "ada@example.com", "code": "482913", "locale": "en"}
# What a 400 says of each rule: words, never the regular expression behind it.
IDEMPOTENCY_KEY_RULE = (
    "header Idempotency-Key must be 1 to 128 visible ASCII characters "
    "(no spaces or control characters)"
)
CODE_RULE = "code: must be 4 to 32 characters: letters, digits or '-'"
LOCALE_RULE = (
    "locale: must be a language tag such as en, pt-BR or en_US: 2 or 3 letters, "
    "then subtags of 1 to 8 letters or digits, at most 35 characters"
)


@pytest.fixture
def load_intake_api(
    monkeypatch: pytest.MonkeyPatch, lambda_context: FakeLambdaContext
) -> Callable[..., Invoke]:
    """Cold-start the handler module with the given MAIL_* environment."""

    def load(**environment: str) -> Invoke:
        for name in Settings.variable_names():
            monkeypatch.delenv(name, raising=False)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        module: ModuleType = importlib.reload(importlib.import_module("intake_api"))

        def invoke(event: dict[str, Any]) -> dict[str, Any]:
            answer: dict[str, Any] = module.handler(event, lambda_context)
            return answer

        return invoke

    return load


@pytest.fixture
def smtp_api(
    load_intake_api: Callable[..., Invoke], redis_server: RedisBackend, redis_client: redis.Redis
) -> Invoke:
    return load_intake_api(**redis_server.environ(), **SMTP_MODE_ENV)


def test_the_sample_events_answer_as_the_contract_says(
    smtp_api: Invoke, redis_client: redis.Redis
) -> None:
    # Given the handler and the sample events of events/, sent in order
    valid = smtp_api(sample_event("valid"))
    replay = smtp_api(sample_event("replay"))
    conflicting = smtp_api(sample_event("conflicting_replay"))
    invalid = smtp_api(sample_event("invalid_body"))

    # Then the first is accepted as sent
    assert valid["statusCode"] == 200
    accepted = body_of(valid)
    assert accepted["outcome"] == "sent"
    assert accepted["delivery_id"].startswith("dlv_")
    assert header(valid, "Idempotent-Replayed") is None
    # And the replay returns the same body and says it is a replay
    assert replay["statusCode"] == 200
    assert body_of(replay) == accepted
    assert header(replay, "Idempotent-Replayed") == "true"
    # And the same key with another code is a conflict
    assert conflicting["statusCode"] == 409
    assert body_of(conflicting)["error"]["code"] == "idempotency_conflict"
    # And the invalid body is refused, naming both problems
    assert invalid["statusCode"] == 400
    error = body_of(invalid)["error"]
    assert error["code"] == "invalid_request"
    assert "email" in error["message"]
    assert "channel: unknown field" in error["message"]
    # And exactly one whole delivery exists
    assert count_deliveries(redis_client) == 1
    assert find_partial_state(redis_client) == []


def test_answers_are_json_with_the_error_body_shape(smtp_api: Invoke) -> None:
    answer = smtp_api(request_event(VALID_BODY, key=None))
    assert header(answer, "Content-Type") == "application/json"
    assert set(body_of(answer)) == {"error"}
    assert set(body_of(answer)["error"]) == {"code", "message"}


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        (request_event(VALID_BODY, key=None), "header Idempotency-Key is required"),
        (request_event(VALID_BODY, key=""), "header Idempotency-Key"),
        (request_event(VALID_BODY, key="k" * 129), IDEMPOTENCY_KEY_RULE),
        (request_event(VALID_BODY, key="has space"), IDEMPOTENCY_KEY_RULE),
        (request_event(raw_body='{"email": "ada@example.com",'), "not valid JSON"),
        (request_event(raw_body="email=ada@example.com"), "not valid JSON"),
        (request_event(raw_body=""), "request body is required"),
        (request_event(["ada@example.com"]), "body"),
        (request_event({**VALID_BODY, "code": 482913}), "code: Input should be a valid string"),
        (request_event({**VALID_BODY, "locale": None}), "locale"),
        (request_event({**VALID_BODY, "priority": "high"}), "priority: unknown field"),
        (request_event({"email": "ada@example.com", "code": "482913"}), "locale"),
        (request_event({**VALID_BODY, "email": "ada@"}), "email: must be an email address"),
        (
            request_event({**VALID_BODY, "email": "ada@example.com\r\nBcc: x@evil.example"}),
            "email",
        ),
        (request_event({**VALID_BODY, "code": "9" * 40}), CODE_RULE),
        (request_event({**VALID_BODY, "code": "48 29"}), CODE_RULE),
        (request_event({**VALID_BODY, "locale": "en-" + "x" * 40}), LOCALE_RULE),
        (request_event({**VALID_BODY, "locale": "en_US.UTF-8"}), LOCALE_RULE),
        (
            request_event({**VALID_BODY, "padding": "x" * 5000}),
            "request body exceeds 4096 bytes",
        ),
    ],
    ids=[
        "missing-key",
        "empty-key",
        "overlong-key",
        "key-with-space",
        "truncated-json",
        "form-body",
        "empty-body",
        "array-body",
        "number-code",
        "null-locale",
        "unknown-field",
        "missing-locale",
        "invalid-address",
        "header-injection-address",
        "overlong-code",
        "code-with-space",
        "overlong-locale",
        "posix-locale-with-charset",
        "oversized-body",
    ],
)
def test_bad_requests_get_a_400_that_says_what_is_wrong_and_store_nothing(
    smtp_api: Invoke, redis_client: redis.Redis, event: dict[str, Any], fragment: str
) -> None:
    answer = smtp_api(event)

    assert answer["statusCode"] == 400
    error = body_of(answer)["error"]
    assert error["code"] == "invalid_request"
    assert fragment in error["message"]
    assert redis_client.dbsize() == 0


def test_no_400_quotes_a_regular_expression(smtp_api: Invoke) -> None:
    # Given requests breaking each rule that is checked by a pattern
    for event in [
        request_event(VALID_BODY, key="has space"),
        request_event({**VALID_BODY, "code": "48 29"}),
        request_event({**VALID_BODY, "locale": "en_US.UTF-8"}),
    ]:
        # Then the 400 says the rule in words
        message = body_of(smtp_api(event))["error"]["message"]
        assert "pattern" not in message
        assert "^" not in message
        assert "\\x" not in message


@pytest.mark.parametrize(("given", "stored"), [("en_US", "en-US"), ("pt_BR", "pt-BR")])
def test_a_posix_style_locale_is_accepted_as_its_bcp47_tag(
    smtp_api: Invoke, redis_client: redis.Redis, given: str, stored: str
) -> None:
    # When a login code is asked for in a locale spelled the Go (POSIX) way
    answer = smtp_api(request_event({**VALID_BODY, "locale": given}))

    # Then it is accepted, and stored as the BCP 47 tag
    assert answer["statusCode"] == 200, answer["body"]
    delivery_id = body_of(answer)["delivery_id"]
    delivery_key = home_keys(redis_client, delivery_id).delivery(delivery_id)
    assert redis_client.hget(delivery_key, "locale") == stored


def test_a_conflicting_replay_changes_nothing(smtp_api: Invoke, redis_client: redis.Redis) -> None:
    smtp_api(request_event(VALID_BODY, key="key-1"))
    before = {key: redis_client.dump(key) for key in text_keys(redis_client)}

    answer = smtp_api(request_event({**VALID_BODY, "locale": "fr"}, key="key-1"))

    assert answer["statusCode"] == 409
    assert "Idempotency-Key" in body_of(answer)["error"]["message"]
    assert {key: redis_client.dump(key) for key in text_keys(redis_client)} == before


def test_smtp_mode_answers_sent_and_queues_the_first_attempt(
    smtp_api: Invoke, redis_client: redis.Redis
) -> None:
    answer = smtp_api(request_event(VALID_BODY))

    delivery_id = body_of(answer)["delivery_id"]
    assert body_of(answer)["outcome"] == "sent"
    keys = home_keys(redis_client, delivery_id)
    assert redis_client.hget(keys.delivery(delivery_id), "status") == "queued"
    assert redis_client.hget(keys.attempt(delivery_id, 1), "status") == "scheduled"
    assert redis_client.zscore(keys.attempt_schedule(), delivery_id) is not None


def test_stub_mode_answers_suppressed_and_schedules_nothing(
    load_intake_api: Callable[..., Invoke], redis_server: RedisBackend, redis_client: redis.Redis
) -> None:
    stub_api = load_intake_api(**redis_server.environ())  # stub is the default

    answer = stub_api(request_event(VALID_BODY))

    assert answer["statusCode"] == 200
    delivery_id = body_of(answer)["delivery_id"]
    assert body_of(answer)["outcome"] == "suppressed"
    keys = home_keys(redis_client, delivery_id)
    assert redis_client.hget(keys.delivery(delivery_id), "status") == "suppressed"
    assert total(redis_client, RedisKeys.attempt_schedule) == 0
    assert not redis_client.exists(keys.attempt(delivery_id, 1))
    assert find_partial_state(redis_client) == []


def test_an_unreachable_redis_answers_503(load_intake_api: Callable[..., Invoke]) -> None:
    api = load_intake_api(
        MAIL_REDIS_ADDR=f"127.0.0.1:{free_port()}",
        **SMTP_MODE_ENV,
        MAIL_REDIS_OPERATION_TIMEOUT="200ms",
    )
    answer = api(request_event(VALID_BODY))
    assert answer["statusCode"] == 503
    assert body_of(answer)["error"]["code"] == "service_unavailable"


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "durable", durable=True)
    server.start()
    yield server
    server.stop()


def test_redis_going_down_answers_503_and_leaves_only_whole_deliveries(
    load_intake_api: Callable[..., Invoke], durable_redis: RedisServer
) -> None:
    # Given a durable Redis that has accepted one delivery
    api = load_intake_api(
        MAIL_REDIS_ADDR=durable_redis.addr,
        **SMTP_MODE_ENV,
        MAIL_REDIS_OPERATION_TIMEOUT="200ms",
    )
    first = api(request_event(VALID_BODY, key="before-outage"))
    assert first["statusCode"] == 200

    # When Redis stops, Then intake answers 503
    durable_redis.stop()
    during = api(request_event(VALID_BODY, key="during-outage"))
    assert during["statusCode"] == 503
    assert body_of(during)["error"]["code"] == "service_unavailable"

    # And after a restart the acknowledged delivery is there, whole, and nothing else
    durable_redis.start()
    client = durable_redis.client()
    assert count_deliveries(client) == 1
    assert find_partial_state(client) == []

    # And the refused request succeeds when retried with its key
    retried = api(request_event(VALID_BODY, key="during-outage"))
    assert retried["statusCode"] == 200
    assert header(retried, "Idempotent-Replayed") is None
    assert count_deliveries(client) == 2
    assert find_partial_state(client) == []


def test_a_redis_that_stops_answering_times_out_to_503_with_no_partial_state(
    load_intake_api: Callable[..., Invoke], tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "frozen")
    server.start()
    try:
        api = load_intake_api(
            MAIL_REDIS_ADDR=server.addr,
            **SMTP_MODE_ENV,
            MAIL_REDIS_OPERATION_TIMEOUT="200ms",
        )
        assert api(request_event(VALID_BODY, key="warm-up"))["statusCode"] == 200

        # When Redis freezes mid-conversation
        server.pause()
        started = time.monotonic()
        frozen = api(request_event(VALID_BODY, key="while-frozen"))
        elapsed = time.monotonic() - started
        server.resume()

        # Then the caller hears 503 promptly, not after the Lambda timeout
        assert frozen["statusCode"] == 503
        assert elapsed < 3
        # And Redis holds each acceptance whole or not at all
        client = server.client()
        assert find_partial_state(client) == []
        # And a retry with the same key lands on exactly one delivery
        retried = api(request_event(VALID_BODY, key="while-frozen"))
        assert retried["statusCode"] == 200
        assert count_deliveries(client) == 2
        assert find_partial_state(client) == []
    finally:
        server.stop()


def test_the_login_code_appears_in_no_log_line_or_metric(
    redis_server: RedisBackend, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given the handler at its most verbose, logging events if it were allowed to
    secret = "739251"
    verbose = {
        **SMTP_MODE_ENV,
        "MAIL_REDIS_OPERATION_TIMEOUT": "200ms",
        "POWERTOOLS_LOG_LEVEL": "DEBUG",
        "POWERTOOLS_LOGGER_LOG_EVENT": "true",
        "POWERTOOLS_DEV": "true",
        "POWERTOOLS_METRICS_DISABLED": "false",  # dev mode would silence metrics
    }
    body = {**VALID_BODY, "code": secret}

    # When requests take every path: accepted, replayed, conflicting, invalid, oversized
    answers, printed = invoke_in_fresh_process(
        "intake_api",
        tmp_path,
        {**verbose, **redis_server.environ()},
        [
            request_event(body, key="k-1"),
            request_event(body, key="k-1"),
            request_event({**body, "locale": "de"}, key="k-1"),
            request_event({**body, "code": secret * 6}, key="k-2"),
            request_event({**body, "extra": secret}, key="k-3"),
            request_event({**body, "padding": secret * 1000}, key="k-4"),
        ],
    )
    # and against a Redis that is down
    down_answers, printed_down = invoke_in_fresh_process(
        "intake_api",
        tmp_path,
        {**verbose, "MAIL_REDIS_ADDR": f"127.0.0.1:{free_port()}"},
        [request_event(body, key="k-5")],
    )

    # Then every path was taken and logged, with metrics
    assert [a["statusCode"] for a in answers + down_answers] == [200, 200, 409, 400, 400, 400, 503]
    emitted = printed + printed_down
    assert json.loads(answers[0]["body"])["delivery_id"] in emitted
    for metric in [
        "AuthDeliveriesAccepted",
        "IdempotentReplays",
        "IdempotencyConflicts",
        "RequestsRejected",
        "StoreUnavailable",
    ]:
        assert metric in emitted
    # And the code is in none of it
    assert secret not in emitted


def test_header_names_are_matched_case_insensitively(smtp_api: Invoke) -> None:
    event = request_event(VALID_BODY, key=None)
    event["headers"]["idempotency-key"] = "lower-case-key"
    event["multiValueHeaders"]["idempotency-key"] = ["lower-case-key"]

    answer = smtp_api(event)

    assert answer["statusCode"] == 200


def test_an_unexpected_store_error_is_a_500_that_reveals_nothing(
    smtp_api: Invoke, settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a key in Redis that something else overwrote with the wrong type
    # (the idempotency record of that key, in the partition its scope hashes to)
    home = partition_of(Source.AUTHSESSION, "clobbered", settings.redis_partitions)
    keys = RedisKeys.of_partition(home)
    redis_client.set(keys.idempotency(Source.AUTHSESSION, "clobbered"), "not a hash")

    # When a request uses that idempotency key
    answer = smtp_api(request_event(VALID_BODY, key="clobbered"))

    # Then the caller gets a generic 500, with no Redis detail and nothing stored
    assert answer["statusCode"] == 500
    assert body_of(answer) == {"error": {"code": "internal_error", "message": "internal error"}}
    assert count_deliveries(redis_client) == 0
