"""mailctl, the operator command: parsing, rendering, signing, errors, and HTTP end to end.

The end-to-end cases talk to a small HTTP server in a thread that answers with
canned JSON, so they exercise the real client (urllib, headers, query strings,
error bodies) without the real API.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.credentials import Credentials, ReadOnlyCredentials

from mailctl import cli, render
from mailctl.client import (
    ApiClient,
    UnsupportedUrl,
    api_error,
    region_from_url,
    resolve_region,
    should_sign,
    sign_request,
)
from tests.support.network import free_port

EXECUTE_API = "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/live"
FAKE_KEYS = ReadOnlyCredentials("AKIDEXAMPLE", "secret", None)


def delivery(delivery_id: str = "dlv_1", **changes: Any) -> dict[str, Any]:
    """A Delivery as the operator API shapes it."""
    record: dict[str, Any] = {
        "delivery_id": delivery_id,
        "parent_delivery_id": None,
        "source": "notification",
        "status": "sent",
        "payload_mode": "template",
        "template_id": "account.password_reset",
        "locale": "de-AT",
        "resolved_locale": "de",
        "locale_fallback_used": True,
        "to": ["ada@example.com"],
        "cc": [],
        "bcc": [],
        "reply_to": [],
        "subject": "Passwort",
        "variables": {"name": "Ada", "token": "[redacted]"},
        "secret_variables": ["token"],
        "attachments": [
            {
                "filename": "logo.png",
                "content_type": "image/png",
                "size_bytes": 512,
                "inline": True,
                "content_id": "logo",
            }
        ],
        "attempt_count": 1,
        "idempotency_key": "key-1",
        "request_id": None,
        "trace_id": None,
        "created_at_ms": 1_795_338_900_000,
        "updated_at_ms": 1_795_338_901_250,
        "sent_at_ms": 1_795_338_901_250,
        "last_outcome": "accepted",
        "last_summary": "250 2.0.0 queued",
        "failure_code": None,
    }
    record.update(changes)
    return record


# --------------------------------------------------------------------------- canned API


@dataclass(frozen=True)
class Canned:
    status: int
    body: object
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes


class CannedApi(ThreadingHTTPServer):
    """Answers (method, path, cursor) with canned JSON and remembers every request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CannedApiHandler)
        self.answers: dict[tuple[str, str, str | None], Canned] = {}
        self.seen: list[Seen] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, method: str, path: str, canned: Canned, *, cursor: str | None = None) -> None:
        self.answers[(method, path, cursor)] = canned


class CannedApiHandler(BaseHTTPRequestHandler):
    server: CannedApi

    def do_GET(self) -> None:
        self.reply()

    def do_POST(self) -> None:
        self.reply()

    def reply(self) -> None:
        split = urlsplit(self.path)
        query = parse_qs(split.query)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.seen.append(Seen(self.command, split.path, query, headers, body))
        cursor = query.get("cursor", [None])[-1]
        canned = self.server.answers.get((self.command, split.path, cursor)) or Canned(
            404, {"error": {"code": "not_found", "message": f"nothing canned at {split.path}"}}
        )
        payload = (
            canned.body.encode()
            if isinstance(canned.body, str)
            else json.dumps(canned.body).encode()
        )
        self.send_response(canned.status)
        self.send_header("Content-Type", "application/json")
        for name, value in canned.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet test output


