"""Whatever a caller sends the intake, it answers 200, 400 or 409: never a 500."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailcore.config import Settings
from tests.support.api_events import api_event
from tests.support.fakes import SMTP_MODE_ENV
from tests.support.lambda_context import FakeLambdaContext
from tests.support.redis_backend import RedisBackend

ROUTE = "/api/v1/internal/login-code-deliveries"
Invoke = Callable[[dict[str, Any]], dict[str, Any]]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=60),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
HOSTILE_TEXT = st.sampled_from(
    [
        "ada@example.com\r\nBcc: x@evil.example",
        "{{ 7*7 }}",
        "{% for x in range(10**9) %}{% endfor %}",
        "\x00\x01\x02",
        "é" * 300,
        "ada@example.com",
        "482913",
        "en",
    ]
) | st.text(max_size=80)


@pytest.fixture
def intake(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisBackend, redis_client: redis.Redis
) -> Invoke:
    for name in Settings.variable_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in redis_server.environ().items():
        monkeypatch.setenv(name, value)
    for name, value in SMTP_MODE_ENV.items():
        monkeypatch.setenv(name, value)
    module = importlib.reload(importlib.import_module("intake_api"))

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = module.handler(event, FakeLambdaContext())
        return answer

    return invoke


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.dictionaries(
        st.sampled_from(["email", "code", "locale", "extra"]), VALUES | HOSTILE_TEXT, max_size=4
    ),
    key=st.text(max_size=140) | st.just("stable-key"),
)
def test_random_bodies_and_keys_are_answered_cleanly(
    intake: Invoke, body: dict[str, object], key: str
) -> None:
    event = api_event("POST", ROUTE, headers={"Idempotency-Key": key}, body=body)
    answer = intake(event)
    assert answer["statusCode"] in {200, 400, 409}
    error = json.loads(answer["body"]).get("error")
    if answer["statusCode"] != 200:
        assert error["code"] in {"invalid_request", "idempotency_conflict"}


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=500).map(lambda b: b.decode("latin-1")))
def test_random_raw_bodies_are_a_400(intake: Invoke, raw: str) -> None:
    event = api_event("POST", ROUTE, headers={"Idempotency-Key": "raw-body"})
    event["body"] = raw
    answer = intake(event)
    assert answer["statusCode"] in {200, 400, 409}
