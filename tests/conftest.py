"""Fixtures shared by every tier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.lambda_context import FakeLambdaContext
from tests.support.redis_server import RedisServer

REPO_ROOT = Path(__file__).resolve().parent.parent

# Fixtures that live with their support code: `smtp_server` starts real SMTP
# servers (aiosmtpd) on local ports; `xray_daemon` is a UDP socket standing in
# for the X-Ray daemon; `secret_watch` fails the session when a known secret
# shows up in any log record or captured output.
pytest_plugins = [
    "tests.support.smtp_server",
    "tests.support.xray_daemon",
    "tests.support.secret_watch",
]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests flush it before use."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()
