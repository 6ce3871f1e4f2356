"""The SMTP provider: one kept-open connection per worker batch, every answer classified.

Classification of one ``send`` (the provider never raises for a delivery problem):

========================================================  ==================  =================
What happened                                             Outcome             Attempt status
========================================================  ==================  =================
2xx after DATA (some recipients refused: named in the     accepted            provider_accepted
summary)
4xx at MAIL, RCPT (all recipients) or DATA; any reply     transient_failure   provider_rejected
refusing the session (greeting, EHLO); 421 anywhere
5xx at MAIL, RCPT (any 5xx when all are refused) or DATA  permanent_failure   provider_rejected
authentication failed (535 …) or required (530): the      transient_failure   provider_rejected
credentials, not the message, are at fault; retries give
operators time to fix them
connection refused/reset/lost, TLS handshake or           transient_failure   transport_failed
certificate failure, STARTTLS not offered or refused
a timeout at any stage                                    transient_failure   timed_out
========================================================  ==================  =================

After any failure the connection is dropped, so the next send starts fresh.
A kept connection whose last transaction ended with the server's answer to
DATA is reused without RSET (the server has reset its state already; RSET
would only cost a round trip), unless the server sent something while it was
idle (a 421, or its end of the connection), seen by a zero-timeout poll; then
RSET says whether it is still usable, and if not a fresh one is opened. A kept
connection found dead at MAIL or RCPT anyway (a disconnect, or 421: the
server is closing it) gets the send retried once on a fresh connection:
nothing of the message had been handed over yet. A disconnect during DATA is
never retried: the server may have accepted the message.

With ``tls=starttls`` the provider never falls back to plain text: when the
server does not offer STARTTLS, nothing but EHLO is sent before it hangs up.
"""

from __future__ import annotations

import contextlib
import copy
import select
import smtplib
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage

from mailcore.config import Settings, SmtpTls
from mailcore.domain.states import AttemptStatus, ProviderOutcome
from mailcore.mail.mime import WIRE_POLICY
from mailcore.ports import SendResult
from mailcore.providers.redaction import redact_summary

__all__ = ["SmtpProvider"]

_CONNECT = "connect"
_EHLO = "EHLO"
_STARTTLS = "STARTTLS"
_AUTH = "AUTH"
_RSET = "RSET"
_MAIL = "MAIL FROM"
_RCPT = "RCPT TO"
_DATA = "DATA"
# Replies at these stages refuse the session, not the message.
_SESSION_STAGES = frozenset({_CONNECT, _EHLO, _AUTH})
# A kept connection found dead here has not received any of the message yet.
_RETRYABLE_STAGES = frozenset({_MAIL, _RCPT})


@dataclass(slots=True)
class _Progress:
    stage: str = _CONNECT
    reused: bool = False


@dataclass(frozen=True, slots=True)
class _Verdict:
    outcome: ProviderOutcome
    attempt_status: AttemptStatus
    summary: str


class _TransportProblem(Exception):
    """A failure of ours to set up a safe session (no STARTTLS, no password)."""


