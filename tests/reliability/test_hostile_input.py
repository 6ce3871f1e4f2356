"""Hostile input: whatever callers send, a clear 400 or a malformed record, never a crash.

What is proved elsewhere and not repeated here: random intake bodies and keys
(tests/integration/test_hostile_intake_requests.py), random stream fields and
payloads at the decoder (tests/unit/test_hostile_stream_entries.py), markup
and a header break in a template variable (tests/integration/
test_delivery_over_smtp.py), values that look like templates and subjects
with CR/LF at the renderer (tests/unit/test_template_catalog.py).

Here: the local API over real HTTP (invalid UTF-8, deep JSON, huge values,
header injection, and schemathesis against docs/openapi.json), Hypothesis
stream entries through the real poller and Redis, Jinja2 tricks in variables
and hostile subjects, file names and sender names all the way to a real SMTP
server, whose received message is parsed and checked.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import escape
from schemathesis.checks import (
    CheckContext,
    CheckFunction,
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.transport import Response
from schemathesis.generation import GenerationMode

from mailcore.composition import build_stream_poller
from mailcore.config import Settings
from mailcore.contracts.stream import DeliveryCommand, decode_command
from mailcore.mail import Sender, build_message
from mailcore.providers.smtp import _wire_bytes
from mailcore.rendering.catalog import TemplateCatalog, default_catalog_dir, render_delivery
from mailcore.services.stream_intake import delivery_from_command
from mailcore.store.client import build_redis_client
from mailcore.store.keys import RedisKeys
from mailcore.store.queries import RedisQueries
from scripts.local_stack.http_api import LocalApiServer, build_routes
from tests.support.api_events import api_event
from tests.support.commands import STREAM, command, rendered_payload, template_payload
from tests.support.fakes import SMTP_MODE_ENV
from tests.support.handlers import cold_start, invoke
from tests.support.pipeline import Pipeline
from tests.support.polling import RecordingObserver, until_drained
from tests.support.redis_server import RedisServer
from tests.support.smtp_pipeline import accept_from_stream, smtp_environment, smtp_pipeline
from tests.support.smtp_server import SmtpServerFactory, SmtpTestServer

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
KEYS = RedisKeys()
LOGIN_CODE_PATH = "/api/v1/internal/login-code-deliveries"
GOOD_BODY = {"email": "ada@example.com", "code": "482913", "locale": "en"}


# --------------------------------------------------------------------------- the local API


@pytest.fixture(scope="module")
def local_api(redis_server: RedisServer) -> Iterator[str]:
    """The local API Gateway of `make local`, in this process, over the test Redis."""
    client = redis_server.client()
    client.flushall()
    with pytest.MonkeyPatch.context() as monkeypatch:
        # No attempt queue: accepted deliveries wait for a scheduler that never comes.
        environment = {"MAIL_REDIS_ADDR": redis_server.addr, **SMTP_MODE_ENV}
        intake = cold_start(monkeypatch, "intake_api", environment)
        operator = cold_start(monkeypatch, "operator_api", environment)
        server = LocalApiServer(("127.0.0.1", 0), build_routes(intake.handler, operator.handler))
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_address[1]}"
        server.stop_accepting(timeout_s=10)
        thread.join(timeout=10)
        server.server_close()
    client.close()


def post(
    base_url: str, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """POST raw bytes over HTTP; the status and the decoded JSON answer."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(
            "POST",
            path,
            body=body,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def deep(depth: int) -> bytes:
    return b'{"email":' + b"[" * depth + b"]" * depth + b"}"


