"""The local stack's servers on real sockets: the SMTP capture server (smtplib as the
client) and the attempt queue on moto's server with the worker pump."""

from __future__ import annotations

import json
import smtplib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest

from scripts.local_stack.attempt_queue import LocalSqs, WorkerPump
from scripts.local_stack.http_api import LOGIN_CODE_RESOURCE, LocalApiServer, build_routes
from scripts.local_stack.lambda_runtime import LambdaFunction
from scripts.local_stack.sam_template import QueueSpec
from scripts.local_stack.smtp_capture import SmtpCapture
from tests.support.network import free_port

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- the capture server


@pytest.fixture
def capture(tmp_path: Path) -> Iterator[SmtpCapture]:
    server = SmtpCapture(tmp_path / "mail", free_port())
    server.start()
    yield server
    server.stop()


def mail(to: list[str], message_id: str, subject: str = "Hello") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "noreply@mail.localhost.test"
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message.set_content("Hi there\n")
    return message


def send(server: SmtpCapture, message: EmailMessage, bcc: tuple[str, ...] = ()) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=5) as client:
        recipients = [*message["To"].split(", "), *bcc]
        client.send_message(message, to_addrs=recipients)


def test_an_accepted_message_is_kept_whole_with_its_envelope(
    capture: SmtpCapture, capsys: pytest.CaptureFixture[str]
) -> None:
    # When a message is sent, with a Bcc recipient
    send(capture, mail(["ada@example.com"], "<m1@mail.localhost.test>", "Grüße"), ("b@x.org",))

    # Then one .eml holds it, named after its arrival and Message-ID, with the envelope
    files = sorted(capture.mail_dir.glob("*.eml"))
    assert [path.name.split("-", 1)[1] for path in files] == ["m1@mail.localhost.test.eml"]
    saved = BytesParser(policy=default_policy).parsebytes(files[0].read_bytes())
    assert saved["Return-Path"] == "<noreply@mail.localhost.test>"
    assert saved["X-Envelope-To"] == "ada@example.com, b@x.org"
    assert saved["Subject"] == "Grüße"
    assert saved["Message-ID"] == "<m1@mail.localhost.test>"

    # And one line says what came in
    lines = [line for line in capsys.readouterr().out.splitlines() if "<m1@" in line]
    assert len(lines) == 1
    assert "from=noreply@mail.localhost.test to=ada@example.com,b@x.org" in lines[0]
    assert 'subject="Grüße"' in lines[0]
    assert "-> 250 saved" in lines[0]


def test_tempfail_once_refuses_a_message_id_once_even_across_restarts(tmp_path: Path) -> None:
    first = SmtpCapture(tmp_path / "mail", free_port())
    first.start()
    try:
        # When a message to tempfail-once… is sent
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(first, mail(["tempfail-once@example.com"], "<m2@x>"))
        assert refused.value.smtp_code == 451
        assert "4.3.0" in str(refused.value.smtp_error)
    finally:
        first.stop()

    # Then a capture server started again over the same folder accepts its retry
    second = SmtpCapture(tmp_path / "mail", free_port())
    second.start()
    try:
        send(second, mail(["tempfail-once@example.com"], "<m2@x>"))
        # while another Message-ID to the same recipient is refused once more
        with pytest.raises(smtplib.SMTPDataError):
            send(second, mail(["tempfail-once@example.com"], "<m3@x>"))
    finally:
        second.stop()
    assert [p.name.split("-", 1)[1] for p in (tmp_path / "mail").glob("*.eml")] == ["m2@x.eml"]


def test_tempfail_always_and_reject(capture: SmtpCapture) -> None:
    for _ in range(2):
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(capture, mail(["tempfail-always@example.com"], "<m4@x>"))
        assert refused.value.smtp_code == 451

    # A rejected recipient is refused at RCPT; the others still get the message
    with pytest.raises(smtplib.SMTPRecipientsRefused) as rejected:
        send(capture, mail(["reject@example.com"], "<m5@x>"))
    assert rejected.value.recipients["reject@example.com"][0] == 550
    assert rejected.value.recipients["reject@example.com"][1].startswith(b"5.1.1")
    send(capture, mail(["reject@example.com", "ada@example.com"], "<m6@x>"))
    saved = sorted(capture.mail_dir.glob("*.eml"))
    assert [p.name.split("-", 1)[1] for p in saved] == ["m6@x.eml"]
    assert b"X-Envelope-To: ada@example.com\r\n" in saved[0].read_bytes()