@pytest.fixture
def api() -> Iterator[CannedApi]:
    server = CannedApi()
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def run(*argv: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return Run(code, out.getvalue(), err.getvalue())


# --------------------------------------------------------------------------- parsing


def test_global_options_are_taken_before_or_after_the_command() -> None:
    # Given the parser
    parser = cli.build_parser()

    # When the global options come before the command, and when they come after it
    before = parser.parse_args(["--json", "--timeout", "5", "deliveries", "get", "dlv_1"])
    after = parser.parse_args(["deliveries", "get", "dlv_1", "--json", "--timeout", "5"])

    # Then both read the same
    for args in (before, after):
        assert args.json is True
        assert args.timeout == 5.0
        assert args.delivery_id == "dlv_1"
        assert args.command is cli.deliveries_get


def test_defaults_of_the_global_options() -> None:
    # When nothing but a command is given
    args = cli.build_parser().parse_args(["malformed", "list"])

    # Then nothing is forced: the API URL, signing and the region are decided later
    assert (args.api, args.sigv4, args.region, args.json) == (None, None, None, False)
    assert args.timeout == 30.0
    assert (args.limit, args.cursor, args.all) == (None, None, False)


def test_deliveries_list_takes_every_filter_and_paging_option() -> None:
    # When every option of `deliveries list` is given
    args = cli.build_parser().parse_args(
        [
            "deliveries", "list",
            "--recipient", "ada@example.com", "--status", "suppressed",
            "--source", "notification", "--template-id", "auth.login_code",
            "--idempotency-key", "key-1", "--limit", "200", "--cursor", "abc", "--all",
        ]
    )  # fmt: skip

    # Then each lands in its own attribute
    assert args.recipient == "ada@example.com"
    assert args.status == "suppressed"
    assert args.source == "notification"
    assert args.template_id == "auth.login_code"
    assert args.idempotency_key == "key-1"
    assert (args.limit, args.cursor, args.all) == (200, "abc", True)


@pytest.mark.parametrize(
    "argv",
    [
        ["deliveries", "list", "--limit", "0"],
        ["deliveries", "list", "--limit", "201"],
        ["deliveries", "list", "--limit", "many"],
        ["deliveries", "get"],
        ["deliveries"],
        [],
        ["send-test"],
        ["--timeout", "0", "malformed", "list"],
    ],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # When the command line is incomplete or out of range
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)

    # Then argparse refuses it with exit code 2 and a usage line
    assert exited.value.code == 2
    assert "usage: mailctl" in capsys.readouterr().err


def test_an_api_url_that_is_not_http_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    # When --api is not an http(s) URL
    with pytest.raises(SystemExit) as exited:
        cli.main(["--api", "ftp://example.com", "deliveries", "list"])

    # Then it is refused before any request
    assert exited.value.code == 2
    assert "--api: not an http(s) URL" in capsys.readouterr().err


def test_the_api_url_comes_from_the_option_then_the_environment_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parser = cli.build_parser()

    # Given no MAIL_API_URL: the local stack
    monkeypatch.delenv("MAIL_API_URL", raising=False)
    assert cli.client_for(parser.parse_args(["malformed", "list"]), parser).base_url == (
        "http://127.0.0.1:3000"
    )

    # Given MAIL_API_URL: that
    monkeypatch.setenv("MAIL_API_URL", EXECUTE_API)
    from_env = cli.client_for(parser.parse_args(["malformed", "list"]), parser)
    assert from_env.base_url == EXECUTE_API
    assert from_env.sign is True
    assert from_env.region == "eu-west-1"

    # Given --api as well: --api
    args = parser.parse_args(["--api", "http://localhost:4000", "malformed", "list"])
    assert cli.client_for(args, parser).base_url == "http://localhost:4000"


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize(
    ("epoch_ms", "precise", "shown"),
    [
        (0, True, "1970-01-01T00:00:00.000Z"),
        (1_795_338_900_123, True, "2026-11-22T09:15:00.123Z"),
        (1_795_338_900_123, False, "2026-11-22T09:15:00Z"),
        (None, True, "-"),
    ],
)
def test_times_are_iso_8601_utc(epoch_ms: int | None, precise: bool, shown: str) -> None:
    # When an epoch in milliseconds is shown
    # Then it reads as ISO-8601 in UTC, whatever the local time zone
    assert render.iso_utc(epoch_ms, precise=precise) == shown


def test_only_epoch_fields_are_times() -> None:
    # Then *_at_ms and scheduled_for_ms are times, duration_ms is a length
    assert render.is_time_field("created_at_ms")
    assert render.is_time_field("scheduled_for_ms")
    assert not render.is_time_field("duration_ms")
    assert not render.is_time_field("attempt_count")


def test_a_table_aligns_every_column_to_its_widest_cell() -> None:
    # Given two deliveries of different widths
    rows = [
        delivery("dlv_1", to=["ada@example.com", "bob@example.com"]),
        delivery("dlv_0000002", status="dead_letter", template_id=None, last_outcome=None),
    ]

    # When they are rendered as the deliveries table
    lines = render.table(rows, render.DELIVERY_COLUMNS).splitlines()

    # Then each column starts at the same place on every line
    assert lines[0].split() == [
        "DELIVERY", "ID", "CREATED", "(UTC)", "STATUS", "SOURCE", "TO", "TEMPLATE",
        "ATTEMPTS", "LAST", "OUTCOME",
    ]  # fmt: skip
    for title in ("CREATED", "STATUS", "TO", "ATTEMPTS"):
        column = lines[0].index(title)
        assert all(line[column - 2 : column] == "  " for line in lines[1:]), title
    assert lines[1].startswith("dlv_1        2026-11-22T09:15:00Z  sent ")
    assert "ada@example.com, bob@example.com" in lines[1]
    # and what is missing shows as "-"
    assert lines[2].split()[5] == "-"
    assert lines[2].rstrip().endswith("-")


def test_a_long_cell_is_clipped_in_a_table() -> None:
    # Given an attempt whose summary is long
    attempt = {"attempt_no": 1, "status": "transport_failed", "summary": "x" * 200}

    # When it is rendered as the attempts table
    line = render.table([attempt], render.ATTEMPT_COLUMNS).splitlines()[1]

    # Then its summary is cut, and says so
    assert line.endswith("x…")
    assert len(line.split()[-1]) == render.MAX_CELL


def test_one_delivery_reads_as_key_value_lines() -> None:
    # When a delivery is shown on its own
    shown = render.delivery_record(delivery()).splitlines()

    # Then every field has a line, values aligned, times in ISO-8601 UTC
    assert shown[0] == "delivery_id:          dlv_1"
    assert "created_at:           2026-11-22T09:15:00.000Z" in shown
    assert "sent_at:              2026-11-22T09:15:01.250Z" in shown
    assert "variables.name:       Ada" in shown
    assert "variables.token:      [redacted]" in shown
    assert "attachment:           logo.png (image/png, 512 B, inline, cid logo)" in shown
    assert "locale_fallback_used: yes" in shown
    assert "parent_delivery_id:   -" in shown


def test_a_secret_variable_is_never_shown_even_if_the_api_returned_it() -> None:
    # Given a delivery whose secret variable came back in clear (a server bug)
    leaky = delivery(variables={"name": "Ada", "token": "s3cr3t"})

    # When it is shown
    shown = render.delivery_record(leaky)

    # Then the secret is masked
    assert "s3cr3t" not in shown
    assert "variables.token:      [redacted]" in shown


def test_a_malformed_command_shows_its_raw_fields_as_the_producer_sent_them() -> None:
    # Given a malformed command record, its raw fields as the producer wrote them
    item = {
        "stream_entry_id": "1795338900000-0",
        "stream": "mail:delivery_commands",
        "failure_code": "missing_field",
        "failure_message": "missing field(s): payload_json",
        "raw_fields": {
            "delivery_id": "bad-1",
            "requested_at_ms": "1795338900000",
            "request_id": "",
            "trace_id": "two\nlines",
        },
        "recorded_at_ms": 1_795_338_900_000,
    }

    # When it is shown on its own
    shown = render.malformed_record(item).splitlines()

    # Then each raw field keeps its name and value as sent; the service's own time is readable
    assert "raw_fields.delivery_id:     bad-1" in shown
    assert "raw_fields.requested_at_ms: 1795338900000" in shown
    assert 'raw_fields.request_id:      ""' in shown
    assert 'raw_fields.trace_id:        "two\\nlines"' in shown
    assert "recorded_at:                2026-11-22T09:15:00.000Z" in shown


# --------------------------------------------------------------------------- signing


@pytest.mark.parametrize(
    ("url", "region"),
    [
        (EXECUTE_API, "eu-west-1"),
        ("https://abc.execute-api.us-gov-west-1.amazonaws.com/", "us-gov-west-1"),
        ("https://abc.execute-api.cn-north-1.amazonaws.com.cn/prod", "cn-north-1"),
        ("https://abc-vpce-123.execute-api.ap-southeast-2.vpce.amazonaws.com/x", "ap-southeast-2"),
        ("https://mail.example.com/live", None),
        ("http://127.0.0.1:3000", None),
    ],
)
def test_the_region_is_read_from_an_execute_api_host(url: str, region: str | None) -> None:
    # Then an execute-api host names its region; any other host does not
    assert region_from_url(url) == region


def test_the_region_comes_from_the_option_then_the_url_then_the_environment() -> None:
    env = {"AWS_REGION": "us-east-2", "AWS_DEFAULT_REGION": "us-west-2"}
    assert resolve_region(EXECUTE_API, "sa-east-1", env) == "sa-east-1"
    assert resolve_region(EXECUTE_API, None, env) == "eu-west-1"
    assert resolve_region("https://mail.example.com", None, env) == "us-east-2"
    assert resolve_region("https://mail.example.com", None, {"AWS_DEFAULT_REGION": "x-1"}) == "x-1"
    assert resolve_region("https://mail.example.com", None, {}) is None


@pytest.mark.parametrize(
    ("url", "choice", "signed"),
    [
        ("http://127.0.0.1:3000", None, False),
        ("http://localhost:3000/local", None, False),
        ("http://[::1]:3000", None, False),
        (EXECUTE_API, None, True),
        ("https://mail.example.com", None, True),
        (EXECUTE_API, False, False),
        ("http://127.0.0.1:3000", True, True),
    ],
)
def test_requests_are_signed_unless_the_api_is_local(
    url: str, choice: bool | None, signed: bool
) -> None:
    # Then --sigv4 / --no-sigv4 decide; without them only a non-local host is signed
    assert should_sign(url, choice) is signed


def test_a_signature_names_execute_api_and_the_region() -> None:
    # Given fixed fake credentials
    credentials = Credentials("AKIDEXAMPLE", "secret")

    # When a resend is signed for eu-west-1
    headers = sign_request(
        method="POST",
        url=f"{EXECUTE_API}/api/v1/internal/deliveries/dlv_1/resend",
        headers={"Idempotency-Key": "key-1"},
        body=b"",
        credentials=credentials,
        region="eu-west-1",
    )

    # Then the Authorization header is a SigV4 one for execute-api in eu-west-1
    authorization = headers["Authorization"]
    assert re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/\d{8}/eu-west-1/execute-api/aws4_request, "
        r"SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}",
        authorization,
    ), authorization
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "idempotency-key", "x-amz-date"} <= set(signed)
    assert re.fullmatch(r"\d{8}T\d{6}Z", headers["X-Amz-Date"])
    assert "X-Amz-Security-Token" not in headers