HOSTILE_BODIES = {
    "invalid UTF-8": b'{"email": "ada\xff\xfe@example.com", "code": "482913", "locale": "en"}',
    "UTF-16": json.dumps(GOOD_BODY).encode("utf-16"),
    "a lone surrogate escape": b'{"email": "\\ud800@example.com", "code": "1234", "locale": "en"}',
    "deep JSON (2000 levels)": deep(2000),
    "deep JSON past the recursion limit": b"[" * 4000 + b"]" * 4000,
    "a 4,000-digit number": b'{"email": "a@example.com", "code": ' + b"9" * 4000 + b"}",
    "a body over 4096 bytes": json.dumps({**GOOD_BODY, "code": "1" * 5000}).encode(),
    "NaN and Infinity": b'{"email": NaN, "code": Infinity, "locale": -Infinity}',
    "a header in the address": json.dumps(
        {**GOOD_BODY, "email": "ada@example.com\r\nBcc: eve@example.org"}
    ).encode(),
    "a display name with a header": json.dumps(
        {**GOOD_BODY, "email": '"Eve\r\nBcc: eve@example.org" <ada@example.com>'}
    ).encode(),
    "Jinja2 in the code": json.dumps({**GOOD_BODY, "code": "{{ ''.__class__ }}"}).encode(),
    "NUL bytes": b'{"email": "ada@example.com\\u0000", "code": "4829\\u000013", "locale": "en"}',
    "random bytes": bytes(range(256)) * 4,
}


@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
def test_hostile_bodies_over_http_are_a_clear_400(local_api: str, body: bytes) -> None:
    # Given a request body crafted to break parsing, limits or headers
    # When it is posted to the local API (non-UTF-8 bodies arrive base64-encoded,
    # as API Gateway sends binary ones)
    status, answer = post(local_api, LOGIN_CODE_PATH, body, {"Idempotency-Key": "hostile"})

    # Then it is refused as the caller's mistake, in the documented shape
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_request"
    assert answer["error"]["message"]


NOT_JSON = {
    "text/plain": "text/plain",
    "a form": "application/x-www-form-urlencoded",
    "multipart without a boundary": "multipart/form-data",
    "multipart": "multipart/form-data; boundary=xyz",
    "XML": "application/xml",
}


@pytest.mark.parametrize("content_type", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_a_body_that_is_not_json_is_a_clear_400(local_api: str, content_type: str) -> None:
    # Given a valid login-code request sent as something other than JSON
    body = b"email=ada%40example.com&code=482913&locale=en"
    if content_type.startswith("multipart"):
        body = b'--xyz\r\nContent-Disposition: form-data; name="email"\r\n\r\na@b.cd\r\n--xyz--'

    # When it is posted
    status, answer = post(
        local_api,
        LOGIN_CODE_PATH,
        body,
        {"Idempotency-Key": "not-json", "Content-Type": content_type},
    )

    # Then it is refused, never parsed as a form
    assert status == 400, answer
    assert answer["error"] == {
        "code": "invalid_request",
        "message": "request body must be JSON (Content-Type: application/json)",
    }


HOSTILE_KEYS = {
    "a space": "key with space",
    "non-ASCII": "clé-🔑",
    "129 characters": "k" * 129,
    "8 KB": "k" * 8000,
}


@pytest.mark.parametrize("key", HOSTILE_KEYS.values(), ids=HOSTILE_KEYS.keys())
def test_hostile_idempotency_keys_are_a_clear_400(local_api: str, key: str) -> None:
    # Given an Idempotency-Key outside the contract (CR/LF: http.client refuses to
    # send it; the intake's event-level fuzzing sends it)
    status, answer = post(
        local_api,
        LOGIN_CODE_PATH,
        json.dumps(GOOD_BODY).encode(),
        {"Idempotency-Key": key.encode("utf-8").decode("latin-1")},
    )
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    "event_body",
    [
        pytest.param(base64.b64encode(b"\xff\xfe\xfd").decode(), id="base64 of invalid UTF-8"),
        pytest.param("this is not base64!", id="invalid base64"),
    ],
)
def test_binary_bodies_in_the_event_are_a_clear_400(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer, event_body: str
) -> None:
    # Given the event API Gateway sends for a binary body the function cannot read
    intake = cold_start(
        monkeypatch, "intake_api", {"MAIL_REDIS_ADDR": redis_server.addr, **SMTP_MODE_ENV}
    )
    event = api_event("POST", LOGIN_CODE_PATH, headers={"Idempotency-Key": "binary"})
    event.update(body=event_body, isBase64Encoded=True)

    # When the intake handles it
    answer = invoke(intake, event)

    # Then it is a 400 naming the problem, not a 500
    assert answer["statusCode"] == 400, answer["body"]
    assert json.loads(answer["body"])["error"]["code"] == "invalid_request"


