"""Fixtures shared by every tier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.lambda_context import FakeLambdaContext
from tests.support.redis_backend import CLUSTER_PARTITIONS, ClusterBackend, RedisBackend
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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--redis-cluster",
        action="store_true",
        help="run against a local 3-primary Redis Cluster, the service in cluster mode with "
        f"{CLUSTER_PARTITIONS} partitions (default: one standalone redis-server)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--redis-cluster"):
        return
    for item in items:
        marker = item.get_closest_marker("standalone_redis")
        if marker is not None:
            reason = marker.args[0] if marker.args else "needs the one standalone redis-server"
            item.add_marker(pytest.mark.skip(reason=f"standalone Redis only: {reason}"))


@pytest.fixture(scope="session")
def redis_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisBackend]:
    """The session's real Redis (a server, or a cluster with --redis-cluster); tests flush it."""
    backend: RedisServer | ClusterBackend
    if request.config.getoption("--redis-cluster"):
        backend = ClusterBackend(tmp_path_factory.mktemp("redis-cluster"))
    else:
        backend = RedisServer(tmp_path_factory.mktemp("redis"))
    backend.start()
    yield backend
    backend.stop()


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()
