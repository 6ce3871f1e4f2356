"""The whole pipeline on the local stack, driven only from outside.

Requests go in over HTTP (the intake and the operator API) and as ``XADD``
on the command stream; what comes out is read from the operator API and
from the ``.eml`` files of the stack's SMTP capture server. The capture
server answers by recipient: ``tempfail-once…@`` 451 the first time,
``tempfail-always…@`` 451 always, ``reject…@`` 550. Retries are 1 s apart.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import (
    BANNER_END,
    FAST_SETTINGS,
    REPO_ROOT,
    SENDER_DOMAIN,
    STREAM,
    LocalStack,
    clean_environment,
    read_mail,
    text_of,
    wait_for,
)

pytestmark = pytest.mark.integration

DELIVERY_WITHIN_S = 2.0


def unique(prefix: str) -> str:
    return f"{prefix}+{uuid.uuid4().hex[:10]}@example.com"


def key() -> str:
    return f"e2e-{uuid.uuid4()}"


# --------------------------------------------------------------------------- settings


def test_a_misspelt_setting_stops_the_stack_before_anything_starts(tmp_path: Path) -> None:
    # Given `make local` with stub mode asked for under a misspelt name
    environ = {
        **clean_environment(),
        "LOCAL_DATA_DIR": str(tmp_path),
        "MAIL_SMTP_MDOE": "stub",
        "LOCAL_API_PROT": "3999",
    }

    # When it starts
    finished = subprocess.run(
        [sys.executable, "-m", "scripts.local_stack"],
        cwd=REPO_ROOT,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )

    # Then it stops at once, naming each misspelt variable and the one meant
    assert finished.returncode == 2, finished.stdout + finished.stderr
    assert "MAIL_SMTP_MDOE is not a setting of this service (did you mean MAIL_SMTP_MODE?)" in (
        finished.stderr
    )
    assert "LOCAL_API_PROT is not a setting of the local stack (did you mean LOCAL_API_PORT?)" in (
        finished.stderr
    )
    # And nothing was started: no Redis data, no capture server, no banner
    assert list(tmp_path.iterdir()) == []
    assert "mail service running locally" not in finished.stdout


# --------------------------------------------------------------------------- the banner


def test_the_banner_says_where_everything_is(smtp_stack: LocalStack) -> None:
    log = smtp_stack.log()
    data_dir = smtp_stack.data_dir
    if smtp_stack.cluster:
        assert f"redis     {smtp_stack.redis_addr}  (MAIL_REDIS_ADDR, not managed here)" in log
    else:
        assert f"data {data_dir / 'redis'} (AOF, kept across runs)" in log
    assert f"127.0.0.1:{smtp_stack.smtp_port}  capture server; mail in {data_dir / 'mail'}/" in log
    assert "/123456789012/mail-local-AttemptQueue" in log
    assert f"--api {smtp_stack.api_url} deliveries list" in log
    assert "XADD mail:delivery_commands '*'" in log


def test_the_banner_lists_every_setting_that_is_not_its_default(smtp_stack: LocalStack) -> None:
    # Given a stack started with quick retries (FAST_SETTINGS), on the stack's own defaults
    banner = smtp_stack.log().split(BANNER_END)[0]

    # Then the banner shows the user's settings as given, and the ones the stack set
    settings = banner.split("  settings  ", 1)[1].split("\n\n", 1)[0]
    for name, value in FAST_SETTINGS.items():
        assert re.search(rf"^ +{name}={re.escape(value)}$", settings, re.MULTILINE), settings
    assert re.search(r"^ +MAIL_SMTP_MODE=smtp  \(set by make local\)$", settings, re.MULTILINE)
    assert re.search(r"^ +MAIL_SMTP_TLS=none  \(set by make local\)$", settings, re.MULTILINE)


def test_the_functions_print_one_readable_line_per_event(smtp_stack: LocalStack) -> None:
    # When a login code is accepted and delivered
    answer = smtp_stack.send_login_code(unique("ada"), key())
    assert answer.status == 200, answer
    delivery_id = answer.body["delivery_id"]
    smtp_stack.settled(delivery_id)

    # Then the intake and the worker each printed one line for it, naming themselves
    def line_of(label: str, message: str) -> str | None:
        time_of_day = r"\d\d:\d\d:\d\d\.\d{3}"
        pattern = rf"^{time_of_day} {label} +INFO  {message} .*delivery_id={delivery_id}\b.*$"
        found = re.findall(pattern, smtp_stack.log(), re.MULTILINE)
        return found[0] if found else None

    wait_for(lambda: line_of("attempt_worker", "attempt finished"), 5, "the worker's line")
    assert line_of("intake_api", "login code delivery accepted")
    worker = line_of("attempt_worker", "attempt finished")
    assert worker is not None
    assert " delivery_status=sent" in worker
    # And nothing after the banner is JSON: no log document, no EMF metrics
    printed = smtp_stack.log().split(BANNER_END, 1)[1]
    assert not [line for line in printed.splitlines() if line.startswith("{")]


def test_with_local_log_format_json_the_functions_print_json(stub_stack: LocalStack) -> None:
    # Given the stub stack, started with LOCAL_LOG_FORMAT=json
    # When a login code is accepted
    answer = stub_stack.send_login_code(unique("ada"), key())
    assert answer.status == 200, answer
    delivery_id = answer.body["delivery_id"]

    # Then its line is Powertools' JSON, naming the intake function
    def accepted() -> dict[str, Any] | None:
        for line in stub_stack.log().splitlines():
            if line.startswith("{") and delivery_id in line:
                document: dict[str, Any] = json.loads(line)
                if document.get("message") == "login code delivery accepted":
                    return document
        return None

    document = wait_for(accepted, 5, "the intake's JSON line")
    assert document["function_name"] == "IntakeApiFunction"
    assert document["level"] == "INFO"
    assert "LOCAL_LOG_FORMAT=json" in stub_stack.log().split(BANNER_END)[0]


def test_the_printed_curl_line_sends_a_login_code(smtp_stack: LocalStack) -> None:
    # Given the curl line the stack printed
    log = smtp_stack.log()
    line = re.search(
        rf"curl -i -X POST {smtp_stack.api_url}(\S+) \\\n"
        r".*-H 'Idempotency-Key: (\S+)' \\\n"
        r" *-d '(.+)'\n",
        log,
    )
    assert line, log[:3000]
    path, idempotency_key, body = line.groups()

    # When it is sent as printed
    answer = smtp_stack.request(
        "POST", path, json.loads(body), {"Idempotency-Key": idempotency_key}
    )

    # Then the login code is accepted and its mail captured
    assert answer.status == 200, answer
    assert answer.body["outcome"] == "sent"
    smtp_stack.wait_for_mail(answer.body["delivery_id"], DELIVERY_WITHIN_S)


# --------------------------------------------------------------------------- auth intake


def test_a_login_code_is_delivered_as_mail_within_two_seconds(smtp_stack: LocalStack) -> None:
    email = unique("ada")

    # When a login code is requested
    posted = time.monotonic()
    answer = smtp_stack.send_login_code(email, key(), code="731904")

    # Then it is accepted as sent, and the mail is captured within two seconds
    assert answer.status == 200, answer
    assert answer.body["outcome"] == "sent"
    delivery_id = answer.body["delivery_id"]
    path = smtp_stack.wait_for_mail(delivery_id, DELIVERY_WITHIN_S)
    assert time.monotonic() - posted <= DELIVERY_WITHIN_S

    # And it is the right mail: recipient, stable Message-ID, the code in the text
    message = read_mail(path)
    assert message["To"] == email
    assert message["Message-ID"] == f"<{delivery_id}@{SENDER_DOMAIN}>"
    assert message["X-Envelope-To"] == email
    assert "731904" in text_of(message)
    assert smtp_stack.settled(delivery_id)["status"] == "sent"


def test_a_login_code_in_stub_mode_is_suppressed_and_never_sent(stub_stack: LocalStack) -> None:
    # When a login code is requested from a stack started with MAIL_SMTP_MODE=stub
    answer = stub_stack.send_login_code(unique("ada"), key())

    # Then it is accepted as suppressed, settled so, and no mail exists
    assert answer.status == 200, answer
    assert answer.body["outcome"] == "suppressed"
    delivery = stub_stack.delivery(answer.body["delivery_id"])
    assert delivery["status"] == "suppressed"
    assert stub_stack.attempts(answer.body["delivery_id"]) == []
    time.sleep(0.5)
    assert not list(stub_stack.mail_dir.glob("*.eml"))
    assert "MAIL_SMTP_MODE=stub sends nothing" in stub_stack.log()


def test_a_locale_without_templates_falls_back_to_english(smtp_stack: LocalStack) -> None:
    # When a login code is requested in pt-BR (auth.login_code has no pt)
    answer = smtp_stack.send_login_code(unique("joao"), key(), code="550123", locale="pt-BR")
    assert answer.status == 200, answer
    delivery_id = answer.body["delivery_id"]

    # Then the mail is the English one
    message = read_mail(smtp_stack.wait_for_mail(delivery_id, DELIVERY_WITHIN_S))
    assert message["Subject"] == "Your login code"
    assert "Your login code is" in text_of(message)

    # And the operator API says which locale was used, and that it was a fallback
    delivery = smtp_stack.settled(delivery_id)
    assert delivery["locale"] == "pt-BR"
    assert delivery["resolved_locale"] == "en"
    assert delivery["locale_fallback_used"] is True


def test_the_same_request_twice_is_one_delivery_and_one_mail(smtp_stack: LocalStack) -> None:
    email, idempotency_key = unique("bob"), key()

    # When the same request is sent twice with the same key
    first = smtp_stack.send_login_code(email, idempotency_key)
    second = smtp_stack.send_login_code(email, idempotency_key)

    # Then both answers name the same delivery, the second as a replay
    assert first.status == second.status == 200
    assert second.body == first.body
    assert second.headers.get("Idempotent-Replayed") == "true"
    delivery_id = first.body["delivery_id"]
    smtp_stack.wait_for_mail(delivery_id, DELIVERY_WITHIN_S)
    assert smtp_stack.settled(delivery_id)["status"] == "sent"
    time.sleep(0.5)
    assert len(smtp_stack.mail_for(delivery_id)) == 1

    # And the same key with another body is a conflict
    other = smtp_stack.send_login_code(email, idempotency_key, code="000111")
    assert other.status == 409
    assert other.body["error"]["code"] == "idempotency_conflict"


# --------------------------------------------------------------------------- retries


def test_a_temporary_failure_is_retried_and_delivered_once(smtp_stack: LocalStack) -> None:
    # When the capture server answers 451 to the first try
    answer = smtp_stack.send_login_code(unique("tempfail-once"), key())
    delivery_id = answer.body["delivery_id"]

    # Then the retry (1 s later) is accepted: two attempts, one mail
    smtp_stack.wait_for_mail(delivery_id, 10)
    assert smtp_stack.settled(delivery_id)["status"] == "sent"
    attempts = smtp_stack.attempts(delivery_id)
    assert [(a["attempt_no"], a["outcome"]) for a in attempts] == [
        (1, "transient_failure"),
        (2, "accepted"),
    ]
    assert attempts[0]["summary"].startswith("451")
    assert len(smtp_stack.mail_for(delivery_id)) == 1


def test_retries_run_out_into_the_dead_letters(smtp_stack: LocalStack) -> None:
    # When every try is answered 451
    answer = smtp_stack.send_login_code(unique("tempfail-always"), key())
    delivery_id = answer.body["delivery_id"]

    # Then after the first attempt and three retries the delivery is dead-lettered
    delivery = smtp_stack.settled(delivery_id, timeout_s=20)
    assert delivery["status"] == "dead_letter"
    attempts = smtp_stack.attempts(delivery_id)
    assert [a["outcome"] for a in attempts] == ["transient_failure"] * 4

    # And operators see it among the dead letters, and no mail was captured
    page = smtp_stack.request("GET", "/api/v1/internal/dead-letters").body
    entry = next(item for item in page["items"] if item["delivery_id"] == delivery_id)
    assert entry["attempts"] == 4
    assert smtp_stack.mail_for(delivery_id) == []


def test_a_rejected_recipient_fails_without_a_retry(smtp_stack: LocalStack) -> None:
    # When the capture server answers 550 to the recipient
    answer = smtp_stack.send_login_code(unique("reject"), key())
    delivery_id = answer.body["delivery_id"]

    # Then the delivery fails after one attempt
    assert smtp_stack.settled(delivery_id)["status"] == "failed"
    attempts = smtp_stack.attempts(delivery_id)
    assert [a["outcome"] for a in attempts] == ["permanent_failure"]
    assert smtp_stack.mail_for(delivery_id) == []


# --------------------------------------------------------------------------- operators


def test_a_resend_is_delivered_as_a_second_mail_and_the_parent_is_unchanged(
    smtp_stack: LocalStack,
) -> None:
    # Given a sent login code
    answer = smtp_stack.send_login_code(unique("cleo"), key())
    parent_id = answer.body["delivery_id"]
    first_mail = read_mail(smtp_stack.wait_for_mail(parent_id, DELIVERY_WITHIN_S))
    parent = smtp_stack.settled(parent_id)

    # When an operator resends it
    resent = smtp_stack.request(
        "POST",
        f"/api/v1/internal/deliveries/{parent_id}/resend",
        headers={"Idempotency-Key": key()},
    )

    # Then a linked clone is made and delivered as its own mail, with its own Message-ID
    assert resent.status == 201, resent
    clone_id = resent.body["delivery_id"]
    assert clone_id != parent_id
    assert resent.body["parent_delivery_id"] == parent_id
    assert resent.body["source"] == "operator_resend"
    second_mail = read_mail(smtp_stack.wait_for_mail(clone_id, DELIVERY_WITHIN_S))
    assert second_mail["Message-ID"] == f"<{clone_id}@{SENDER_DOMAIN}>"
    assert second_mail["Message-ID"] != first_mail["Message-ID"]
    assert second_mail["To"] == first_mail["To"]
    assert smtp_stack.settled(clone_id)["status"] == "sent"

    # And the parent is exactly as it was, with its one mail
    assert smtp_stack.delivery(parent_id) == parent
    assert len(smtp_stack.mail_for(parent_id)) == 1


# --------------------------------------------------------------------------- the command stream


def test_a_stream_command_is_delivered(smtp_stack: LocalStack) -> None:
    delivery_id = f"e2e-{uuid.uuid4().hex[:12]}"
    email = unique("dora")

    # When the Notification service publishes a rendered command
    payload = {"to": [email], "subject": "Hello from the stream", "text_body": "Hi Dora"}
    with smtp_stack.redis() as client:
        client.xadd(
            STREAM,
            {
                "delivery_id": delivery_id,
                "source": "notification",
                "payload_mode": "rendered",
                "idempotency_key": delivery_id,
                "requested_at_ms": str(time.time_ns() // 1_000_000),
                "payload_json": json.dumps(payload),
            },
        )

    # Then it is delivered as that mail
    message = read_mail(smtp_stack.wait_for_mail(delivery_id, 5))
    assert message["Subject"] == "Hello from the stream"
    assert message["To"] == email
    assert text_of(message).strip() == "Hi Dora"
    assert smtp_stack.settled(delivery_id)["source"] == "notification"


def test_a_malformed_stream_command_is_shown_to_operators(smtp_stack: LocalStack) -> None:
    # When a command without most required fields is published
    with smtp_stack.redis() as client:
        entry_id = str(client.xadd(STREAM, {"delivery_id": "e2e-bad", "source": "notification"}))

    # Then operators find it among the malformed commands, with its failure code
    def listed() -> dict[str, object] | None:
        page = smtp_stack.request("GET", "/api/v1/internal/malformed-commands").body
        return next((i for i in page["items"] if i["stream_entry_id"] == entry_id), None)

    item = wait_for(listed, 5, f"malformed command {entry_id}")
    assert item["failure_code"] == "missing_field"
    one = smtp_stack.request("GET", f"/api/v1/internal/malformed-commands/{entry_id}")
    assert one.status == 200
    assert one.body["raw_fields"]["delivery_id"] == "e2e-bad"