def test_temporary_credentials_send_their_session_token() -> None:
    # Given credentials with a session token
    credentials = Credentials("ASIAEXAMPLE", "secret", "token-1")

    # When a request is signed
    headers = sign_request(
        method="GET",
        url=f"{EXECUTE_API}/api/v1/internal/dead-letters",
        headers={},
        body=b"",
        credentials=credentials,
        region="eu-west-1",
    )

    # Then the token travels with it, and is part of the signature
    assert headers["X-Amz-Security-Token"] == "token-1"
    assert "x-amz-security-token" in headers["Authorization"]


def test_a_signed_request_arrives_with_every_header_it_signed(api: CannedApi) -> None:
    # Given an API that answers a resend, and a client that signs with fake credentials
    api.answer("POST", "/live/api/v1/internal/deliveries/dlv_1/resend", Canned(201, delivery()))
    client = ApiClient(
        f"{api.url}/live", sign=True, region="eu-west-1", credentials_loader=lambda: FAKE_KEYS
    )

    # When the resend is sent
    client.post("/api/v1/internal/deliveries/dlv_1/resend", headers={"Idempotency-Key": "k-1"})

    # Then the server got a SigV4 Authorization and every header the signature covers
    seen = api.seen[-1]
    assert "/eu-west-1/execute-api/aws4_request" in seen.headers["authorization"]
    signed = seen.headers["authorization"].split("SignedHeaders=")[1].split(",")[0]
    for name in signed.split(";"):
        assert name in seen.headers, name
    assert seen.headers["host"] == api.url.removeprefix("http://")
    assert seen.headers["idempotency-key"] == "k-1"


