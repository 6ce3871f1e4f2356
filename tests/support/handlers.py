"""Handler modules loaded in this process, the way a cold start loads them."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import pytest

from mailcore.config import Settings
from mailcore.telemetry import SERVICE_NAME
from tests.support.lambda_context import FakeLambdaContext


def cold_start(
    monkeypatch: pytest.MonkeyPatch, module: str, environment: Mapping[str, str]
) -> ModuleType:
    """Import (again) a handler module with exactly these ``MAIL_*`` settings."""
    for name in Settings.variable_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    handler_module = importlib.reload(importlib.import_module(module))
    service_logs_to_stdout()
    return handler_module


def service_logs_to_stdout() -> None:
    """Point the service's log handler at this process's stdout, as Lambda's is.

    Powertools configures the service's logger once per process, writing to
    whatever sys.stdout was then: possibly a capture an earlier test closed.
    """
    for handler in logging.getLogger(SERVICE_NAME).handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.stream = sys.stdout  # not setStream: it flushes the closed one


def invoke(module: ModuleType, event: dict[str, Any], timeout_ms: int = 10_000) -> Any:
    return module.handler(event, FakeLambdaContext(timeout_ms=timeout_ms))


@contextmanager
def service_logs_at_debug() -> Iterator[None]:
    """The service's logger at its most verbose, as ``POWERTOOLS_LOG_LEVEL=DEBUG`` sets it.

    Powertools configures the logger once per process, so the level is set
    here rather than through the environment. aiosmtpd's wire log
    (``mail.log``, a child of the service's logger by name) stays at INFO:
    at DEBUG it prints every line a test SMTP server receives, message
    content included, which is the server's view, not the service's logs.
    """
    service_logs_to_stdout()
    service, wire = logging.getLogger(SERVICE_NAME), logging.getLogger("mail.log")
    levels = service.level, wire.level
    service.setLevel(logging.DEBUG)
    wire.setLevel(logging.INFO)
    try:
        yield
    finally:
        service.setLevel(levels[0])
        wire.setLevel(levels[1])
