"""X-Ray tracing: Powertools' Tracer over a small provider that talks to the daemon.

Why not aws-xray-sdk (Powertools' default provider): importing
``aws_xray_sdk.core`` builds a botocore X-Ray client for centralized sampling,
which costs a Lambda cold start about 120 ms (measured), against an init
budget of 250 ms; and Lambda never uses that sampling: it decides per
invocation and says so in ``_X_AMZN_TRACE_ID``. So the handlers keep
Powertools' Tracer API (``capture_lambda_handler``, ``capture_method``,
``put_annotation``) and :class:`XRayProvider` does the rest with the standard
library: each subsegment, when it ends, is one UDP datagram to the daemon at
``AWS_XRAY_DAEMON_ADDRESS``. Nothing here imports aws_xray_sdk.

- An invocation that is not sampled (``Sampled=0``, or no header, or no
  daemon address) costs one environment read per outermost subsegment and
  sends nothing.
- Subsegments nest through a context variable; the outermost one's parent is
  the ``Parent`` of the invocation's trace header (Lambda's function segment).
- Annotations are ids, enums, counts and flags only: callers never annotate
  an address, a body, a login code or any template variable. Metadata is
  dropped altogether (Powertools would put whole responses and exception
  objects there). An exception's cause is its type, plus its message only
  when it is one of ours (``mailcore.*``), whose messages name fields, ids
  and rules, never a submitted value.
- Tracing never breaks a request: a failure to encode or send is swallowed.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment
from aws_lambda_powertools.tracing.tracer import Tracer

DAEMON_HEADER = b'{"format": "json", "version": 1}\n'
_ANNOTATION_KEY = re.compile(r"^[A-Za-z0-9_]{1,500}$")
_MAX_NAME = 200
_MAX_TEXT = 1000


class Subsegment(StrEnum):
    """The subsegments the services open (the handlers' own come from Powertools)."""

    ACCEPT_LOGIN_CODE = "accept_login_code"  # auth intake: one request
    ACCEPT_STREAM_BATCH = "accept_stream_batch"  # stream intake: one read batch
    RENDER = "render"  # attempt worker: the template rendered (or not)
    PROVIDER_SEND = "provider_send"  # attempt worker: SMTP (or the stub) answered
    RESEND = "resend"  # operator API: a settled delivery cloned


@dataclass(frozen=True, slots=True)
class TraceHeader:
    """``Root=1-…;Parent=<16 hex>;Sampled=1``: the trace an invocation belongs to."""

    root: str
    parent: str | None
    sampled: bool

    @classmethod
    def parse(cls, header: str | None) -> TraceHeader | None:
        if not header:
            return None
        fields = dict(part.strip().partition("=")[::2] for part in header.split(";") if "=" in part)
        root = fields.get("Root")
        if not root:
            return None
        return cls(root, fields.get("Parent") or None, fields.get("Sampled") == "1")


def _new_id() -> str:
    return os.urandom(8).hex()


def _annotation(value: object) -> str | int | float | bool | None:
    """X-Ray takes strings, numbers and booleans; anything else is left out."""
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return str(value)[:_MAX_TEXT]
    return None


def _cause(exception: BaseException) -> dict[str, Any]:
    """The exception's type; its message only when it is one of ours."""
    kind = type(exception)
    described: dict[str, Any] = {"id": _new_id(), "type": kind.__name__}
    if kind.__module__.startswith("mailcore."):
        described["message"] = str(exception)[:_MAX_TEXT]
    return {"exceptions": [described]}


class Segment(BaseSegment):
    """A subsegment that records nothing: what code gets when nothing is traced."""

    def close(self, end_time: int | None = None) -> None:
        pass

    def add_subsegment(self, subsegment: Any) -> None:
        pass

    def remove_subsegment(self, subsegment: Any) -> None:
        pass

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass  # never recorded: see the module's docstring

    def add_exception(
        self, exception: BaseException, stack: Sequence[Any] | None = None, remote: bool = False
    ) -> None:
        """A failure on our side (X-Ray ``fault``, like a 5xx)."""

    def add_error(self, exception: BaseException) -> None:
        """A failure the request itself caused (X-Ray ``error``, like a 4xx)."""


NOT_TRACED = Segment()


class _RecordingSegment(Segment):
    def __init__(self, name: str, trace_id: str, parent_id: str) -> None:
        self.name = name[:_MAX_NAME]
        self.id = _new_id()
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.start_time = time.time()
        self.end_time: float | None = None
        self.annotations: dict[str, str | int | float | bool] = {}
        self.fault = False
        self.error = False
        self.cause: dict[str, Any] | None = None

    def close(self, end_time: int | None = None) -> None:
        if self.end_time is None:
            self.end_time = time.time() if end_time is None else float(end_time)

    def put_annotation(self, key: str, value: Any) -> None:
        checked = _annotation(value)
        if checked is not None and _ANNOTATION_KEY.match(key):
            self.annotations[key] = checked

    def add_exception(
        self, exception: BaseException, stack: Sequence[Any] | None = None, remote: bool = False
    ) -> None:
        self.fault = True
        self.cause = _cause(exception)

    def add_error(self, exception: BaseException) -> None:
        self.error = True
        self.cause = _cause(exception)

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "name": self.name,
            "id": self.id,
            "trace_id": self.trace_id,
            "parent_id": self.parent_id,
            "start_time": self.start_time,
            "end_time": self.end_time if self.end_time is not None else time.time(),
            "type": "subsegment",
        }
        if self.annotations:
            document["annotations"] = self.annotations
        if self.fault:
            document["fault"] = True
        if self.error:
            document["error"] = True
        if self.cause is not None:
            document["cause"] = self.cause
        return document


