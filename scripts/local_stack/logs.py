"""What the functions log, as the local stack prints it: one line per event, or JSON.

In AWS each function has its own process, so the keys Powertools appends to
its log lines (``inject_lambda_context``'s ``function_name`` and request id,
``cold_start``, the correlation id) belong to that function. Every handler's
``Logger`` is named after the service, and Powertools keeps those keys in one
formatter per logger name; with all six functions in one process they would
share it, and a line could name whichever function was invoked last. Here
each function's environment keeps its own appended keys: ``LambdaFunction``
runs its cold start and each invocation inside :func:`running_as`, which sets
a context variable (per thread, so per invocation: one thread runs one
invocation at a time), and the formatter reads the keys of the function
running on the thread that writes the line.

``LOCAL_LOG_FORMAT`` chooses what is printed:

- ``human`` (the default): one line per event,
  ``09:15:00.412 scheduler      INFO  scheduler run finished claimed=3 …``, the
  fields of the event appended as ``name=value``; a metrics flush (the
  CloudWatch EMF document) becomes one ``metrics`` line;
- ``json``: Powertools' JSON lines and the EMF documents, as CloudWatch Logs
  receives them from Lambda.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TextIO

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

LOG_FORMAT_VARIABLE = "LOCAL_LOG_FORMAT"
# As wide as the longest handler module name (attempt_worker), so messages line up.
LABEL_WIDTH = 14
EMF_PREFIX = '{"_aws":'


class LogFormat(StrEnum):
    HUMAN = "human"
    JSON = "json"


@dataclass
class FunctionLog:
    """One function's environment, as its log lines see it: its name and appended keys."""

    label: str  # the handler module, e.g. "scheduler"
    keys: dict[str, Any] = field(default_factory=dict)
    invocations: int = 0

    def begin_invocation(self) -> None:
        self.invocations += 1

    @property
    def cold_start(self) -> bool:
        """Whether the invocation running is this environment's first (Powertools keeps
        one flag per process, which only the first function invoked would see)."""
        return self.invocations <= 1


_running: ContextVar[FunctionLog | None] = ContextVar("local_stack_function", default=None)


@contextlib.contextmanager
def running_as(function: FunctionLog) -> Iterator[None]:
    """Lines logged inside (on this thread) are this function's."""
    token = _running.set(function)
    try:
        yield
    finally:
        _running.reset(token)


def running_function() -> FunctionLog | None:
    return _running.get()


class PerFunctionKeysFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON formatter whose appended keys belong to the function running.

    Keys appended outside any function (the service name, at set-up) are
    everyone's; keys appended by a function are added to its lines only.
    """

    @property
    def log_format(self) -> dict[str, Any]:
        function = running_function()
        if function is None:
            return self._shared_keys
        return {**self._shared_keys, **function.keys}

    @log_format.setter
    def log_format(self, keys: dict[str, Any]) -> None:
        self._shared_keys = keys

    def _own_keys(self) -> dict[str, Any]:
        function = running_function()
        return self._shared_keys if function is None else function.keys

    def append_keys(self, **additional_keys: Any) -> None:
        function = running_function()
        if function is not None and "cold_start" in additional_keys:
            additional_keys["cold_start"] = function.cold_start
        self._own_keys().update(additional_keys)

    def remove_keys(self, keys: Any) -> None:
        own = self._own_keys()
        for key in keys:
            own.pop(key, None)

    def clear_state(self) -> None:
        function = running_function()
        if function is None:
            super().clear_state()
        else:
            function.keys.clear()


# What every LogRecord has; anything else on a record is a field of the event.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__
) | {"message", "asctime"}


def clock(epoch_s: float) -> str:
    """``09:15:00.412``, local time."""
    moment = datetime.fromtimestamp(epoch_s)
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def field_text(value: object) -> str:
    """A field's value as ``name=value`` shows it: bare when it is one plain word."""
    if isinstance(value, str) and value and not any(c.isspace() or c in "\"'=" for c in value):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def human_line(
    epoch_s: float, label: str, level: str, message: str, fields: Mapping[str, Any]
) -> str:
    shown = " ".join(
        f"{name}={field_text(value)}" for name, value in fields.items() if value is not None
    )
    line = f"{clock(epoch_s)} {label:<{LABEL_WIDTH}} {level:<5} {message}"
    return f"{line} {shown}" if shown else line


class HumanFormatter(PerFunctionKeysFormatter):
    """One line per event: time, function, level, message, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        function = running_function()
        fields = {
            name: value for name, value in record.__dict__.items() if name not in _RECORD_ATTRIBUTES
        }
        line = human_line(
            record.created,
            function.label if function else record.name,
            record.levelname,
            record.getMessage(),
            fields,
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def metrics_line(document: Mapping[str, Any], epoch_s: float) -> str | None:
    """An EMF document as one line, ``metrics  DeliveriesSent=1 ProviderSendDuration=3ms``."""
    try:
        directives = document["_aws"]["CloudWatchMetrics"]
        definitions = [metric for directive in directives for metric in directive["Metrics"]]
    except (KeyError, TypeError):
        return None
    units = {"Milliseconds": "ms", "Seconds": "s", "Count": ""}
    shown = []
    for metric in definitions:
        name = metric.get("Name")
        values = document.get(name)
        values = values if isinstance(values, list) else [values]
        unit = units.get(metric.get("Unit", ""), f" {metric.get('Unit', '')}")
        numbers = ",".join(
            f"{value:g}" if isinstance(value, float) else str(value) for value in values
        )
        shown.append(f"{name}={numbers}{unit}")
    return human_line(epoch_s, "metrics", "", " ".join(shown), {})


class EmfAsText(io.TextIOBase):
    """stdout for the human format: EMF documents become ``metrics`` lines, the rest passes.

    Powertools prints each metrics flush as one JSON document on stdout. Text
    is passed on line by line, each thread's partial line kept apart, so two
    threads printing at once never mix inside a line.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream
        self._pending = threading.local()
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._stream.encoding

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def write(self, text: str) -> int:
        pending = getattr(self._pending, "text", "") + text
        *lines, rest = pending.split("\n")
        self._pending.text = rest
        if lines:
            shown = [self._as_text(line) for line in lines]
            with self._lock:
                self._stream.write("".join(line + "\n" for line in shown))
        return len(text)

    def flush(self) -> None:
        rest = getattr(self._pending, "text", "")
        with self._lock:
            if rest:
                self._pending.text = ""
                self._stream.write(rest)
            self._stream.flush()

    def _as_text(self, line: str) -> str:
        if not line.startswith(EMF_PREFIX):
            return line
        try:
            document = json.loads(line)
        except ValueError:
            return line
        timestamp = document.get("_aws", {}).get("Timestamp")
        epoch_s = (
            timestamp / 1000 if isinstance(timestamp, int | float) else datetime.now().timestamp()
        )
        return metrics_line(document, epoch_s) or line


def install(log_format: LogFormat, service: str, stream: TextIO) -> Logger:
    """Set up the service's Powertools logger before any handler module makes its own.

    A handler's ``Logger(service=…)`` then finds it configured and uses its
    handler and this formatter. Returns the logger (tests log through it).
    """
    formatter = HumanFormatter() if log_format is LogFormat.HUMAN else PerFunctionKeysFormatter()
    return Logger(service=service, logger_formatter=formatter, stream=stream)