SCHEMA = schemathesis.openapi.from_path(REPO_ROOT / "docs" / "openapi.json")
# The local API has no SigV4 (IAM is proved from template.yaml, see test_security):
# requests without the Authorization header are not generated as invalid ones.
SCHEMA.config.generation.update(
    max_examples=25,
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    with_security_parameters=False,
)


def of_the_functions(check: CheckFunction) -> CheckFunction:
    """``check`` for what the functions answer (they carry x-amzn-RequestId).

    The gateway's own refusals of what never reaches a function (a malformed
    Content-Length, a body over 10 MB) have API Gateway's shape, which the
    document, generated from the functions, does not describe.
    """

    @functools.wraps(check)
    def checked(ctx: CheckContext, response: Response, case: schemathesis.Case[Any]) -> bool | None:
        if "x-amzn-requestid" not in response.headers:
            return True  # skipped
        return check(ctx, response, case)

    return checked


CONTRACT_CHECKS = [
    not_a_server_error,
    negative_data_rejection,
    *map(
        of_the_functions,
        [
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            response_headers_conformance,
        ],
    ),
]


@SCHEMA.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_the_local_api_keeps_its_openapi_contract_whatever_it_is_sent(
    case: schemathesis.Case[Any], local_api: str
) -> None:
    # Given requests generated from docs/openapi.json, valid and invalid
    # When each is sent to the local API
    # Then no answer is a 5xx, and every answer is one the document describes
    case.call_and_validate(base_url=local_api, checks=CONTRACT_CHECKS)


# --------------------------------------------------------------------------- the stream


def payload_with(value: str) -> str:
    """A template command's payload_json with ``value`` spliced in as raw JSON text."""
    return (
        '{"to": ["ada@example.com"], "template_id": "account.password_reset", "locale": "en", '
        '"variables": {"name": ' + value + ', "reset_token": "t", "expires_minutes": 5}}'
    )


HOSTILE_JSON = {
    # name: (raw JSON text of the variable `name`, the failure code it must get, if any)
    "3000 levels deep": ("[" * 3000 + "]" * 3000, "invalid_json or invalid_payload"),
    "500 levels deep": ("[" * 500 + "]" * 500, None),
    "5000 digits": ("9" * 5000, "invalid_json"),
    "4301 negative digits": ("-" + "1" * 4301, "invalid_json"),
    "an overflowing exponent": ("1e999999", None),
    "NaN": ("NaN", None),
    "Infinity": ("Infinity", None),
    "a lone surrogate": ('"\\ud800 and more"', "invalid_json"),
    "NUL, CR, LF and a header": ('"\\u0000\\r\\nBcc: eve@example.org"', None),
    "200,000 characters": ('"' + "x" * 200_000 + '"', None),
    "dunder keys": ('{"__class__": {"__init__": "{{ cycler.__init__.__globals__ }}"}}', None),
    "a template expression": ("\"{{ lipsum.__globals__.os.popen('id').read() }}\"", None),
    "a template loop": ('"{% for x in range(10**9) %}{% endfor %}"', None),
    "a repeated key": ('{"a": 1, "a": 2}', None),
}
FIELD_NAMES = st.sampled_from(
    ["delivery_id", "source", "payload_mode", "idempotency_key", "requested_at_ms", "x"]
)
HOSTILE_ENTRIES = st.one_of(
    # a valid command whose payload carries a hostile JSON value
    st.sampled_from(list(HOSTILE_JSON.values())).map(
        lambda case: {"payload_json": payload_with(case[0]).encode()}
    ),
    # a valid command with one field replaced by random bytes (invalid UTF-8 too)
    st.tuples(FIELD_NAMES, st.binary(max_size=200)).map(lambda pair: {pair[0]: pair[1]}),
    # a valid command with a huge field
    FIELD_NAMES.map(lambda name: {name: b"k" * 100_000}),
)