# The subsegment open in this context (shared by every provider in the process).
_current: ContextVar[Segment | None] = ContextVar("mailcore_xray_subsegment", default=None)


class XRayProvider(BaseProvider):
    """Powertools' tracing provider, emitting subsegments to the X-Ray daemon over UDP.

    ``daemon_address`` is ``host:port`` (None: trace nothing); ``trace_header``
    returns the running invocation's header, read when an outermost
    subsegment opens; exceptions of the ``client_errors`` types that leave a
    subsegment mark it ``error`` rather than ``fault``.
    """

    def __init__(
        self,
        daemon_address: str | None,
        trace_header: Callable[[], str | None],
        client_errors: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._address: tuple[str, int] | None = None
        if daemon_address:
            host, _, port = daemon_address.rpartition(":")
            self._address = (host.strip("[]"), int(port))
        self._trace_header = trace_header
        self._client_errors = client_errors
        self._socket: socket.socket | None = None
        self._target: Any = None

    @contextmanager
    def in_subsegment(self, name: str | None = None, **kwargs: Any) -> Iterator[Segment]:
        segment = self._open(name or "subsegment")
        if segment is _current.get():  # inside a subsegment that is not traced
            yield segment
            return
        token = _current.set(segment)
        try:
            yield segment
        except Exception as exception:
            self._record(segment, exception)
            raise
        finally:
            _current.reset(token)
            if isinstance(segment, _RecordingSegment):
                segment.close()
                self._send(segment)

    @asynccontextmanager
    async def in_subsegment_async(
        self, name: str | None = None, **kwargs: Any
    ) -> AsyncIterator[Segment]:
        with self.in_subsegment(name, **kwargs) as segment:
            yield segment

    def put_annotation(self, key: str, value: Any) -> None:
        (_current.get() or NOT_TRACED).put_annotation(key, value)

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass  # never recorded: see the module's docstring

    def patch(self, modules: Sequence[str]) -> None:
        pass  # no library is patched: only our own subsegments are traced

    def patch_all(self) -> None:
        pass

    def close(self) -> None:
        """Close the socket (made at the first send); a later send makes a new one."""
        sender, self._socket = self._socket, None
        if sender is not None:
            sender.close()

    def _open(self, name: str) -> Segment:
        parent = _current.get()
        if isinstance(parent, _RecordingSegment):
            return _RecordingSegment(name, parent.trace_id, parent.id)
        if parent is not None or self._address is None:
            return NOT_TRACED
        header = TraceHeader.parse(self._trace_header())
        if header is None or not header.sampled or header.parent is None:
            return NOT_TRACED
        return _RecordingSegment(name, header.root, header.parent)

    def _record(self, segment: Segment, exception: BaseException) -> None:
        if isinstance(segment, _RecordingSegment) and segment.cause is not None:
            return  # the code inside recorded this failure itself
        if isinstance(exception, self._client_errors):
            segment.add_error(exception)
        else:
            segment.add_exception(exception)

    def _send(self, segment: _RecordingSegment) -> None:
        with suppress(Exception):  # tracing must never break a request
            payload = DAEMON_HEADER + json.dumps(segment.document()).encode()
            if self._socket is None and self._address is not None:
                family, kind, proto, _, target = socket.getaddrinfo(
                    *self._address, type=socket.SOCK_DGRAM
                )[0]
                sender = socket.socket(family, kind, proto)
                sender.setblocking(False)
                self._socket, self._target = sender, target
            if self._socket is not None:
                self._socket.sendto(payload, self._target)


# For services built without tracing (tests, scripts): sends nothing, ever.
NO_TRACING = XRayProvider(None, lambda: None)


class LambdaTracer(Tracer):
    """Powertools' Tracer over an :class:`XRayProvider`, never over aws-xray-sdk.

    Powertools keeps one configuration for every ``Tracer`` in the process;
    this subclass keeps its own, so a ``Tracer()`` made elsewhere (disabled
    outside Lambda, which would import aws-xray-sdk) cannot switch it off.
    """

    _config = copy.copy(Tracer._default_config)

    def __init__(self, provider: XRayProvider, service: str) -> None:
        super().__init__(service=service, disabled=False, auto_patch=False, provider=provider)
        self.xray = provider