def test_without_credentials_signing_fails_with_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given no AWS credentials anywhere botocore looks (env, files, instance metadata)
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    # When a deployed API is asked
    result = run("--api", EXECUTE_API, "deliveries", "list")

    # Then mailctl says so and exits 1
    assert result.code == 1
    assert result.err.startswith("error: no AWS credentials for SigV4 signing (")
    assert len(result.err.splitlines()) == 1


def test_signing_without_a_region_fails_with_one_clear_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given no region in the URL or the environment
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)

    # When a custom-domain API is asked with signing
    result = run("--api", "https://mail.example.com", "deliveries", "get", "dlv_1")

    # Then mailctl asks for --region
    assert result.code == 1
    assert (
        result.err == "error: no AWS region for SigV4 signing (pass --region or set AWS_REGION)\n"
    )


# --------------------------------------------------------------------------- errors


def test_an_api_error_is_one_line_with_code_message_and_status(api: CannedApi) -> None:
    # Given an API that does not know the delivery
    api.answer(
        "GET",
        "/api/v1/internal/deliveries/dlv_404",
        Canned(404, {"error": {"code": "not_found", "message": "no delivery dlv_404"}}),
    )

    # When it is asked for
    result = run("--api", api.url, "deliveries", "get", "dlv_404")

    # Then the error is one line on stderr, and the exit code 1
    assert result.code == 1
    assert result.out == ""
    assert result.err == "error: not_found: no delivery dlv_404 (HTTP 404)\n"


