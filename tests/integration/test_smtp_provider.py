"""The SMTP provider against a real SMTP server (aiosmtpd) over a real socket."""

from __future__ import annotations

import base64
import smtplib
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from mailcore.config import Settings, SmtpTls
from mailcore.domain.model import Attachment, Delivery, Envelope, PayloadMode, Source
from mailcore.domain.states import AttemptStatus, DeliveryStatus, ProviderOutcome
from mailcore.mail import Sender, build_message, envelope_recipients
from mailcore.ports import MailProvider, SendResult
from mailcore.providers import SmtpProvider
from tests.support import smtp_server as smtp_support
from tests.support.counting_smtp import DripFeedSmtpServer, Pace
from tests.support.smtp_server import (
    DropDuringData,
    Reply,
    SmtpServerFactory,
    SmtpTestServer,
    Stage,
    Stall,
    TlsMode,
    free_port,
)

pytestmark = pytest.mark.integration

# The shared fixture, registered for this module (tests/conftest.py may register it too).
smtp_server = smtp_support.smtp_server

SENDER = Sender("no-reply@mail.example.com", "Example Mail")
BOUNCES = "bounces@mail.example.com"
USER = "mailer"
PASSWORD = "s3cret-Passw0rd!"
LOGIN_CODE = "482913"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))

TRANSIENT_REJECTED = (ProviderOutcome.TRANSIENT_FAILURE, AttemptStatus.PROVIDER_REJECTED)
PERMANENT_REJECTED = (ProviderOutcome.PERMANENT_FAILURE, AttemptStatus.PROVIDER_REJECTED)
TRANSPORT_FAILED = (ProviderOutcome.TRANSIENT_FAILURE, AttemptStatus.TRANSPORT_FAILED)
TIMED_OUT = (ProviderOutcome.TRANSIENT_FAILURE, AttemptStatus.TIMED_OUT)
ACCEPTED = (ProviderOutcome.ACCEPTED, AttemptStatus.PROVIDER_ACCEPTED)


def make_delivery(delivery_id: str = "dlv_01JD8X3Q4W5E6R7T8Y9U0I1O2P") -> Delivery:
    return Delivery(
        delivery_id=delivery_id,
        source=Source.NOTIFICATION,
        status=DeliveryStatus.SENDING,
        payload_mode=PayloadMode.RENDERED,
        envelope=Envelope(
            to=("alice@example.com",),
            cc=("carol@example.com",),
            bcc=("hidden@example.com",),
            reply_to=("support@example.com",),
        ),
        idempotency_key="key-1",
        created_at_ms=1_795_338_900_000,
        updated_at_ms=1_795_338_900_000,
        attachments=(
            Attachment(
                "logo.png",
                "image/png",
                base64.b64encode(PNG).decode(),
                inline=True,
                content_id="logo",
            ),
        ),
    )


def make_message(delivery: Delivery | None = None) -> EmailMessage:
    return build_message(
        delivery or make_delivery(),
        "Grüße — your code",
        f"Your code is {LOGIN_CODE}.\n",
        f'<p>Your code is <b>{LOGIN_CODE}</b></p><img src="cid:logo">',
        SENDER,
        now=datetime(2026, 11, 22, 9, 15, tzinfo=UTC),
    )


_opened: list[SmtpProvider] = []


@pytest.fixture(autouse=True)
def _close_providers() -> Iterator[None]:
    """Close every provider a test made, so no connection outlives its test."""
    yield
    while _opened:
        _opened.pop().close()


def provider_for(
    server: SmtpTestServer,
    *,
    tls: SmtpTls | None = None,
    username: str | None = None,
    password_source: Callable[[], str | None] = lambda: None,
    timeout: float = 2.0,
    send_timeout: float = 10.0,
    verify: bool = False,
) -> SmtpProvider:
    provider = SmtpProvider(
        host=server.host,
        port=server.port,
        tls=tls if tls is not None else SmtpTls(server.tls),
        username=username,
        password_source=password_source,
        timeout=timedelta(seconds=timeout),
        send_timeout=timedelta(seconds=send_timeout),
        verify_certificates=verify,
        local_hostname="worker.test",
    )
    _opened.append(provider)
    return provider


