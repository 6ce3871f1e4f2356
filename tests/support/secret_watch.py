"""No known secret in anything the suite captured: a pytest plugin (tests/conftest.py loads it).

Tests that handle secrets use the distinctive values in ``KNOWN_SECRETS`` (a
login code, an SMTP password, a Redis AUTH token, a secret template
variable), so that any trace of one is unmistakable. For every test the
plugin looks at:

- every log record emitted while it runs, on the root logger and on each
  logger that does not propagate (the service's Powertools logger ``mail``),
  whatever stream that logger's own handler writes to;
- what pytest captured of each phase: stdout (Powertools' JSON log lines, EMF
  metrics), stderr (tracebacks) and pytest's log capture;
- text handed in with :func:`watch`: output captured elsewhere, like a
  handler run in a fresh process.

A secret seen anywhere fails the session at its end (exit status 1), and the
summary names the test, where the secret was seen and which secret it was,
never its value.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

__all__ = [
    "KNOWN_SECRETS",
    "LOGIN_CODE",
    "REDIS_TOKEN",
    "SECRET_VARIABLE",
    "SMTP_PASSWORD",
    "Sighting",
    "sightings",
    "watch",
]

LOGIN_CODE = "LC-7QX9-W4TCH3D"  # a valid login code (letters, digits, dashes)
SMTP_PASSWORD = "smtp-pw-W4tch3d-C0ffee"
REDIS_TOKEN = "redis-tok-W4tch3d-F00d"
SECRET_VARIABLE = "reset-tok-W4tch3d-Beef"  # a template variable listed as secret

KNOWN_SECRETS = {
    "login code": LOGIN_CODE,
    "SMTP password": SMTP_PASSWORD,
    "Redis AUTH token": REDIS_TOKEN,
    "secret template variable": SECRET_VARIABLE,
}


@dataclass(frozen=True, slots=True)
class Sighting:
    test: str  # the test's node id
    where: str  # "log record", "Captured stdout call", ...
    secret: str  # the secret's name in KNOWN_SECRETS


_sightings: list[Sighting] = []
_current_test = "(outside any test)"


def sightings() -> list[Sighting]:
    """Every sighting so far in this session."""
    return list(_sightings)


def watch(text: str, where: str) -> None:
    """Look for known secrets in output captured outside pytest (a subprocess's, say)."""
    _scan(text, _current_test, where)


def _scan(text: str, test: str, where: str) -> None:
    for name, value in KNOWN_SECRETS.items():
        if value in text:
            _sightings.append(Sighting(test, where, name))


class _RecordWatch(logging.Handler):
    """Looks at every field of each record: message, arguments, extras, exception."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            parts = [str(vars(record))]
            # A broken format string raises here; its parts are in vars(record) already.
            with contextlib.suppress(TypeError, ValueError):
                parts.append(record.getMessage())
            if record.exc_info:
                parts.append(logging.Formatter().formatException(record.exc_info))
            if record.stack_info:
                parts.append(record.stack_info)
            _scan("\n".join(parts), _current_test, f"log record of {record.name}")
        except Exception:  # a watcher must never break the code it watches
            self.handleError(record)


def _watched_loggers() -> list[logging.Logger]:
    """The root logger, and every logger that keeps its records to its own handlers.

    The watcher goes after a logger's own handlers: Powertools takes a
    logger's first handler for its own (a logger it has not configured yet
    gets its handler at the cold start, and is watched from the next test on;
    its output is in the captured stdout either way).
    """
    loggers = [logging.getLogger()]
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and not logger.propagate and logger.handlers:
            loggers.append(logger)
    return loggers


@pytest.fixture(autouse=True)
def _watch_log_records(request: pytest.FixtureRequest) -> Iterator[None]:
    global _current_test
    _current_test = request.node.nodeid
    handler = _RecordWatch(level=logging.NOTSET)
    loggers = _watched_loggers()
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for where, text in report.sections:
        _scan(text, report.nodeid, where)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    if _sightings and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _sightings:
        return
    terminalreporter.section("known secrets in captured output", sep="=", red=True, bold=True)
    for sighting in dict.fromkeys(_sightings):
        terminalreporter.line(f"{sighting.test}: the {sighting.secret} in {sighting.where}")
