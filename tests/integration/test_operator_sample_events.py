"""Every operator sample event in events/ is answered by the real handler, as in AWS."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest
import redis

from mailcore.config import Settings
from tests.support.lambda_context import FakeLambdaContext
from tests.support.redis_backend import RedisBackend

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO_ROOT / "events").glob("operator_api_*.json"))


@pytest.fixture
def operator_api(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisBackend, redis_client: redis.Redis
) -> ModuleType:
    for name in Settings.variable_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in redis_server.environ().items():
        monkeypatch.setenv(name, value)
    return importlib.reload(importlib.import_module("operator_api"))


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda path: path.name)
def test_the_sample_is_answered(operator_api: ModuleType, sample: Path) -> None:
    # When the handler gets the sample event over an empty store
    event = json.loads(sample.read_text())
    answer = operator_api.handler(event, FakeLambdaContext(function_name="mail-operator-api"))

    # Then a list answers an empty page, and one item answers 404 with the error body
    body = json.loads(answer["body"])
    if event["pathParameters"]:
        assert answer["statusCode"] == 404, body
        assert body["error"]["code"] == "not_found"
    else:
        assert answer["statusCode"] == 200, body
        assert body["items"] == []