def publish_between_good_commands(client: redis.Redis, hostile: list[dict[str, bytes]]) -> int:
    """Each hostile entry (a good command with fields replaced) after a good command."""
    for number, overrides in enumerate(hostile):
        good = {k: v.encode() for k, v in command(number + 1, mode="template").items()}
        bad = {
            **good,
            "delivery_id": f"hostile-{number}".encode(),
            "idempotency_key": f"hostile-{number}".encode(),
            **overrides,
        }
        for fields in (good, bad):
            client.xadd(STREAM, cast(dict[Any, Any], fields))
    return 2 * len(hostile)


def consume(redis_server: RedisServer, client: redis.Redis) -> tuple[Any, list[dict[str, str]]]:
    """Run the stream poller until it has handled every entry; its report and records."""
    settings_ = Settings.from_environ(
        {"MAIL_REDIS_ADDR": redis_server.addr, "MAIL_STREAM_BLOCK_TIMEOUT": "100ms"}
    )
    observer = RecordingObserver()
    report = build_stream_poller(settings_, observer).run(
        until_drained(client, STREAM, limit_seconds=30)
    )
    assert observer.store_errors == []
    [(last_id, _)] = cast(list[tuple[bytes, Any]], client.xrevrange(STREAM, count=1))
    assert client.get(KEYS.stream_offset(STREAM)) == last_id  # nothing left behind
    records = RedisQueries(build_redis_client(settings_)).malformed_commands(100, None).items
    for record in records:
        assert record["failure_code"]
        assert record["failure_message"]
        json.loads(record["raw_fields"])  # shown to operators as it was stored
    return report, records


@pytest.fixture
def stream_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)  # bytes: entries may be binary
    client.flushall()
    yield client
    client.close()


@pytest.mark.parametrize("name", HOSTILE_JSON)
def test_a_hostile_json_value_is_a_malformed_record_or_a_delivery_never_a_stuck_poller(
    redis_server: RedisServer, stream_client: redis.Redis, name: str
) -> None:
    # Given a template command whose variable is a hostile JSON value, between good ones
    raw, failure_code = HOSTILE_JSON[name]
    publish_between_good_commands(stream_client, [{"payload_json": payload_with(raw).encode()}])

    # When the stream poller consumes the stream
    report, records = consume(redis_server, stream_client)

    # Then the good command is accepted and the hostile one is recorded or accepted
    assert report.accepted + report.malformed == 2
    assert report.accepted >= 1
    if failure_code is not None:
        [record] = records
        assert record["failure_code"] in failure_code.split(" or ")


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(entries=st.lists(HOSTILE_ENTRIES, min_size=1, max_size=6))
def test_any_mix_of_hostile_stream_entries_is_consumed_to_the_end(
    redis_server: RedisServer, entries: list[dict[str, bytes]]
) -> None:
    # Given hostile entries (random bytes, huge fields, hostile JSON), each after a good one
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    client.flushall()
    published = publish_between_good_commands(client, entries)

    # When the stream poller consumes the stream
    report, records = consume(redis_server, client)

    # Then it got to the end: each entry is a delivery or an operator-visible record
    assert report.accepted + report.malformed == published, report
    assert len(records) == report.malformed
    client.close()


# --------------------------------------------------------------------------- to the SMTP server

# Values that would do something if they were ever evaluated as a template.
JINJA_TRICKS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.system('touch CANARY') }}",
    "{% set x = lipsum.__globals__['os'].popen('touch CANARY') %}{{ x.read() }}",
    "{{ 7*7 }}{{ config }}{{ self }}",
    "{% raw %}{% endraw %}{# comment #}{% for i in range(10**9) %}{% endfor %}",
    "${7*7} #{7*7} <%= 7*7 %>",
]