def test_a_resend_of_an_unsettled_delivery_reports_not_resendable(api: CannedApi) -> None:
    # Given an API that refuses the resend
    api.answer(
        "POST",
        "/api/v1/internal/deliveries/dlv_1/resend",
        Canned(
            409, {"error": {"code": "not_resendable", "message": "dlv_1 is queued, not settled"}}
        ),
    )

    # When it is resent
    result = run("--api", api.url, "deliveries", "resend", "dlv_1", "--idempotency-key", "k")

    # Then the refusal is the error line
    assert result.code == 1
    assert result.err == "error: not_resendable: dlv_1 is queued, not settled (HTTP 409)\n"


def test_an_api_gateway_refusal_is_named_by_its_error_type() -> None:
    # Given API Gateway's own answer to a caller without execute-api:Invoke
    error = api_error(
        403,
        {"x-amzn-errortype": "AccessDeniedException:http://internal.amazon.com/"},
        b'{"Message":"User: arn:aws:iam::1:user/x is not authorized"}',
    )

    # Then the error type becomes the code
    assert str(error).startswith("AccessDeniedException: ")
    assert str(error).endswith("(HTTP 403)")

    # And a body with only a message, without the header, is named by its status
    assert str(api_error(502, {}, b'{"message": "Internal server error"}')) == (
        "bad_gateway: Internal server error (HTTP 502)"
    )


def test_an_unreachable_api_is_one_line_naming_the_url() -> None:
    # Given a local port nothing listens on
    url = f"http://127.0.0.1:{free_port()}"

    # When mailctl asks it
    result = run("--api", url, "deliveries", "list", "--status", "sent")

    # Then it says it cannot reach that URL and why, and exits 1
    assert result.code == 1
    assert (
        result.err == f"error: cannot reach {url}/api/v1/internal/deliveries: Connection refused\n"
    )


def test_the_client_refuses_a_file_url_rather_than_read_the_file(tmp_path: Path) -> None:
    # Given a client whose API URL is a file: URL, and a file where its route leads
    route = tmp_path / "api" / "v1" / "internal" / "deliveries"
    route.parent.mkdir(parents=True)
    route.write_text(json.dumps({"items": [], "next_cursor": None}))
    client = ApiClient(base_url=f"file://{tmp_path}")

    # When it is asked to call the API
    with pytest.raises(UnsupportedUrl) as refused:
        client.get("/api/v1/internal/deliveries")

    # Then it refuses, naming the URL and what it takes, and reads nothing
    assert str(refused.value) == f"cannot call the API: not an http(s) URL: 'file://{tmp_path}'"


