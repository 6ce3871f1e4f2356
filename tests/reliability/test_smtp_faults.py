"""SMTP faults, through the real pipeline to each delivery's end state (DESIGN §4.3).

A login code is accepted, claimed and sent by the attempt worker to a real
SMTP server on a local port that misbehaves on every attempt: it answers
421, 451 or 452, stalls past ``MAIL_SMTP_TIMEOUT``, hangs up in the middle
of DATA, or will not do TLS. A transient fault is retried on a short ladder
(``MAIL_RETRY_SCHEDULE=1s,2s``: three attempts) and then dead-lettered; a
permanent one (550, 554) fails the delivery at once. Whatever the server
says, the attempt summaries never repeat the login code.

A server that is slow without ever stalling (each of its answers inside
``MAIL_SMTP_TIMEOUT``) meets the whole send's deadline
(``MAIL_SMTP_SEND_TIMEOUT``), with the scheduler and two workers running
on threads in real time.

The provider's classification alone is proved by
tests/integration/test_smtp_provider.py; a fault that clears before the
ladder ends (sent, with the same Message-ID) by
tests/integration/test_delivery_over_smtp.py.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from mailcore.composition import (
    build_attempt_executor,
    build_auth_intake,
    build_provider,
    build_scheduler,
)
from mailcore.config import Settings
from mailcore.contracts.auth import LoginCodeDeliveryRequest
from mailcore.domain.model import Attempt, Delivery
from mailcore.store.keys import RedisKeys
from mailcore.store.queries import RedisQueries
from tests.support.counting_smtp import DripFeedSmtpServer, Pace
from tests.support.faults import QueueWorker, SchedulerObserver, eventually, message_id, running
from tests.support.network import free_port
from tests.support.pipeline import Pipeline
from tests.support.redis_server import RedisServer
from tests.support.secret_watch import LOGIN_CODE
from tests.support.smtp_pipeline import smtp_environment, smtp_pipeline
from tests.support.smtp_server import (
    Behaviour,
    DropDuringData,
    Reply,
    SmtpServerFactory,
    SmtpTestServer,
    Stall,
)

pytestmark = pytest.mark.integration

KEYS = RedisKeys()
LADDER = "1s,2s"  # two retries: three attempts in all
ATTEMPTS = 3
SMTP_TIMEOUT_S = 1


@dataclass(frozen=True)
class Fault:
    """What the server does on every attempt, and what each attempt must record."""

    behaviour: Behaviour | None  # None: the fault is in the session itself (TLS)
    attempt_status: str
    summary: str  # how the attempt's summary starts (redacted)
    client_tls: str = "none"


# The server's replies quote the login code: the summaries must not.
TRANSIENT_FAULTS = {
    "421 at MAIL": Fault(
        Reply(421, f"4.3.2 closing, try {LOGIN_CODE} later", at="mail"),
        "provider_rejected",
        "sender refused: 421 4.3.2 closing, try [redacted] later",
    ),
    "451 at DATA": Fault(
        Reply(451, f"4.7.1 greylisted message with {LOGIN_CODE}", at="data"),
        "provider_rejected",
        "451 4.7.1 greylisted message with [redacted]",
    ),
    "452 at RCPT": Fault(
        Reply(452, f"4.2.2 mailbox full ({LOGIN_CODE})", at="rcpt"),
        "provider_rejected",
        "all recipients refused: ada@example.com 452 4.2.2 mailbox full ([redacted])",
    ),
    "stall past the timeout": Fault(
        Stall(SMTP_TIMEOUT_S + 2, at="data"),
        "timed_out",
        f"timed out after {SMTP_TIMEOUT_S}s during DATA",
    ),
    "drop during DATA": Fault(DropDuringData(), "transport_failed", "connection lost during DATA"),
}

PERMANENT_FAULTS = {
    "550 at RCPT": Fault(
        Reply(550, f"5.1.1 no such user; code {LOGIN_CODE}", at="rcpt"),
        "provider_rejected",
        "all recipients refused: ada@example.com 550 5.1.1 no such user; code [redacted]",
    ),
    "550 at MAIL": Fault(
        Reply(550, "5.7.1 sender not allowed", at="mail"),
        "provider_rejected",
        "sender refused: 550 5.7.1 sender not allowed",
    ),
    "554 at DATA": Fault(
        Reply(554, f"5.7.1 message with {LOGIN_CODE} rejected as spam", at="data"),
        "provider_rejected",
        "554 5.7.1 message with [redacted] rejected as spam",
    ),
}

MakePipeline = Callable[..., Pipeline]


@pytest.fixture
def make_pipeline(
    redis_server: RedisServer, redis_client: redis.Redis, aws: Any, attempt_queue_url: str
) -> MakePipeline:
    def make(smtp_addr: str, tls: str = "none") -> Pipeline:
        environment = smtp_environment(
            redis_server.addr,
            attempt_queue_url,
            smtp_addr,
            MAIL_SMTP_TLS=tls,
            MAIL_SMTP_INSECURE_SKIP_VERIFY="true",  # certificate checks: test_security
            MAIL_SMTP_TIMEOUT=f"{SMTP_TIMEOUT_S}s",
            MAIL_RETRY_SCHEDULE=LADDER,
        )
        return smtp_pipeline(aws, environment)

    return make


def delivery_and_attempts(
    queries: RedisQueries, delivery_id: str
) -> tuple[Delivery, list[Attempt]]:
    delivery = queries.delivery(delivery_id)
    assert delivery is not None
    return delivery, queries.attempts(delivery_id, delivery.attempt_count)


def run_out_the_ladder(pipeline: Pipeline) -> None:
    """Wait out each retry delay, let the scheduler dispatch, and let a worker send."""
    for step in pipeline.settings.retry_schedule:
        pipeline.advance(int(step.total_seconds() * 1000))
        assert pipeline.tick().queued == 1
        pipeline.work()


def assert_free_of_the_code(*records: object) -> None:
    for record in records:
        assert LOGIN_CODE not in repr(record)


# --------------------------------------------------------------------------- transient


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS.values(), ids=TRANSIENT_FAULTS.keys())
def test_a_transient_fault_is_retried_on_the_ladder_then_dead_lettered(
    smtp_server: SmtpServerFactory,
    make_pipeline: MakePipeline,
    queries: RedisQueries,
    redis_client: redis.Redis,
    fault: Fault,
) -> None:
    # Given an SMTP server with the fault on every attempt
    server = smtp_server()
    assert fault.behaviour is not None
    server.script(*[fault.behaviour] * ATTEMPTS)
    pipeline = make_pipeline(server.addr)
    delivery_id = pipeline.accept_login_code(code=LOGIN_CODE)

    # When the first attempt meets it
    pipeline.work()

    # Then it is classified transient, and the retry is scheduled one rung later
    delivery, attempts = delivery_and_attempts(queries, delivery_id)
    assert delivery.status == "queued"
    first, retry = attempts
    assert (first.status, first.outcome) == (fault.attempt_status, "transient_failure")
    assert first.summary is not None
    assert first.summary.startswith(fault.summary)
    assert (retry.status, retry.scheduled_for_ms) == ("scheduled", pipeline.clock.now + 1000)
    assert redis_client.zscore(KEYS.attempt_schedule(), delivery_id) == pipeline.clock.now + 1000

    # When every retry meets it too
    run_out_the_ladder(pipeline)

    # Then the delivery is dead-lettered after the last rung, with nothing left to do
    assert_dead_lettered(queries, redis_client, delivery_id, fault)
    assert server.received == []
    assert server.pending == []  # every attempt reached the server


def assert_dead_lettered(
    queries: RedisQueries, redis_client: redis.Redis, delivery_id: str, fault: Fault
) -> None:
    delivery, attempts = delivery_and_attempts(queries, delivery_id)
    assert delivery.status == "dead_letter"
    assert [(a.attempt_no, a.status, a.outcome) for a in attempts] == [
        (number, fault.attempt_status, "transient_failure") for number in range(1, ATTEMPTS + 1)
    ]
    assert all(a.summary is not None and a.summary.startswith(fault.summary) for a in attempts)
    assert redis_client.zscore(KEYS.attempt_schedule(), delivery_id) is None
    [dead_letter] = queries.dead_letters(10, None).items
    assert (dead_letter.delivery_id, dead_letter.attempts) == (delivery_id, ATTEMPTS)
    assert dead_letter.last_outcome == "transient_failure"
    assert dead_letter.last_summary is not None
    assert dead_letter.last_summary.startswith(fault.summary)
    assert_free_of_the_code(*attempts, dead_letter.last_summary, delivery.last_summary)


class RefusingStarttls(socketserver.StreamRequestHandler):
    """A server that offers STARTTLS and then refuses it: ``454 4.7.0``."""

    def handle(self) -> None:
        self.wfile.write(b"220 notls.test ESMTP\r\n")
        for line in self.rfile:
            verb = line.strip().split(b" ")[0].upper()
            if verb in (b"EHLO", b"HELO"):
                self.wfile.write(b"250-notls.test\r\n250 STARTTLS\r\n")
            elif verb == b"STARTTLS":
                self.wfile.write(b"454 4.7.0 TLS not available due to temporary reason\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 2.0.0 bye\r\n")
                return
            else:
                self.wfile.write(b"503 5.5.1 STARTTLS first\r\n")


@pytest.fixture
def refusing_starttls() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", free_port()), RefusingStarttls)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


TLS_REFUSALS = {
    "STARTTLS not offered": Fault(
        None,
        "transport_failed",
        "server does not offer STARTTLS; not sending in plain text",
        client_tls="starttls",
    ),
    "STARTTLS refused (454)": Fault(
        None,
        "transport_failed",
        "STARTTLS refused: 454 4.7.0 TLS not available",
        client_tls="starttls",
    ),
    "no TLS where implicit TLS is expected": Fault(
        None, "transport_failed", "TLS failure during connect", client_tls="implicit"
    ),
}


@pytest.mark.parametrize("name", TLS_REFUSALS)
def test_a_server_that_will_not_do_tls_is_never_sent_plain_text_and_ends_dead_lettered(
    smtp_server: SmtpServerFactory,
    make_pipeline: MakePipeline,
    refusing_starttls: str,
    queries: RedisQueries,
    redis_client: redis.Redis,
    name: str,
) -> None:
    # Given a service told to use TLS, and a server that will not
    fault = TLS_REFUSALS[name]
    server: SmtpTestServer | None = None
    if name == "STARTTLS refused (454)":
        addr = refusing_starttls
    else:
        server = smtp_server(tls="starttls", offer_starttls=False)
        addr = server.addr
    pipeline = make_pipeline(addr, tls=fault.client_tls)
    delivery_id = pipeline.accept_login_code(code=LOGIN_CODE)

    # When every attempt of the ladder runs
    pipeline.work()
    run_out_the_ladder(pipeline)

    # Then each was a transport failure, nothing went out in plain text, and it is dead-lettered
    assert_dead_lettered(queries, redis_client, delivery_id, fault)
    if server is not None:
        assert server.received == []


# --------------------------------------------------------------------------- permanent


@pytest.mark.parametrize("fault", PERMANENT_FAULTS.values(), ids=PERMANENT_FAULTS.keys())
def test_a_permanent_fault_fails_the_delivery_without_a_retry(
    smtp_server: SmtpServerFactory,
    make_pipeline: MakePipeline,
    queries: RedisQueries,
    redis_client: redis.Redis,
    fault: Fault,
) -> None:
    # Given an SMTP server that refuses the message for good
    server = smtp_server()
    assert fault.behaviour is not None
    server.script(fault.behaviour)
    pipeline = make_pipeline(server.addr)
    delivery_id = pipeline.accept_login_code(code=LOGIN_CODE)

    # When the attempt worker sends it, and later the scheduler looks for due work
    pipeline.work()
    pipeline.advance(60 * 60 * 1000)
    dispatched = pipeline.tick()

    # Then the delivery failed after one attempt, nothing is scheduled, nothing dead-lettered
    delivery, attempts = delivery_and_attempts(queries, delivery_id)
    assert delivery.status == "failed"
    [attempt] = attempts
    assert (attempt.status, attempt.outcome) == (fault.attempt_status, "permanent_failure")
    assert attempt.summary is not None
    assert attempt.summary.startswith(fault.summary)
    assert dispatched.queued == 0
    assert redis_client.zscore(KEYS.attempt_schedule(), delivery_id) is None
    assert queries.dead_letters(10, None).items == []
    assert server.received == []
    assert_free_of_the_code(attempt, delivery.last_summary)


# ------------------------------------------------------------------ slow, never stalling


@pytest.mark.parametrize(
    "pace", ["answer", "byte"], ids=["each answer just inside the timeout", "answers trickled"]
)
def test_a_slow_server_cannot_keep_a_send_past_its_deadline_and_the_mail_arrives_once(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    aws: Any,
    attempt_queue_url: str,
    queries: RedisQueries,
    pace: Pace,
) -> None:
    # Given a server whose first connection gets every answer 0.9 s late (or every byte
    # of it, 0.9 s apart), each wait inside the 1 s timeout, and which is prompt afterwards;
    # a send deadline of 3 s; the scheduler and two workers running
    with DripFeedSmtpServer(0.9, pace=pace, slow_connections=1) as server:
        settings = Settings.from_environ(
            smtp_environment(
                redis_server.addr,
                attempt_queue_url,
                server.addr,
                MAIL_SMTP_TIMEOUT="1s",
                MAIL_SMTP_SEND_TIMEOUT="3s",
                MAIL_RETRY_SCHEDULE=LADDER,
                MAIL_SCHEDULER_POLL_INTERVAL="50ms",
                **redis_server.environ(),
            )
        )
        workers = [
            QueueWorker(
                f"worker-{n}",
                aws,
                attempt_queue_url,
                build_attempt_executor(settings, provider=build_provider(settings)),
            ).start()
            for n in (1, 2)
        ]
        try:
            with running("scheduler", build_scheduler(settings, SchedulerObserver(), aws).run):
                # When a login code is accepted (and dispatched at once)
                request = LoginCodeDeliveryRequest(
                    email="ada@example.com", code=LOGIN_CODE, locale="en"
                )
                intake = build_auth_intake(settings, sqs_client=aws)
                delivery_id = intake.accept_login_code(request, "slow-server").delivery_id

                def sent() -> bool:
                    delivery = queries.delivery(delivery_id)
                    return delivery is not None and delivery.status == "sent"

                eventually(sent, 20, "the login code to be sent")
        finally:
            reports = [report for worker in workers for report in worker.stop()]

    # Then the server has the message exactly once
    assert server.count(message_id(delivery_id)) == 1
    assert sum(server.completed.values()) == 1
    # And the first attempt ended at its send deadline, long before its claim (31 s)
    # would have let another worker in, and its worker recorded it; the retry sent it
    delivery, attempts = delivery_and_attempts(queries, delivery_id)
    first, second = attempts
    assert (first.status, second.status) == ("timed_out", "provider_accepted")
    assert first.summary is not None
    assert first.summary.startswith("send deadline of 3s reached during ")
    assert first.summary.endswith("the message was not handed over")
    assert first.started_at_ms is not None
    assert first.finished_at_ms is not None
    assert first.finished_at_ms - first.started_at_ms < 4_000
    assert [r.completion_refused for r in reports if r.outcome] == [None, None]
    assert delivery.attempt_count == 2
