"""The X-Ray emitter: the daemon's format, nesting, sampling, failures, secrets.

The provider's socket is replaced by an in-memory one here (the integration
tier sends to a real UDP socket); the Powertools check runs in a fresh
interpreter, since what it proves is what gets imported.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from mailcore import tracing
from mailcore.config import current_trace_header
from mailcore.domain.model import Source
from mailcore.errors import NotFound, StoreUnavailable
from mailcore.tracing import NOT_TRACED, TraceHeader, XRayProvider
from tests.support.xray_daemon import HEADER_LINE, trace_header

HEX16 = re.compile(r"^[0-9a-f]{16}$")


class _FakeSocket:
    def __init__(self, network: _FakeNetwork) -> None:
        self.network = network

    def setblocking(self, flag: bool) -> None:
        pass

    def sendto(self, payload: bytes, target: Any) -> int:
        if self.network.send_error is not None:
            raise self.network.send_error
        self.network.sent.append(payload)
        return len(payload)

    def close(self) -> None:
        pass


class _FakeNetwork:
    """Stands in for the ``socket`` module inside mailcore.tracing."""

    SOCK_DGRAM = socket.SOCK_DGRAM

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.sockets = 0
        self.send_error: Exception | None = None
        self.resolve_error: Exception | None = None

    def getaddrinfo(self, host: str, port: int, type: int = 0) -> list[tuple[Any, ...]]:
        if self.resolve_error is not None:
            raise self.resolve_error
        return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", (host, port))]

    def socket(self, family: int, kind: int, proto: int) -> _FakeSocket:
        self.sockets += 1
        return _FakeSocket(self)

    def documents(self) -> list[dict[str, Any]]:
        parsed = []
        for payload in self.sent:
            header, newline, body = payload.partition(b"\n")
            assert (header, newline) == (HEADER_LINE, b"\n")
            parsed.append(json.loads(body))
        return parsed


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> _FakeNetwork:
    fake = _FakeNetwork()
    monkeypatch.setattr(tracing, "socket", fake)
    return fake


def provider_for(header: str | None, **options: Any) -> XRayProvider:
    return XRayProvider("127.0.0.1:2000", lambda: header, **options)


def test_a_subsegment_is_one_datagram_in_the_daemons_format(network: _FakeNetwork) -> None:
    # Given a sampled invocation
    header, root, parent = trace_header()
    provider = provider_for(header)

    # When a subsegment opens, is annotated and ends
    with provider.in_subsegment("render") as segment:
        segment.put_annotation("delivery_id", "dlv_1")
        segment.put_annotation("attempt_no", 2)
        segment.put_annotation("locale_fallback_used", False)
        segment.put_annotation("source", Source.NOTIFICATION)

    # Then one datagram went out: the header line, then the subsegment document
    [document] = network.documents()
    assert document["name"] == "render"
    assert HEX16.match(document["id"])
    assert document["trace_id"] == root
    assert document["parent_id"] == parent
    assert document["type"] == "subsegment"
    assert 0 < document["start_time"] <= document["end_time"]
    assert document["annotations"] == {
        "delivery_id": "dlv_1",
        "attempt_no": 2,
        "locale_fallback_used": False,
        "source": "notification",
    }
    assert "fault" not in document
    assert "error" not in document
    assert "in_progress" not in document


def test_nested_subsegments_name_the_enclosing_one_as_their_parent(
    network: _FakeNetwork,
) -> None:
    # Given a sampled invocation
    header, root, parent = trace_header()
    provider = provider_for(header)

    # When subsegments nest, and a sibling follows
    with provider.in_subsegment("## handler"):
        with provider.in_subsegment("render"), provider.in_subsegment("inner"):
            pass
        with provider.in_subsegment("provider_send"):
            pass

    # Then each is sent as it ends, innermost first, all in the same trace
    documents = network.documents()
    assert [d["name"] for d in documents] == ["inner", "render", "provider_send", "## handler"]
    named = {d["name"]: d for d in documents}
    assert {d["trace_id"] for d in documents} == {root}
    assert named["## handler"]["parent_id"] == parent
    assert named["render"]["parent_id"] == named["## handler"]["id"]
    assert named["provider_send"]["parent_id"] == named["## handler"]["id"]
    assert named["inner"]["parent_id"] == named["render"]["id"]
    assert len({d["id"] for d in documents}) == 4


@pytest.mark.parametrize(
    "header",
    [
        trace_header(sampled=False)[0],
        None,
        "",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",  # no Parent to hang from
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=?",
        "garbage",
    ],
    ids=["sampled-0", "no-header", "empty", "no-parent", "undecided", "garbage"],
)
def test_an_invocation_that_is_not_sampled_sends_nothing(
    network: _FakeNetwork, header: str | None
) -> None:
    # Given an invocation X-Ray does not sample
    provider = provider_for(header)

    # When subsegments open, nest, get annotations and even fail
    seen: list[object] = []

    def work() -> None:
        with provider.in_subsegment("## handler") as outer:
            outer.put_annotation("ColdStart", True)
            with provider.in_subsegment("render") as inner:
                inner.put_annotation("delivery_id", "dlv_1")
                seen.extend([outer, inner])
                raise StoreUnavailable("redis unavailable: ConnectionError")

    with pytest.raises(StoreUnavailable):
        work()

    # Then nothing is sent, and no socket was even made
    assert network.sent == []
    assert network.sockets == 0
    assert seen == [NOT_TRACED, NOT_TRACED]


def test_without_a_daemon_address_the_header_is_never_read(network: _FakeNetwork) -> None:
    def header() -> str:
        raise AssertionError("read the trace header")

    provider = XRayProvider(None, header)
    with provider.in_subsegment("render") as segment:
        segment.put_annotation("delivery_id", "dlv_1")
    assert network.sent == []


def test_each_invocation_is_traced_under_its_own_header(network: _FakeNetwork) -> None:
    # Given two invocations in turn, as a warm function gets them
    headers = [trace_header(), trace_header(sampled=False), trace_header()]
    current: list[str] = []
    provider = XRayProvider("127.0.0.1:2000", lambda: current[-1])

    # When each runs a subsegment under its own header
    for header, _, _ in headers:
        current.append(header)
        with provider.in_subsegment("## handler"):
            pass

    # Then each sampled one is in its own trace, under its own parent
    assert [(d["trace_id"], d["parent_id"]) for d in network.documents()] == [
        (root, parent) for _, root, parent in (headers[0], headers[2])
    ]


def test_our_exceptions_mark_a_fault_with_their_type_and_message(network: _FakeNetwork) -> None:
    provider = provider_for(trace_header()[0])

    with pytest.raises(StoreUnavailable), provider.in_subsegment("accept_login_code"):
        raise StoreUnavailable("redis unavailable: TimeoutError")

    [document] = network.documents()
    assert document["fault"] is True
    assert "error" not in document
    [cause] = document["cause"]["exceptions"]
    assert cause["type"] == "StoreUnavailable"
    assert cause["message"] == "redis unavailable: TimeoutError"
    assert HEX16.match(cause["id"])


def test_a_foreign_exception_is_recorded_by_its_type_only(network: _FakeNetwork) -> None:
    # Given an exception whose message quotes request data (not one of ours)
    provider = provider_for(trace_header()[0])

    with pytest.raises(ValueError, match="482913"), provider.in_subsegment("render"):
        raise ValueError("bad input: ada@example.com 482913")

    # Then the trace names its type and nothing of its message
    [document] = network.documents()
    assert document["fault"] is True
    assert document["cause"]["exceptions"][0]["type"] == "ValueError"
    assert "message" not in document["cause"]["exceptions"][0]
    assert b"482913" not in network.sent[0]
    assert b"ada@example.com" not in network.sent[0]


def test_client_errors_mark_an_error_rather_than_a_fault(network: _FakeNetwork) -> None:
    provider = provider_for(trace_header()[0], client_errors=(NotFound,))

    with pytest.raises(NotFound), provider.in_subsegment("resend"):
        raise NotFound("no delivery dlv_404")

    [document] = network.documents()
    assert document["error"] is True
    assert "fault" not in document
    assert document["cause"]["exceptions"][0]["message"] == "no delivery dlv_404"


def test_a_failure_the_code_recorded_itself_is_not_recorded_again(network: _FakeNetwork) -> None:
    provider = provider_for(trace_header()[0])

    def render() -> None:
        with provider.in_subsegment("render") as segment:
            error = StoreUnavailable("classified by the caller")
            segment.add_error(error)
            raise error

    with pytest.raises(StoreUnavailable):
        render()

    [document] = network.documents()
    assert document["error"] is True
    assert "fault" not in document


def test_only_strings_numbers_and_booleans_are_annotated_and_metadata_never_sent(
    network: _FakeNetwork,
) -> None:
    provider = provider_for(trace_header()[0])

    with provider.in_subsegment("render") as segment:
        segment.put_annotation("template_id", None)
        segment.put_annotation("variables", {"code": "482913"})
        segment.put_annotation("bad key!", "x")
        segment.put_annotation("long", "x" * 5000)
        segment.put_metadata("response", {"email": "ada@example.com"})
        provider.put_metadata("request", {"code": "482913"})
        provider.put_annotation("outcome", "accepted")  # the current subsegment's

    [document] = network.documents()
    assert document["annotations"] == {"long": "x" * 1000, "outcome": "accepted"}
    assert "metadata" not in document
    assert b"482913" not in network.sent[0]
    assert b"ada@example.com" not in network.sent[0]


@pytest.mark.parametrize("failure", ["send", "resolve"])
def test_a_broken_socket_never_breaks_the_request(network: _FakeNetwork, failure: str) -> None:
    # Given a daemon that cannot be reached
    if failure == "send":
        network.send_error = OSError(101, "Network is unreachable")
    else:
        network.resolve_error = socket.gaierror(-2, "Name or service not known")
    provider = provider_for(trace_header()[0])

    # When traced work runs, Then it completes as if nothing were traced
    with provider.in_subsegment("## handler"), provider.in_subsegment("provider_send") as segment:
        segment.put_annotation("outcome", "accepted")
        result = "sent"
    assert result == "sent"
    assert network.sent == []


def test_the_trace_header_is_parsed_field_by_field() -> None:
    header = TraceHeader.parse(
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a:1"
    )
    assert header == TraceHeader("1-5759e988-bd862e3fe1be46a994272793", "53995c3f42cd8ad8", True)
    assert TraceHeader.parse("Parent=53995c3f42cd8ad8;Sampled=1") is None


def test_the_trace_header_is_the_one_the_runtime_set_for_this_invocation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("_X_AMZN_TRACE_ID", raising=False)
    assert current_trace_header() is None
    header = trace_header()[0]
    monkeypatch.setenv("_X_AMZN_TRACE_ID", header)
    assert current_trace_header() == header


POWERTOOLS_SCRIPT = textwrap.dedent(
    """
    import json, socket, sys

    from mailcore.tracing import LambdaTracer, XRayProvider

    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(1)
    address = "127.0.0.1:%d" % daemon.getsockname()[1]
    tracer = LambdaTracer(XRayProvider(address, lambda: sys.argv[1]), service="mail")

    @tracer.capture_method
    def step():
        tracer.put_annotation("delivery_id", "dlv_1")
        return {"email": "ada@example.com", "code": "482913"}

    @tracer.capture_lambda_handler
    def handler(event, context):
        step()
        return {"email": "ada@example.com", "code": "482913"}

    handler({}, None)
    sdk_imported = "aws_xray_sdk" in sys.modules
    from aws_lambda_powertools import Tracer

    Tracer()  # made elsewhere, outside Lambda: disabled, which imports aws-xray-sdk
    handler({}, None)
    datagrams = []
    for _ in range(4):
        datagrams.append(daemon.recv(65535).decode())
    print(json.dumps({"sdk_imported": sdk_imported, "datagrams": datagrams}))
    """
)


def test_powertools_tracer_runs_over_the_provider_without_aws_xray_sdk() -> None:
    # Given a fresh interpreter using Powertools' decorators over our provider
    header, root, parent = trace_header()
    completed = subprocess.run(
        [sys.executable, "-c", POWERTOOLS_SCRIPT, header],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PATH": "", "AWS_DEFAULT_REGION": "eu-west-1"},
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])

    # Then aws-xray-sdk was never imported while it traced
    assert result["sdk_imported"] is False
    # And the handler and the method became nested subsegments, annotated as Powertools does
    documents = [json.loads(d.partition("\n")[2]) for d in result["datagrams"]]
    first, second = documents[:2], documents[2:]
    method, handler = first
    assert handler["name"] == "## handler"
    assert handler["parent_id"] == parent
    assert handler["trace_id"] == root
    assert handler["annotations"] == {"ColdStart": True, "Service": "mail"}
    assert method["name"] == "## __main__.step"
    assert method["parent_id"] == handler["id"]
    assert method["annotations"] == {"delivery_id": "dlv_1"}
    # And the responses Powertools offers as metadata were never sent
    assert not any("482913" in d or "ada@example.com" in d for d in result["datagrams"])
    # And a disabled Tracer made elsewhere does not switch ours off
    assert [d["name"] for d in second] == [method["name"], "## handler"]
    assert second[1]["annotations"]["ColdStart"] is False