@pytest.fixture
def pipeline_to(
    redis_server: RedisServer, redis_client: redis.Redis, aws: Any, attempt_queue_url: str
) -> Any:
    def make(server: SmtpTestServer, **overrides: str) -> Pipeline:
        environment = smtp_environment(redis_server.addr, attempt_queue_url, server.addr)
        return smtp_pipeline(aws, {**environment, **overrides})

    return make


def test_template_tricks_in_variables_reach_the_reader_as_text(
    smtp_server: SmtpServerFactory, pipeline_to: Any, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given password-reset mails whose name and token try template tricks
    canary = tmp_path / "escaped"
    tricks = [trick.replace("CANARY", str(canary)) for trick in JINJA_TRICKS]
    server = smtp_server()
    pipeline = pipeline_to(server)
    commands = [
        command(
            number,
            mode="template",
            payload=template_payload(
                locale="en",
                variables={"name": trick, "reset_token": trick, "expires_minutes": trick},
            ),
        )
        for number, trick in enumerate(tricks, start=1)
    ]
    accept_from_stream(pipeline, redis_client, *commands)

    # When the worker renders and sends them
    reports = pipeline.work()

    # Then each arrives with the values as plain text (HTML-escaped in HTML), nothing run
    assert [r.status for r in reports] == ["sent"] * len(tricks)
    received = {m.message["Message-ID"]: m.message for m in server.received}
    for number, trick in enumerate(tricks, start=1):
        message = received[f"<notif-{number:06d}@mail.example.com>"]
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        assert text is not None
        assert html is not None
        assert f"Hi {trick}," in text.get_content()
        assert f"valid for {trick} minutes" in text.get_content()
        assert f"Hi {escape(trick)}," in html.get_content()
    assert not canary.exists()


HOSTILE_SUBJECTS = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=80
) | st.sampled_from(
    [
        "Hello\u2028Bcc: eve@example.org",
        "Hello\x85Bcc: eve@example.org",
        "Hello\u2029\u2029<html>",
        "=?utf-8?q?Hello=0D=0ABcc:_eve@example.org?=",
        "x" * 255,
        "é" * 255,
        " \u3000 ",
    ]
)
HOSTILE_FILENAMES = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=60
) | st.sampled_from(
    [
        'invoice.pdf"; filename="evil.exe',
        "invoice.pdf\u2028Content-Type: text/html",
        "=?utf-8?q?evil=0D=0A.exe?=",
        "a" * 255,
        "ü" * 200 + ".pdf",
    ]
)
SENDER_NAMES = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\r\n"),
    max_size=40,
) | st.sampled_from(['Eve <eve@example.org>, "Mallory" <m@example.org>', "a@b.c", '"\\"'])
CATALOG = TemplateCatalog.load(default_catalog_dir())
EXPECTED_HEADERS = sorted(
    [
        *("from", "to", "cc", "reply-to", "subject"),
        *("date", "message-id", "mime-version", "content-type"),
    ]
)


@settings(max_examples=300, deadline=None)
@given(subject=HOSTILE_SUBJECTS, filename=HOSTILE_FILENAMES, sender_name=SENDER_NAMES)
def test_no_subject_file_name_or_sender_name_adds_a_header_or_a_recipient(
    subject: str, filename: str, sender_name: str
) -> None:
    # Given a rendered command with a hostile subject and file name, from a hostile sender name
    payload = rendered_payload(
        subject=subject,
        attachments=[
            {
                "filename": filename,
                "content_type": "application/pdf",
                "content_base64": base64.b64encode(b"%PDF").decode(),
            }
        ],
    )
    fields = command(1, payload=payload)
    decoded = decode_command("1-1", [(k.encode(), v.encode()) for k, v in fields.items()])
    if not isinstance(decoded, DeliveryCommand):
        return  # refused at intake: a malformed record (the stream tests above)

    # When the worker builds the message and it goes on the wire
    delivery, _ = delivery_from_command(decoded, 1_795_338_900_000)
    rendered = render_delivery(CATALOG, delivery)
    message = build_message(
        delivery,
        rendered.subject,
        rendered.text_body,
        rendered.html_body,
        Sender("noreply@mail.example.com", sender_name or None),
        now=datetime(2026, 11, 22, 9, 15, tzinfo=UTC),
    )
    received = BytesParser(EmailMessage, policy=default_policy).parsebytes(_wire_bytes(message))

    # Then a receiver sees exactly the intended headers, sender and recipients
    assert_only_the_intended_headers(received)
    if "=?" not in subject:  # text that looks like an encoded word is decoded by readers
        assert received["Subject"].split() == rendered.subject.split()
    [attachment] = received.iter_attachments()
    if "=?" not in filename:
        assert as_parsed(attachment.get_filename() or "") == as_parsed(filename)