def test_an_answer_that_is_not_json_is_an_error(api: CannedApi) -> None:
    # Given an API that answers HTML
    api.answer("GET", "/api/v1/internal/dead-letters", Canned(200, "<html>hello</html>"))

    # When it is asked
    result = run("--api", api.url, "dead-letters", "list")

    # Then mailctl says the answer was not JSON
    assert result.code == 1
    assert result.err.startswith("error: unexpected answer from ")
    assert result.err.endswith("(HTTP 200): not JSON\n")


# --------------------------------------------------------------------------- commands


def test_deliveries_list_sends_the_filters_and_prints_a_table_and_the_cursor(
    api: CannedApi,
) -> None:
    # Given a first page with a cursor to the next
    api.answer(
        "GET",
        "/api/v1/internal/deliveries",
        Canned(200, {"items": [delivery("dlv_2"), delivery("dlv_1")], "next_cursor": "c2"}),
    )

    # When deliveries are listed with filters
    result = run(
        "--api", api.url, "deliveries", "list",
        "--recipient", "ada+tag@example.com", "--template-id", "auth.login_code", "--limit", "2",
    )  # fmt: skip

    # Then the filters went out as the query string
    assert result.code == 0, result.err
    assert api.seen[-1].query == {
        "recipient": ["ada+tag@example.com"],
        "template_id": ["auth.login_code"],
        "limit": ["2"],
    }
    # and the answer is a table, then a hint with the cursor
    lines = result.out.splitlines()
    assert lines[0].startswith("DELIVERY ID")
    assert [line.split()[0] for line in lines[1:3]] == ["dlv_2", "dlv_1"]
    assert lines[3].startswith("next cursor: c2 ")
    assert "--cursor c2" in lines[3]


def test_deliveries_list_all_follows_the_cursor_to_the_last_page(api: CannedApi) -> None:
    # Given two pages
    path = "/api/v1/internal/deliveries"
    api.answer("GET", path, Canned(200, {"items": [delivery("dlv_2")], "next_cursor": "c2"}))
    page_two = {"items": [delivery("dlv_1")], "next_cursor": None}
    api.answer("GET", path, Canned(200, page_two), cursor="c2")

    # When every page is asked for, as JSON
    result = run("--api", api.url, "--json", "deliveries", "list", "--status", "sent", "--all")

    # Then both pages were fetched with the same filter, and merged into one answer
    assert result.code == 0, result.err
    assert [seen.query.get("cursor") for seen in api.seen] == [None, ["c2"]]
    assert all(seen.query["status"] == ["sent"] for seen in api.seen)
    answer = json.loads(result.out)
    assert [item["delivery_id"] for item in answer["items"]] == ["dlv_2", "dlv_1"]
    assert answer["next_cursor"] is None


def test_an_api_url_with_a_stage_path_keeps_it(api: CannedApi) -> None:
    # Given an API deployed under a stage
    api.answer("GET", "/live/api/v1/internal/deliveries/dlv_1", Canned(200, delivery()))

    # When a delivery is read through the stage URL
    result = run("--api", f"{api.url}/live/", "deliveries", "get", "dlv_1")

    # Then the stage is part of the path, and the delivery is shown as key: value lines
    assert result.code == 0, result.err
    assert api.seen[-1].path == "/live/api/v1/internal/deliveries/dlv_1"
    assert result.out.startswith("delivery_id:          dlv_1\n")


def test_deliveries_attempts_prints_the_attempts_table(api: CannedApi) -> None:
    # Given a delivery with two attempts
    attempts = [
        {
            "attempt_no": 1, "status": "transport_failed", "outcome": "transient_failure",
            "summary": "connection reset", "failure_code": "smtp_transport",
            "scheduled_for_ms": 1_795_338_900_000, "started_at_ms": 1_795_338_900_010,
            "finished_at_ms": 1_795_338_900_510, "duration_ms": 500,
        },
        {
            "attempt_no": 2, "status": "scheduled", "outcome": None, "summary": None,
            "failure_code": None, "scheduled_for_ms": 1_795_338_960_000, "started_at_ms": None,
            "finished_at_ms": None, "duration_ms": None,
        },
    ]  # fmt: skip
    api.answer(
        "GET", "/api/v1/internal/deliveries/dlv_1/attempts", Canned(200, {"items": attempts})
    )

    # When they are listed
    result = run("--api", api.url, "deliveries", "attempts", "dlv_1")

    # Then each is a row, oldest first, with times and durations readable
    assert result.code == 0, result.err
    rows = result.out.splitlines()
    assert rows[0].split()[:3] == ["#", "STATUS", "OUTCOME"]
    assert rows[1].split()[:6] == [
        "1", "transport_failed", "transient_failure",
        "2026-11-22T09:15:00Z", "2026-11-22T09:15:00Z", "500",
    ]  # fmt: skip
    assert rows[2].split()[:5] == ["2", "scheduled", "-", "2026-11-22T09:16:00Z", "-"]
    assert "next cursor" not in result.out


