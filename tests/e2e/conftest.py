"""The stacks the e2e tests share: one per SMTP mode, started once per session.

With ``--redis-cluster`` each stack runs against a local Redis Cluster of its
own (``MAIL_REDIS_ADDR`` set, so the stack does not start a redis-server),
the service in cluster mode with several partitions.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import LocalStack, start_stack
from tests.support.redis_backend import ClusterBackend


def _stack(
    request: pytest.FixtureRequest, workdir: Path, settings: dict[str, str]
) -> Iterator[LocalStack]:
    cluster = None
    if request.config.getoption("--redis-cluster"):
        cluster = ClusterBackend(workdir / "cluster")
        cluster.start()
        settings = {**settings, **cluster.environ()}
    try:
        stack = start_stack(workdir / "data", workdir / "stack.log", settings)
        stack.cluster = cluster is not None
        yield stack
        code = stack.stop()
        assert code == 0, stack.log()[-5000:]
    finally:
        if cluster is not None:
            cluster.stop()


@pytest.fixture(scope="session")
def smtp_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """``make local`` as it comes: smtp mode, mail to its own capture server."""
    yield from _stack(request, tmp_path_factory.mktemp("smtp-stack"), {})


@pytest.fixture(scope="session")
def stub_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """``MAIL_SMTP_MODE=stub LOCAL_LOG_FORMAT=json make local``: nothing is ever sent;
    the functions print Powertools' JSON lines."""
    settings = {"MAIL_SMTP_MODE": "stub", "LOCAL_LOG_FORMAT": "json"}
    yield from _stack(request, tmp_path_factory.mktemp("stub-stack"), settings)