def as_parsed(text: str) -> list[str]:
    """What survives Python's parser: it folds whitespace and unwraps <...> and "..."."""
    if len(text) > 1 and text[0] + text[-1] in ("<>", '""'):
        text = text[1:-1]
    return text.split()


def assert_only_the_intended_headers(received: EmailMessage) -> None:
    assert sorted(name.lower() for name in received) == EXPECTED_HEADERS
    [sender] = received["From"].addresses
    assert sender.addr_spec == "noreply@mail.example.com"
    assert [a.addr_spec for a in received["To"].addresses] == ["ada@example.com"]
    assert [a.addr_spec for a in received["Cc"].addresses] == ["bob@example.com"]
    assert [a.addr_spec for a in received["Reply-To"].addresses] == ["support@example.com"]


def test_hostile_names_and_subjects_reach_a_real_smtp_server_without_a_forged_header(
    smtp_server: SmtpServerFactory, pipeline_to: Any, redis_client: redis.Redis
) -> None:
    # Given a sender display name full of address syntax, and subjects and file names
    # carrying line separators, quotes and encoded-word lookalikes
    server = smtp_server()
    pipeline = pipeline_to(
        server, MAIL_SMTP_FROM_NAME='Eve <eve@example.org>, "Mallory" <mallory@example.org>'
    )
    subjects = ["Hello\u2028Bcc: eve@example.org", "Hi\x85To: eve@example.org", "x\u2029y"]
    filenames = ['a.pdf"; filename="evil.exe', "b.pdf\u2028Bcc: eve@example.org", "c.pdf"]
    commands = [
        command(
            number,
            payload=rendered_payload(
                subject=subject,
                attachments=[
                    {
                        "filename": filename,
                        "content_type": "application/pdf",
                        "content_base64": base64.b64encode(b"%PDF").decode(),
                    }
                ],
            ),
        )
        for number, (subject, filename) in enumerate(zip(subjects, filenames, strict=True), 1)
    ]
    accept_from_stream(pipeline, redis_client, *commands)

    # When the worker sends them
    reports = pipeline.work()

    # Then the server got exactly the intended envelopes and headers
    assert [r.status for r in reports] == ["sent"] * len(commands)
    assert len(server.received) == len(commands)
    for received in server.received:
        assert sorted(received.rcpt_tos) == [
            "ada@example.com",
            "audit@example.com",
            "bob@example.com",
        ]
        assert received.mail_from == "noreply@mail.example.com"
        assert_only_the_intended_headers(received.message)
        [sender] = received.message["From"].addresses
        assert sender.display_name == 'Eve <eve@example.org>, "Mallory" <mallory@example.org>'
        head = received.data.split(b"\r\n\r\n", 1)[0]
        assert b"\r\nBcc:" not in head
        assert b"\r\nTo: eve" not in head
    names = {m.message["Message-ID"]: m for m in server.received}
    for number, (subject, filename) in enumerate(zip(subjects, filenames, strict=True), 1):
        message = names[f"<notif-{number:06d}@mail.example.com>"].message
        assert message["Subject"] == " ".join(subject.replace("\x85", " ").split())
        [attachment] = message.iter_attachments()
        assert attachment.get_filename() == filename