class SmtpProvider:
    """A :class:`~mailcore.ports.MailProvider` speaking SMTP through :mod:`smtplib`."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        tls: SmtpTls,
        username: str | None,
        password_source: Callable[[], str | None],
        timeout: timedelta,
        verify_certificates: bool,
        local_hostname: str | None = None,
    ) -> None:
        if timeout <= timedelta(0):
            raise ValueError("the SMTP timeout must be positive")
        self._host = host
        self._port = port
        self._tls = SmtpTls(tls)
        self._username = username or None
        self._password_source = password_source
        self._timeout = timeout.total_seconds()
        self._verify = verify_certificates
        self._local_hostname = local_hostname
        self._ssl_context: ssl.SSLContext | None = None
        self._connection: smtplib.SMTP | None = None
        # The kept connection's last transaction ended with the answer to DATA.
        self._finished_cleanly = False
        # The password last read, kept only to scrub it from summaries.
        self._password_seen: str | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, password_source: Callable[[], str | None]
    ) -> SmtpProvider:
        if settings.smtp_addr is None:
            raise ValueError("MAIL_SMTP_ADDR is required to send over SMTP")
        host, _, port = settings.smtp_addr.rpartition(":")
        return cls(
            host=host.strip("[]"),
            port=int(port),
            tls=settings.smtp_tls,
            username=settings.smtp_username,
            password_source=password_source,
            timeout=settings.smtp_timeout,
            verify_certificates=not settings.smtp_insecure_skip_verify,
        )

    def __repr__(self) -> str:
        return (
            f"SmtpProvider(host={self._host!r}, port={self._port}, tls={self._tls.value!r}, "
            f"username={self._username!r})"
        )

    # -- MailProvider -----------------------------------------------------------------

    def send(
        self,
        message: EmailMessage,
        *,
        envelope_from: str,
        recipients: Sequence[str],
        secrets: Sequence[str] = (),
    ) -> SendResult:
        if not recipients:
            raise ValueError("a message needs at least one envelope recipient")
        started = time.perf_counter()
        payload = _wire_bytes(message)
        verdict = self._attempt(payload, envelope_from, list(recipients), may_retry=True)
        duration_ms = round((time.perf_counter() - started) * 1000)
        scrub = [*secrets, *([self._password_seen] if self._password_seen else [])]
        return SendResult(
            outcome=verdict.outcome,
            attempt_status=verdict.attempt_status,
            summary=redact_summary(verdict.summary, scrub),
            duration_ms=duration_ms,
        )

    def close(self) -> None:
        """End of a batch: QUIT politely and close the kept connection, if any."""
        self._finished_cleanly = False
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                connection.quit()
        finally:
            _close_quietly(connection)

    # -- one try -----------------------------------------------------------------------

    def _attempt(
        self, payload: bytes, envelope_from: str, recipients: list[str], *, may_retry: bool
    ) -> _Verdict:
        progress = _Progress()
        try:
            connection = self._ready_connection(progress)
            return self._transaction(connection, payload, envelope_from, recipients, progress)
        except (smtplib.SMTPException, OSError, _TransportProblem) as error:
            self._drop()
            if (
                may_retry
                and progress.reused
                and progress.stage in _RETRYABLE_STAGES
                and _closed_by_server(error)
            ):
                # The kept connection died while idle and nothing of this message
                # was handed over: once more, on a fresh connection.
                return self._attempt(payload, envelope_from, recipients, may_retry=False)
            return self._classify(error, progress.stage)

    def _ready_connection(self, progress: _Progress) -> smtplib.SMTP:
        connection = self._connection
        if connection is not None and self._finished_cleanly and not _server_spoke(connection):
            progress.reused = True
            return connection
        if connection is not None:
            progress.stage = _RSET
            try:
                code, _ = connection.rset()
            except (smtplib.SMTPException, OSError):
                code = -1
            if code == 250:
                progress.reused = True
                return connection
            self._drop()  # closed or confused while idle: start over
        self._connection = self._open(progress)
        return self._connection

    def _open(self, progress: _Progress) -> smtplib.SMTP:
        progress.stage = _CONNECT
        # Connecting in the constructor records the host name that TLS checks
        # the certificate against; a greeting other than 220 raises SMTPConnectError.
        connection: smtplib.SMTP
        if self._tls is SmtpTls.IMPLICIT:
            connection = smtplib.SMTP_SSL(
                self._host,
                self._port,
                local_hostname=self._local_hostname,
                timeout=self._timeout,
                context=self._context(),
            )
        else:
            connection = smtplib.SMTP(
                self._host, self._port, local_hostname=self._local_hostname, timeout=self._timeout
            )
        try:
            progress.stage = _EHLO
            connection.ehlo_or_helo_if_needed()
            if self._tls is SmtpTls.STARTTLS:
                if not connection.has_extn("starttls"):
                    raise _TransportProblem(
                        "server does not offer STARTTLS; not sending in plain text"
                    )
                progress.stage = _STARTTLS
                connection.starttls(context=self._context())
                progress.stage = _EHLO
                code, reply = connection.ehlo()
                if not 200 <= code < 300:
                    raise smtplib.SMTPHeloError(code, reply)
            if self._username is not None:
                progress.stage = _AUTH
                connection.login(self._username, self._password())
        except BaseException:
            _close_quietly(connection)
            raise
        return connection

    def _transaction(
        self,
        connection: smtplib.SMTP,
        payload: bytes,
        envelope_from: str,
        recipients: list[str],
        progress: _Progress,
    ) -> _Verdict:
        progress.stage = _MAIL
        self._finished_cleanly = False
        options = (
            ["BODY=8BITMIME"] if not payload.isascii() and connection.has_extn("8bitmime") else []
        )
        code, reply = connection.mail(envelope_from, options)
        if not 200 <= code < 300:
            raise smtplib.SMTPSenderRefused(code, reply, envelope_from)
        progress.stage = _RCPT
        refused: dict[str, tuple[int, bytes]] = {}
        for recipient in recipients:
            code, reply = connection.rcpt(recipient)
            if code == 421:  # the server is closing the session
                raise smtplib.SMTPResponseException(code, reply)
            if not 200 <= code < 300:
                refused[recipient] = (code, reply)
        if len(refused) == len(recipients):
            raise smtplib.SMTPRecipientsRefused(refused)
        progress.stage = _DATA
        code, reply = connection.data(payload)
        if not 200 <= code < 300:
            raise smtplib.SMTPDataError(code, reply)
        self._finished_cleanly = True
        summary = _reply(code, reply)
        if refused:
            summary += f"; refused {len(refused)} of {len(recipients)} recipients: " + ", ".join(
                f"{recipient} {_reply(*answer)}" for recipient, answer in refused.items()
            )
        return _Verdict(ProviderOutcome.ACCEPTED, AttemptStatus.PROVIDER_ACCEPTED, summary)

    # -- helpers -----------------------------------------------------------------------

    def _password(self) -> str:
        try:
            password = self._password_source()
        except Exception as error:
            raise _TransportProblem(
                f"could not read the SMTP password ({type(error).__name__})"
            ) from None
        if not password:
            raise _TransportProblem("an SMTP username is set but no password is available")
        self._password_seen = password
        return password

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            context = ssl.create_default_context()
            if not self._verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._ssl_context = context
        return self._ssl_context

    def _drop(self) -> None:
        self._finished_cleanly = False
        connection, self._connection = self._connection, None
        if connection is not None:
            _close_quietly(connection)

    def _classify(self, error: Exception, stage: str) -> _Verdict:
        transient = ProviderOutcome.TRANSIENT_FAILURE
        if isinstance(error, smtplib.SMTPAuthenticationError):
            return _Verdict(
                transient,
                AttemptStatus.PROVIDER_REJECTED,
                f"authentication failed: {_reply(error.smtp_code, error.smtp_error)}",
            )
        if isinstance(error, smtplib.SMTPRecipientsRefused):
            answers: dict[str, tuple[int, bytes]] = dict(error.recipients)
            permanent = any(500 <= code < 600 for code, _ in answers.values())
            return _Verdict(
                ProviderOutcome.PERMANENT_FAILURE if permanent else transient,
                AttemptStatus.PROVIDER_REJECTED,
                "all recipients refused: "
                + ", ".join(f"{rcpt} {_reply(*answer)}" for rcpt, answer in answers.items()),
            )
        if isinstance(error, smtplib.SMTPResponseException):
            text = _reply(error.smtp_code, error.smtp_error)
            if stage == _STARTTLS:
                return _Verdict(
                    transient, AttemptStatus.TRANSPORT_FAILED, f"STARTTLS refused: {text}"
                )
            if error.smtp_code == 530:  # "authentication required": our credentials, again
                return _Verdict(
                    transient, AttemptStatus.PROVIDER_REJECTED, f"authentication required: {text}"
                )
            permanent = 500 <= error.smtp_code < 600 and stage not in _SESSION_STAGES
            prefix = {
                _CONNECT: "server refused the session: ",
                _EHLO: "EHLO refused: ",
                _AUTH: "AUTH refused: ",
                _MAIL: "sender refused: ",
                _RCPT: "recipient refused: ",
            }.get(stage, "")
            return _Verdict(
                ProviderOutcome.PERMANENT_FAILURE if permanent else transient,
                AttemptStatus.PROVIDER_REJECTED,
                prefix + text,
            )
        # smtplib reports a socket error while reading a reply as "disconnected";
        # the socket error it swallowed says what really happened.
        if isinstance(error, smtplib.SMTPServerDisconnected) and isinstance(
            error.__context__, TimeoutError | ConnectionResetError | ssl.SSLError
        ):
            error = error.__context__
        if isinstance(error, TimeoutError):
            return _Verdict(
                transient,
                AttemptStatus.TIMED_OUT,
                f"timed out after {self._timeout:g}s during {stage}",
            )
        failed = AttemptStatus.TRANSPORT_FAILED
        if isinstance(error, _TransportProblem):
            return _Verdict(transient, failed, str(error))
        if isinstance(error, ssl.SSLCertVerificationError):
            reason = error.verify_message or error.reason or "certificate rejected"
            return _Verdict(
                transient, failed, f"TLS certificate verification failed during {stage}: {reason}"
            )
        if isinstance(error, ssl.SSLError):
            return _Verdict(
                transient, failed, f"TLS failure during {stage}: {error.reason or error}"
            )
        if isinstance(error, ConnectionRefusedError):
            return _Verdict(transient, failed, f"connection refused by {self._host}:{self._port}")
        if isinstance(error, ConnectionResetError):
            return _Verdict(transient, failed, f"connection reset during {stage}")
        if isinstance(error, smtplib.SMTPServerDisconnected):
            return _Verdict(transient, failed, f"connection lost during {stage}: {error}")
        if isinstance(error, smtplib.SMTPNotSupportedError):
            return _Verdict(transient, failed, f"{stage} not possible: {error}")
        if isinstance(error, OSError):
            reason = error.strerror or str(error) or type(error).__name__
            return _Verdict(transient, failed, f"network error during {stage}: {reason}")
        return _Verdict(transient, failed, f"SMTP error during {stage}: {error}")


def _closed_by_server(error: Exception) -> bool:
    """The server hung up, or said it is about to (421), so the connection is gone."""
    if isinstance(error, smtplib.SMTPServerDisconnected | ConnectionError):
        return True
    return isinstance(error, smtplib.SMTPResponseException) and error.smtp_code == 421


def _server_spoke(connection: smtplib.SMTP) -> bool:
    """Whether an idle connection has anything to read: a 421, a TLS alert or EOF.

    A server has nothing to say between transactions, so any of these means
    the connection needs a closer look (RSET) before it is trusted again.
    """
    sock = connection.sock
    if sock is None:
        return True
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no poll() on this platform: look closer
        return True


def _wire_bytes(message: EmailMessage) -> bytes:
    """The message as transmitted: CRLF line ends, and never a Bcc header.

    Written with WIRE_POLICY: the headers build_message encoded go out as they
    are; any other message is written as email.policy.SMTP would write it.
    """
    if "Bcc" in message or "Resent-Bcc" in message:
        message = copy.copy(message)  # like smtplib.send_message: the caller's stays intact
        del message["Bcc"]
        del message["Resent-Bcc"]
    return message.as_bytes(policy=WIRE_POLICY)


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return f"{code} {text}".strip()


def _close_quietly(connection: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        connection.close()
