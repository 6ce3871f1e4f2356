"""Fixtures of the reliability tier: the integration tier's real Redis, store and moto SQS."""

from __future__ import annotations

import pytest

from tests.integration.conftest import (
    attempt_queue_url,
    aws,
    queries,
    redis_client,
    settings,
    store,
)
from tests.support.handlers import service_logs_to_stdout

__all__ = ["attempt_queue_url", "aws", "queries", "redis_client", "settings", "store"]


@pytest.fixture(autouse=True)
def _service_logs_on_stdout() -> None:
    """Whatever an earlier test did to stdout, the service's logs go to the capture of this one."""
    service_logs_to_stdout()