def send(
    provider: MailProvider,
    delivery: Delivery | None = None,
    *,
    recipients: list[str] | None = None,
    secrets: tuple[str, ...] = (LOGIN_CODE,),
) -> SendResult:
    delivery = delivery or make_delivery()
    return provider.send(
        make_message(delivery),
        envelope_from=BOUNCES,
        recipients=recipients if recipients is not None else envelope_recipients(delivery),
        secrets=secrets,
    )


def classified(result: SendResult) -> tuple[ProviderOutcome, AttemptStatus]:
    return result.outcome, result.attempt_status


class TestAccepted:
    def test_the_message_arrives_with_the_right_envelope_headers_and_parts(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server()
        provider = provider_for(server)
        result = send(provider)
        provider.close()

        assert classified(result) == ACCEPTED
        assert result.summary.startswith("250 2.0.0 Ok: queued as ")
        assert result.duration_ms >= 0
        (received,) = server.received
        assert received.mail_from == BOUNCES
        assert received.rcpt_tos == [
            "alice@example.com",
            "carol@example.com",
            "hidden@example.com",
        ]
        message = received.message
        assert b"hidden@example.com" not in received.data
        assert "Bcc" not in message
        assert message["From"].addresses[0].display_name == "Example Mail"
        assert str(message["To"]) == "alice@example.com"
        assert str(message["Cc"]) == "carol@example.com"
        assert str(message["Reply-To"]) == "support@example.com"
        assert message["Subject"] == "Grüße — your code"
        assert message["Message-ID"] == "<dlv_01JD8X3Q4W5E6R7T8Y9U0I1O2P@mail.example.com>"
        plain = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        assert plain is not None
        assert html is not None
        assert LOGIN_CODE in plain.get_content()
        assert 'src="cid:logo"' in html.get_content()
        (image,) = (p for p in message.walk() if p["Content-ID"] == "<logo>")
        assert image.get_payload(decode=True) == PNG
        assert image.get_content_disposition() == "inline"

    def test_a_bcc_header_on_the_message_is_never_transmitted(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server()
        message = make_message()
        message["Bcc"] = "hidden@example.com"
        provider = provider_for(server)
        result = provider.send(
            message, envelope_from=BOUNCES, recipients=["alice@example.com", "hidden@example.com"]
        )
        provider.close()

        assert classified(result) == ACCEPTED
        assert "Bcc" in message  # the caller's message is left alone
        (received,) = server.received
        assert b"Bcc" not in received.data
        assert received.rcpt_tos == ["alice@example.com", "hidden@example.com"]

    def test_some_recipients_refused_still_counts_as_sent_and_names_them(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server()
        server.script(Reply(550, "5.1.1 no such user", at="rcpt", recipient="carol@example.com"))
        provider = provider_for(server)
        result = send(provider)
        provider.close()

        assert classified(result) == ACCEPTED
        assert "refused 1 of 3 recipients: carol@example.com 550 5.1.1 no such user" in (
            result.summary
        )
        (received,) = server.received
        assert received.rcpt_tos == ["alice@example.com", "hidden@example.com"]


class TestRejected:
    @pytest.mark.parametrize("code", [421, 451, 452])
    @pytest.mark.parametrize("at", ["rcpt", "data"])
    def test_4xx_is_transient(self, smtp_server: SmtpServerFactory, code: int, at: Stage) -> None:
        server = smtp_server()
        server.script(Reply(code, "4.7.1 try later", at=at))
        result = send(provider_for(server))

        assert classified(result) == TRANSIENT_REJECTED
        assert f"{code} 4.7.1 try later" in result.summary
        assert server.received == []

    @pytest.mark.parametrize("code", [550, 554])
    @pytest.mark.parametrize("at", ["mail", "rcpt", "data"])
    def test_5xx_is_permanent(self, smtp_server: SmtpServerFactory, code: int, at: Stage) -> None:
        server = smtp_server()
        server.script(Reply(code, "5.7.1 rejected by policy", at=at))
        result = send(provider_for(server))

        assert classified(result) == PERMANENT_REJECTED
        assert f"{code} 5.7.1 rejected by policy" in result.summary
        assert server.received == []

    def test_all_recipients_refused_with_any_5xx_is_permanent(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server()
        server.script(Reply(550, "5.1.1 unknown", at="rcpt", recipient="carol@example.com"))
        provider = provider_for(server)
        result = send(provider, recipients=["carol@example.com"])
        assert classified(result) == PERMANENT_REJECTED
        assert result.summary == "all recipients refused: carol@example.com 550 5.1.1 unknown"

    def test_all_recipients_refused_with_only_4xx_is_transient(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server()
        server.script(Reply(450, "4.2.1 mailbox busy", at="rcpt"))
        result = send(provider_for(server))
        assert classified(result) == TRANSIENT_REJECTED
        assert result.summary.startswith("all recipients refused: alice@example.com 450")

    def test_a_failure_drops_the_connection_and_the_next_send_starts_fresh(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server()
        server.script(Reply(451, "4.3.0 hiccup"))
        provider = provider_for(server)

        assert classified(send(provider)) == TRANSIENT_REJECTED
        assert classified(send(provider)) == ACCEPTED
        provider.close()
        assert server.connections == 2
        assert len(server.received) == 1


class TestTransport:
    def test_stalling_past_the_timeout_is_timed_out(self, smtp_server: SmtpServerFactory) -> None:
        server = smtp_server()
        server.script(Stall(5))
        result = send(provider_for(server, timeout=1.0))

        assert classified(result) == TIMED_OUT
        assert result.summary == "timed out after 1s during DATA"
        assert 900 <= result.duration_ms < 4000

    def test_stalling_at_mail_names_the_stage(self, smtp_server: SmtpServerFactory) -> None:
        server = smtp_server()
        server.script(Stall(5, at="mail"))
        result = send(provider_for(server, timeout=1.0))
        assert classified(result) == TIMED_OUT
        assert result.summary == "timed out after 1s during MAIL FROM"

    def test_a_drop_during_data_is_a_transport_failure_and_not_retried(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server()
        server.script(DropDuringData())
        result = send(provider_for(server))

        assert classified(result) == TRANSPORT_FAILED
        assert "connection lost during DATA" in result.summary
        assert server.received == []
        assert server.connections == 1  # the server may have taken it: no second try

    def test_connection_refused(self) -> None:
        provider = SmtpProvider(
            host="127.0.0.1",
            port=free_port(),  # nothing listens there
            tls=SmtpTls.NONE,
            username=None,
            password_source=lambda: None,
            timeout=timedelta(seconds=1),
            send_timeout=timedelta(seconds=5),
            verify_certificates=True,
        )
        result = send(provider)
        assert classified(result) == TRANSPORT_FAILED
        assert "connection refused" in result.summary


class TestTls:
    def test_starttls_without_verification_is_accepted(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server(tls="starttls")
        provider = provider_for(server, verify=False)
        result = send(provider)
        provider.close()

        assert classified(result) == ACCEPTED
        (received,) = server.received
        assert received.tls

    def test_starttls_with_verification_refuses_a_self_signed_certificate(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server(tls="starttls")
        result = send(provider_for(server, verify=True))

        assert classified(result) == TRANSPORT_FAILED
        assert "certificate" in result.summary
        assert server.received == []

    def test_starttls_not_offered_never_falls_back_to_plain_text(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server(tls="starttls", offer_starttls=False)
        result = send(provider_for(server, tls=SmtpTls.STARTTLS))

        assert classified(result) == TRANSPORT_FAILED
        assert "STARTTLS" in result.summary
        assert server.received == []

    def test_implicit_tls_is_accepted(self, smtp_server: SmtpServerFactory) -> None:
        server = smtp_server(tls="implicit")
        provider = provider_for(server, verify=False)
        result = send(provider)
        provider.close()

        assert classified(result) == ACCEPTED
        (received,) = server.received
        assert received.tls

    def test_implicit_tls_with_verification_refuses_a_self_signed_certificate(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server(tls="implicit")
        result = send(provider_for(server, verify=True))
        assert classified(result) == TRANSPORT_FAILED
        assert "certificate" in result.summary


class TestAuth:
    @pytest.mark.parametrize("tls", ["starttls", "implicit", "none"])
    def test_the_right_password_is_accepted_and_never_shown(
        self, smtp_server: SmtpServerFactory, tls: TlsMode
    ) -> None:
        server = smtp_server(tls=tls, require_auth=(USER, PASSWORD))
        provider = provider_for(server, username=USER, password_source=lambda: PASSWORD)
        result = send(provider)
        provider.close()

        assert classified(result) == ACCEPTED
        assert PASSWORD not in result.summary
        assert server.received[0].login == USER
        assert PASSWORD not in repr(provider)

    def test_a_wrong_password_is_transient_and_says_authentication(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server(tls="starttls", require_auth=(USER, PASSWORD))
        wrong = "not-the-Passw0rd"
        result = send(provider_for(server, username=USER, password_source=lambda: wrong))

        assert classified(result) == TRANSIENT_REJECTED
        assert "authentication failed" in result.summary
        assert "535" in result.summary
        assert wrong not in result.summary
        assert server.received == []

    def test_no_login_where_auth_is_required_is_transient(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server(tls="starttls", require_auth=(USER, PASSWORD))
        result = send(provider_for(server))
        assert classified(result) == TRANSIENT_REJECTED
        assert result.summary == "authentication required: 530 5.7.0 Authentication required"

    def test_the_password_is_read_lazily_once_per_connection(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server(tls="starttls", require_auth=(USER, PASSWORD))
        reads: list[str] = []

        def source() -> str:
            reads.append("read")
            return PASSWORD

        provider = provider_for(server, username=USER, password_source=source)
        assert reads == []
        for _ in range(3):
            assert classified(send(provider)) == ACCEPTED
        provider.close()
        assert reads == ["read"]

    def test_no_username_never_reads_the_password(self, smtp_server: SmtpServerFactory) -> None:
        server = smtp_server()

        def source() -> str:
            raise AssertionError("no AUTH, no password lookup")

        assert classified(send(provider_for(server, password_source=source))) == ACCEPTED

    def test_an_unreadable_password_is_a_transient_transport_failure(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server(tls="starttls", require_auth=(USER, PASSWORD))

        def source() -> str:
            raise RuntimeError(f"secrets manager said no, leaking {PASSWORD}")

        result = send(provider_for(server, username=USER, password_source=source))
        assert classified(result) == TRANSPORT_FAILED
        assert result.summary == "could not read the SMTP password (RuntimeError)"

    def test_a_password_echoed_by_the_server_is_redacted(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server(tls="starttls", require_auth=(USER, PASSWORD))
        server.script(Reply(250, f"2.0.0 queued for {USER}:{PASSWORD}"))
        provider = provider_for(server, username=USER, password_source=lambda: PASSWORD)
        result = send(provider, secrets=())
        provider.close()

        assert classified(result) == ACCEPTED
        assert result.summary == f"250 2.0.0 queued for {USER}:[redacted]"


class TestConnectionReuse:
    def test_three_sends_then_close_use_one_connection(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server(tls="starttls")
        provider = provider_for(server)
        results = [send(provider, make_delivery(f"dlv_{n}")) for n in range(3)]
        provider.close()

        assert [classified(r) for r in results] == [ACCEPTED] * 3
        assert server.connections == 1
        assert [r.message["Message-ID"] for r in server.received] == [
            "<dlv_0@mail.example.com>",
            "<dlv_1@mail.example.com>",
            "<dlv_2@mail.example.com>",
        ]

    def test_close_twice_and_send_after_close(self, smtp_server: SmtpServerFactory) -> None:
        server = smtp_server()
        provider = provider_for(server)
        provider.close()  # nothing open yet
        assert classified(send(provider)) == ACCEPTED
        provider.close()
        provider.close()
        assert classified(send(provider)) == ACCEPTED
        provider.close()
        assert server.connections == 2

    def test_an_idle_connection_closed_by_the_server_is_replaced(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server(tls="starttls")
        provider = provider_for(server)
        assert classified(send(provider)) == ACCEPTED

        server.drop_connections()
        result = send(provider)
        provider.close()

        assert classified(result) == ACCEPTED
        assert server.connections == 2
        assert len(server.received) == 2

    def test_an_idle_timeout_of_the_server_is_survived(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server(idle_timeout=0.2)
        provider = provider_for(server)
        assert classified(send(provider)) == ACCEPTED

        time.sleep(0.5)
        assert classified(send(provider)) == ACCEPTED
        provider.close()
        assert server.connections == 2

    def test_a_disconnect_at_mail_on_a_kept_connection_is_retried_once(
        self, smtp_server: SmtpServerFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        server = smtp_server()
        provider = provider_for(server)
        assert classified(send(provider)) == ACCEPTED
        server.drop_connections()
        # The liveness check is fooled: the dead connection only shows at MAIL FROM.
        monkeypatch.setattr(smtplib.SMTP, "rset", lambda self: (250, b"2.0.0 Ok"))

        result = send(provider)
        provider.close()

        assert classified(result) == ACCEPTED
        assert server.connections == 2
        assert len(server.received) == 2

    def test_a_cleanly_finished_kept_connection_is_reused_without_rset(
        self, smtp_server: SmtpServerFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # After the answer to DATA the server's state is reset already: no RSET round trip.
        server = smtp_server(tls="starttls")
        resets: list[str] = []
        real_rset = smtplib.SMTP.rset

        def counting_rset(self: smtplib.SMTP) -> tuple[int, bytes]:
            resets.append("RSET")
            return real_rset(self)

        monkeypatch.setattr(smtplib.SMTP, "rset", counting_rset)
        provider = provider_for(server)
        results = [send(provider, make_delivery(f"dlv_{n}")) for n in range(4)]
        provider.close()

        assert [classified(r) for r in results] == [ACCEPTED] * 4
        assert server.connections == 1
        assert resets == []

    def test_a_421_at_mail_on_a_kept_connection_is_retried_on_a_fresh_one(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        # A server closing the session (too many messages, idle too long) says 421:
        # nothing of the message was handed over, so a fresh connection takes it.
        server = smtp_server()
        provider = provider_for(server)
        assert classified(send(provider)) == ACCEPTED
        server.script(Reply(421, "4.7.0 too many messages on this connection", at="mail"))

        result = send(provider)
        provider.close()

        assert classified(result) == ACCEPTED
        assert server.connections == 2
        assert len(server.received) == 2

    def test_a_421_at_mail_on_a_fresh_connection_is_not_retried(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server()
        server.script(Reply(421, "4.3.2 closing", at="mail"))
        result = send(provider_for(server))

        assert classified(result) == TRANSIENT_REJECTED
        assert result.summary == "sender refused: 421 4.3.2 closing"
        assert server.connections == 1

    @pytest.mark.parametrize("keep_open", [False, True], ids=["then-hangs-up", "keeps-open"])
    def test_a_421_sent_while_idle_is_noticed_and_the_send_goes_out_fresh(
        self, keep_open: bool
    ) -> None:
        # A server that announces an idle timeout (421) after the answer to DATA,
        # as postfix does: the kept connection is not trusted again.
        with _IdleTimeoutServer(keep_open=keep_open) as server:
            provider = SmtpProvider(
                host="127.0.0.1",
                port=server.port,
                tls=SmtpTls.NONE,
                username=None,
                password_source=lambda: None,
                timeout=timedelta(seconds=2),
                send_timeout=timedelta(seconds=10),
                verify_certificates=False,
            )
            _opened.append(provider)
            assert classified(send(provider)) == ACCEPTED
            time.sleep(0.3)  # the 421 (and the hang-up) arrive while idle
            result = send(provider)
            provider.close()

            assert classified(result) == ACCEPTED
            assert server.connections == 2
            assert server.messages == 2
            # Noticed before a transaction began on the announced-dead connection.
            assert b"MAIL" not in server.after_421


class _IdleTimeoutServer:
    """A bare SMTP server that says ``421`` soon after each accepted message."""

    def __init__(self, *, keep_open: bool) -> None:
        self.keep_open = keep_open
        self.connections = 0
        self.messages = 0
        self.after_421: list[bytes] = []  # the commands a client sent after the 421
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                owner.connections += 1
                said_421 = False
                self.wfile.write(b"220 idle.test ESMTP\r\n")
                for line in self.rfile:
                    verb = line.strip().split(b" ")[0].upper()
                    if said_421:
                        owner.after_421.append(verb)
                    if verb in (b"EHLO", b"HELO"):
                        self.wfile.write(b"250 idle.test\r\n")
                    elif verb == b"DATA":
                        self.wfile.write(b"354 go ahead\r\n")
                        for data_line in self.rfile:
                            if data_line == b".\r\n":
                                break
                        owner.messages += 1
                        self.wfile.write(b"250 2.0.0 queued\r\n")
                        time.sleep(0.1)
                        self.wfile.write(b"421 4.4.2 idle.test Error: timeout exceeded\r\n")
                        said_421 = True
                        if not owner.keep_open:
                            return
                    elif verb == b"QUIT":
                        self.wfile.write(b"221 2.0.0 bye\r\n")
                        return
                    elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                        self.wfile.write(b"250 2.0.0 ok\r\n")
                    else:
                        self.wfile.write(b"502 5.5.2 unknown command\r\n")

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])

    def __enter__(self) -> _IdleTimeoutServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def provider_at(
    server: DripFeedSmtpServer,
    *,
    timeout: float,
    send_timeout: float,
    username: str | None = None,
    password_source: Callable[[], str | None] = lambda: None,
) -> SmtpProvider:
    provider = SmtpProvider(
        host=server.host,
        port=server.port,
        tls=SmtpTls.NONE,
        username=username,
        password_source=password_source,
        timeout=timedelta(seconds=timeout),
        send_timeout=timedelta(seconds=send_timeout),
        verify_certificates=False,
        local_hostname="worker.test",
    )
    _opened.append(provider)
    return provider


def timed_send(provider: SmtpProvider) -> tuple[SendResult, float]:
    started = time.monotonic()
    result = send(provider)  # three recipients: to, cc, bcc
    return result, time.monotonic() - started


def drip_server(pause_s: float, pace: Pace = "answer", slow: int = 1) -> DripFeedSmtpServer:
    server = DripFeedSmtpServer(pause_s, pace=pace, slow_connections=slow).__enter__()
    _drip_servers.append(server)
    return server


_drip_servers: list[DripFeedSmtpServer] = []


@pytest.fixture(autouse=True)
def _stop_drip_servers() -> Iterator[None]:
    yield
    while _drip_servers:
        _drip_servers.pop().__exit__()


NOT_HANDED_OVER = "the message was not handed over"


class TestSendDeadline:
    """One wall-clock deadline for the whole send (MAIL_SMTP_SEND_TIMEOUT), however slow
    the server answers, each answer inside MAIL_SMTP_TIMEOUT."""

    def test_a_server_answering_each_command_just_inside_the_timeout_is_cut_at_the_deadline(
        self,
    ) -> None:
        # Given a server that answers every command 0.4 s late, inside the 0.5 s timeout:
        # greeting 0.4 s, EHLO 0.8, MAIL 1.2, the three RCPTs 1.6, 2.0, 2.4, ...
        server = drip_server(0.4)
        provider = provider_at(server, timeout=0.5, send_timeout=1.5)

        # When a message goes out with a send deadline of 1.5 s
        result, elapsed = timed_send(provider)

        # Then the send ends at the deadline, timed out, before the server had the message
        assert classified(result) == TIMED_OUT
        assert result.summary == f"send deadline of 1.5s reached during RCPT TO; {NOT_HANDED_OVER}"
        assert 1.5 <= elapsed < 1.9
        assert (server.data_started, server.completed) == (0, {})

    def test_answers_trickled_a_byte_at_a_time_cannot_stretch_a_send(self) -> None:
        # Given a server writing every answer a byte every 0.2 s: no read waits
        # anywhere near the 1 s timeout, and the greeting alone takes 4 s
        server = drip_server(0.2, pace="byte")
        provider = provider_at(server, timeout=1.0, send_timeout=2.0)

        # When a message goes out with a send deadline of 2 s
        result, elapsed = timed_send(provider)

        # Then the send ends at the deadline
        assert classified(result) == TIMED_OUT
        assert result.summary == f"send deadline of 2s reached during connect; {NOT_HANDED_OVER}"
        assert 2.0 <= elapsed < 2.4
        assert server.completed == {}

    def test_the_message_is_handed_over_only_while_its_answer_still_fits(self) -> None:
        # Given a server answering every command 0.25 s late: its 354 to DATA comes
        # after 1.75 s, when less than the 1 s timeout is left of a 2.5 s deadline
        server = drip_server(0.25)
        provider = provider_at(server, timeout=1.0, send_timeout=2.5)

        # When a message goes out
        result, elapsed = timed_send(provider)

        # Then the data is never sent: the server saw DATA and no message, so a retry
        # cannot make a second copy
        assert classified(result) == TIMED_OUT
        assert result.summary == f"send deadline of 2.5s reached during DATA; {NOT_HANDED_OVER}"
        assert elapsed < 2.5
        assert (server.data_started, server.completed) == (1, {})

    def test_a_message_whose_answer_fits_is_handed_over_and_accepted(self) -> None:
        # Given the same server, and a deadline that leaves the whole timeout for the answer
        server = drip_server(0.25)
        provider = provider_at(server, timeout=1.0, send_timeout=3.0)

        # When a message goes out
        result, _ = timed_send(provider)

        # Then it is accepted, once
        assert classified(result) == ACCEPTED
        assert server.completed == {"<dlv_01JD8X3Q4W5E6R7T8Y9U0I1O2P@mail.example.com>": 1}

    def test_each_send_on_a_kept_connection_has_a_deadline_of_its_own(self) -> None:
        # Given a prompt server and a kept connection whose first send's deadline has passed
        server = drip_server(0.4, slow=0)
        provider = provider_at(server, timeout=0.5, send_timeout=1.5)
        assert classified(send(provider)) == ACCEPTED
        time.sleep(1.6)
        assert classified(send(provider)) == ACCEPTED  # a new deadline, not the first one

        # When the server turns slow and a third message goes out on the same connection
        server.slow_down()
        result, elapsed = timed_send(provider)

        # Then that send is cut at its own deadline: MAIL 0.4 s, RCPTs 0.8, 1.2, 1.6
        assert classified(result) == TIMED_OUT
        assert result.summary == f"send deadline of 1.5s reached during RCPT TO; {NOT_HANDED_OVER}"
        assert 1.5 <= elapsed < 1.9
        assert server.connections == 1
        assert sum(server.completed.values()) == 2

    def test_reading_the_password_counts_against_the_send_deadline(self) -> None:
        # Given a password source that takes 3 s (a Secrets Manager slow to answer),
        # longer than one wait and than the whole send may take
        server = drip_server(0.0, slow=0)

        def slow_password() -> str:
            time.sleep(3)
            return PASSWORD

        provider = provider_at(
            server, timeout=1.0, send_timeout=1.5, username=USER, password_source=slow_password
        )

        # When a message goes out
        result, elapsed = timed_send(provider)

        # Then the read is given up after one wait, and the send ends there, in AUTH
        assert classified(result) == TIMED_OUT
        assert result.summary == "timed out after 1s during AUTH"
        assert elapsed < 1.4


class TestRedaction:
    def test_a_secret_echoed_in_a_reply_is_redacted(self, smtp_server: SmtpServerFactory) -> None:
        server = smtp_server()
        server.script(Reply(554, f"5.7.1 message with code {LOGIN_CODE} looks like spam"))
        result = send(provider_for(server), secrets=(LOGIN_CODE,))

        assert classified(result) == PERMANENT_REJECTED
        assert LOGIN_CODE not in result.summary
        assert result.summary == "554 5.7.1 message with code [redacted] looks like spam"

    def test_summaries_are_one_line_of_at_most_300_characters(
        self, smtp_server: SmtpServerFactory
    ) -> None:
        server = smtp_server()
        server.script(Reply(451, "4.3.0 " + "x" * 400))
        result = send(provider_for(server))
        assert len(result.summary) <= 300
        assert "\n" not in result.summary


def test_from_settings_sends_through_the_configured_server(
    smtp_server: SmtpServerFactory,
) -> None:
    server = smtp_server(tls="starttls", require_auth=(USER, PASSWORD))
    settings = Settings.from_environ(
        {
            "MAIL_REDIS_ADDR": "127.0.0.1:6379",
            "MAIL_SMTP_MODE": "smtp",
            "MAIL_SMTP_ADDR": server.addr,
            "MAIL_SMTP_TLS": "starttls",
            "MAIL_SMTP_USERNAME": USER,
            "MAIL_SMTP_FROM_EMAIL": SENDER.email,
            "MAIL_SMTP_TIMEOUT": "2s",
            "MAIL_SMTP_INSECURE_SKIP_VERIFY": "true",
        }
    )
    provider = SmtpProvider.from_settings(settings, lambda: PASSWORD)
    _opened.append(provider)
    result = send(provider)
    provider.close()

    assert classified(result) == ACCEPTED
    assert server.received[0].tls