def test_resend_prints_a_generated_key_then_the_clone(api: CannedApi) -> None:
    # Given an API that resends dlv_1 as dlv_2
    clone = delivery("dlv_2", parent_delivery_id="dlv_1", source="operator_resend")
    api.answer("POST", "/api/v1/internal/deliveries/dlv_1/resend", Canned(201, clone))

    # When it is resent without a key
    result = run("--api", api.url, "deliveries", "resend", "dlv_1")

    # Then a fresh key was sent and printed, so the same resend can be retried
    assert result.code == 0, result.err
    key = api.seen[-1].headers["idempotency-key"]
    assert re.fullmatch(r"[0-9a-f-]{36}", key)
    assert f"--idempotency-key {key}" in result.err
    assert api.seen[-1].body == b""
    # and the clone is shown
    assert result.out.startswith("resent dlv_1 as dlv_2\n")
    assert "source:               operator_resend" in result.out


def test_a_replayed_resend_says_it_was_a_replay(api: CannedApi) -> None:
    # Given an API that has already done this resend
    clone = delivery("dlv_2", parent_delivery_id="dlv_1", source="operator_resend")
    api.answer(
        "POST",
        "/api/v1/internal/deliveries/dlv_1/resend",
        Canned(200, clone, {"Idempotent-Replayed": "true"}),
    )

    # When it is resent with the same key
    result = run("--api", api.url, "deliveries", "resend", "dlv_1", "--idempotency-key", "k-1")

    # Then the key was used as given, not printed again, and the answer names the replay
    assert result.code == 0, result.err
    assert api.seen[-1].headers["idempotency-key"] == "k-1"
    assert result.err == ""
    assert result.out.startswith("already resent with this idempotency key: dlv_2 (a replay)\n")


def test_malformed_and_dead_letter_lists(api: CannedApi) -> None:
    # Given one malformed command and one dead letter
    malformed = {
        "stream_entry_id": "1795338900000-0", "stream": "mail:delivery_commands",
        "failure_code": "invalid_json", "failure_message": "payload_json is not JSON",
        "raw_fields": {"payload_json": "{"}, "recorded_at_ms": 1_795_338_900_000,
    }  # fmt: skip
    dead = {
        "delivery_id": "dlv_9", "attempts": 4, "last_outcome": "transient_failure",
        "last_summary": "timed out", "dead_lettered_at_ms": 1_795_338_900_000,
        "delivery": delivery("dlv_9", status="dead_letter"),
    }  # fmt: skip
    api.answer(
        "GET",
        "/api/v1/internal/malformed-commands",
        Canned(200, {"items": [malformed], "next_cursor": None}),
    )
    api.answer(
        "GET",
        "/api/v1/internal/dead-letters",
        Canned(200, {"items": [dead], "next_cursor": None}),
    )

    # When each is listed
    malformed_out = run("--api", api.url, "malformed", "list", "--limit", "5")
    dead_out = run("--api", api.url, "dead-letters", "list")

    # Then each is a table row
    assert malformed_out.code == dead_out.code == 0
    assert api.seen[0].query == {"limit": ["5"]}
    assert malformed_out.out.splitlines()[1].split()[:4] == [
        "1795338900000-0", "2026-11-22T09:15:00Z", "mail:delivery_commands", "invalid_json",
    ]  # fmt: skip
    assert dead_out.out.splitlines()[1].split()[:5] == [
        "dlv_9", "2026-11-22T09:15:00Z", "4", "transient_failure", "ada@example.com",
    ]  # fmt: skip