# --------------------------------------------------------------------------- the attempt queue


class RecordingWorker:
    """A stand-in attempt worker: fails the records whose body says so."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.concurrent = 0
        self.most_concurrent = 0
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        with self._lock:
            self.concurrent += 1
            self.most_concurrent = max(self.most_concurrent, self.concurrent)
        try:
            assert context.get_remaining_time_in_millis() > 0
            self.events.append(event)
            time.sleep(0.02)
            failures = [
                {"itemIdentifier": record["messageId"]}
                for record in event["Records"]
                if json.loads(record["body"]).get("fail")
            ]
            return {"batchItemFailures": failures}
        finally:
            with self._lock:
                self.concurrent -= 1


@pytest.fixture
def sqs() -> Iterator[LocalSqs]:
    dead_letter = QueueSpec("DeadLetters", 30, 3600, None, None)
    local = LocalSqs(QueueSpec("Attempts", 1, 3600, 2, dead_letter), "us-east-1")
    local.start()
    yield local
    local.stop()


def test_the_pump_deletes_what_succeeded_and_lets_failures_come_back(sqs: LocalSqs) -> None:
    worker = RecordingWorker()
    client = sqs.client()
    for number in range(12):
        body = {"n": number, "fail": number == 3}
        client.send_message(QueueUrl=sqs.queue_url, MessageBody=json.dumps(body))
    pump = WorkerPump(
        client,
        sqs.queue_url,
        sqs.queue_arn,
        LambdaFunction("AttemptWorkerFunction", worker, timeout_s=120),
        batch_size=10,
        region="us-east-1",
    )
    pump.start()
    try:
        # When the failing record has been received as often as the redrive allows
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            received = [
                record
                for event in worker.events
                for record in event["Records"]
                if json.loads(record["body"])["n"] == 3
            ]
            if len(received) >= 2:
                break
            time.sleep(0.05)
    finally:
        pump.finish()

    # Then every record was handed over in batches of at most ten, one batch at a time
    assert all(len(event["Records"]) <= 10 for event in worker.events)
    assert worker.most_concurrent == 1
    numbers = [json.loads(r["body"])["n"] for e in worker.events for r in e["Records"]]
    assert sorted(set(numbers)) == list(range(12))
    # the failed one came back after the visibility timeout, its receive count up
    assert [r["attributes"]["ApproximateReceiveCount"] for r in received[:2]] == ["1", "2"]
    assert received[0]["eventSourceARN"] == sqs.queue_arn
    # the others were deleted: they came once
    assert all(numbers.count(n) == 1 for n in range(12) if n != 3)
    # and after maxReceiveCount the failing one is in the dead-letter queue
    assert sqs.dead_letter_url is not None
    time.sleep(1.2)
    client.receive_message(QueueUrl=sqs.queue_url, WaitTimeSeconds=0)
    moved = client.receive_message(QueueUrl=sqs.dead_letter_url, WaitTimeSeconds=1)
    assert [json.loads(m["Body"])["n"] for m in moved.get("Messages", [])] == [3]


# --------------------------------------------------------------------------- the API's stop


def test_stopping_the_api_lets_a_request_in_flight_finish() -> None:
    started = threading.Event()

    def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
        started.set()
        time.sleep(0.5)
        return {"statusCode": 200, "body": '{"done":true}'}

    server = LocalApiServer(("127.0.0.1", 0), build_routes(slow, None))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    port = server.server_address[1]
    answers: list[int] = []

    def call() -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{LOGIN_CODE_RESOURCE}", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            answers.append(answer.status)

    client = threading.Thread(target=call)
    client.start()
    assert started.wait(5)

    # When the server stops accepting while the request runs
    finished = server.stop_accepting(timeout_s=5)
    thread.join()
    client.join()

    # Then the request was answered, and nothing new is taken
    assert finished
    assert answers == [200]
    server.server_close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