def test_an_empty_list_says_so(api: CannedApi) -> None:
    # Given no malformed commands
    api.answer(
        "GET",
        "/api/v1/internal/malformed-commands",
        Canned(200, {"items": [], "next_cursor": None}),
    )

    # Then the list says so instead of printing a bare header
    assert run("--api", api.url, "malformed", "list").out == "no malformed commands\n"


def test_malformed_get_shows_one_record(api: CannedApi) -> None:
    # Given a malformed command
    item = {
        "stream_entry_id": "1795338900000-0", "stream": "mail:delivery_commands",
        "failure_code": "missing_field", "failure_message": "missing field(s): source",
        "raw_fields": {"delivery_id": "bad-1"}, "recorded_at_ms": 1_795_338_900_000,
    }  # fmt: skip
    api.answer("GET", "/api/v1/internal/malformed-commands/1795338900000-0", Canned(200, item))

    # When it is read as JSON
    result = run("--api", api.url, "malformed", "get", "1795338900000-0", "--json")

    # Then the answer is printed as it came
    assert result.code == 0, result.err
    assert json.loads(result.out) == item

    # And as lines, the raw fields keep the names they were sent with
    lines = run("--api", api.url, "malformed", "get", "1795338900000-0").out.splitlines()
    assert "raw_fields.delivery_id: bad-1" in lines


# --------------------------------------------------------------------------- send-test


LOGIN_CODES = "/api/v1/internal/login-code-deliveries"


def test_send_test_never_echoes_a_code_it_was_given(api: CannedApi) -> None:
    # Given the intake accepts the code
    api.answer("POST", LOGIN_CODES, Canned(200, {"delivery_id": "dlv_7", "outcome": "suppressed"}))

    # When a test code is sent with --code
    result = run(
        "--api", api.url, "send-test", "--email", "ada@example.com", "--code", "482913",
        "--idempotency-key", "k-7",
    )  # fmt: skip

    # Then the code went to the intake but appears nowhere in mailctl's output
    assert result.code == 0, result.err
    sent = json.loads(api.seen[-1].body)
    assert sent == {"email": "ada@example.com", "code": "482913", "locale": "en"}
    assert api.seen[-1].headers["idempotency-key"] == "k-7"
    assert "482913" not in result.out + result.err
    assert result.out == "delivery dlv_7: accepted, suppressed (nothing is sent)\n"


def test_send_test_does_not_echo_the_code_even_from_an_error_message(api: CannedApi) -> None:
    # Given an intake that (wrongly) repeats the code in its error message
    error = {"error": {"code": "invalid_request", "message": "code 482913 is not allowed"}}
    api.answer("POST", LOGIN_CODES, Canned(400, error))

    # When a test code is sent
    result = run("--api", api.url, "send-test", "--email", "ada@example.com", "--code", "482913")

    # Then the error line hides it
    assert result.code == 1
    assert "482913" not in result.out + result.err
    assert "error: invalid_request: code [redacted] is not allowed (HTTP 400)" in result.err


def test_send_test_shows_a_code_it_made_up_exactly_once(api: CannedApi) -> None:
    # Given the intake answers a replay
    api.answer(
        "POST",
        LOGIN_CODES,
        Canned(
            200,
            {"delivery_id": "dlv_8", "outcome": "sent"},
            {"Idempotent-Replayed": "true"},
        ),
    )

    # When a test code is sent without --code, in German
    result = run("--api", api.url, "send-test", "--email", "ada@example.com", "--locale", "de")

    # Then mailctl made up six digits, sent them, and shows them once, saying so
    sent = json.loads(api.seen[-1].body)
    assert re.fullmatch(r"\d{6}", sent["code"])
    assert sent["locale"] == "de"
    output = result.out + result.err
    assert output.count(sent["code"]) == 1
    assert f"login code: {sent['code']}  (generated by mailctl" in result.out
    assert result.out.endswith(
        "delivery dlv_8: accepted, queued for sending"
        "  (a replay of an earlier request with this idempotency key)\n"
    )
