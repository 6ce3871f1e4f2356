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
a timeout at any stage, or the send's deadline reached    transient_failure   timed_out
========================================================  ==================  =================

Two clocks bound a send. ``timeout`` (``MAIL_SMTP_TIMEOUT``) caps every single
wait: resolving and connecting, a TLS handshake, each write, each read of an
answer. ``send_timeout`` (``MAIL_SMTP_SEND_TIMEOUT``) is one wall-clock
deadline for the whole send, from its first step (the name lookup) to the
server's answer to the message, reading the password included: every wait
is shortened to end by it, and reads are made one ``recv`` at a time, so a
server that trickles its answers a byte at a time, or answers each command
just inside ``timeout``, cannot stretch a send past it. The configuration
keeps that deadline well inside the claim's, so a send is over before
recovery could hand its delivery to another worker.

The message is handed over (its data and the final dot written) only while
a whole ``timeout`` still fits before the deadline, to wait for the answer.
A send the deadline cuts before that point leaves the server nothing to
deliver (it drops a transaction whose data never ended); once the dot is
written, only a server slower than ``timeout`` to answer it can still
deliver a message whose attempt counts as timed out: the one duplicate
window SMTP leaves open (DESIGN §4.3).

After any failure the connection is dropped, so the next send starts fresh.
A kept connection whose last transaction ended with the server's answer to
DATA is reused without RSET (the server has reset its state already; RSET
would only cost a round trip), unless the server sent something while it was
idle (a 421, or its end of the connection), seen by a zero-timeout poll; then
RSET says whether it is still usable, and if not a fresh one is opened. A kept
connection found dead at MAIL or RCPT anyway (a disconnect, or 421: the
server is closing it) gets the send retried once on a fresh connection,
within the same deadline: nothing of the message had been handed over yet.
A disconnect during DATA is never retried: the server may have accepted the
message.

With ``tls=starttls`` the provider never falls back to plain text: when the
server does not offer STARTTLS, nothing but EHLO is sent before it hangs up.
"""

from __future__ import annotations

import contextlib
import copy
import re
import select
import smtplib
import socket
import ssl
import time
from collections.abc import Buffer, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage

from mailcore.config import Settings, SmtpTls
from mailcore.deadlines import run_within
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
    handed_over: bool = False  # the message's final dot was written


class _SendDeadlinePassed(TimeoutError):
    """No time is left in the send's deadline for the next step."""


@dataclass(slots=True)
class _Deadline:
    """One send's wall-clock deadline, and the cap on any single wait."""

    ends_at: float  # time.monotonic() seconds
    total: float
    per_wait: float
    cut: bool = False  # the last wait was shortened to end at the deadline

    @classmethod
    def starting_now(cls, total: float, per_wait: float) -> _Deadline:
        return cls(time.monotonic() + total, total, per_wait)

    def next_wait(self, keep: float = 0.0) -> float:
        """How long the next network wait may last: ``per_wait``, or less to end by
        the deadline (less ``keep``); _SendDeadlinePassed when nothing is left."""
        left = self.ends_at - keep - time.monotonic()
        self.cut = left < self.per_wait
        if left <= 0:
            raise _SendDeadlinePassed("no time left before the send deadline")
        return min(self.per_wait, left)


class _DeadlineReader:
    """Reads the server's answers line by line, each ``recv`` bounded by the deadline.

    Stands in for the buffered file smtplib reads replies from, whose reads a
    trickling server could keep going forever, one byte inside each timeout.
    """

    def __init__(self, sock: socket.socket, deadline: Callable[[], _Deadline]) -> None:
        self._sock = sock
        self._deadline = deadline  # the current send's: a kept connection serves several
        self._buffer = b""

    @property
    def buffered(self) -> bool:
        return bool(self._buffer)

    def readline(self, limit: int = -1) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0 and (limit < 0 or end < limit):
                take = end + 1
            elif 0 <= limit <= len(self._buffer):
                take = limit
            else:
                self._sock.settimeout(self._deadline().next_wait())
                chunk = self._sock.recv(4096)
                if chunk:
                    self._buffer += chunk
                    continue
                take = len(self._buffer)  # the end of the stream
            line, self._buffer = self._buffer[:take], self._buffer[take:]
            return line

    def close(self) -> None:
        self._buffer = b""


class _BoundedSmtp(smtplib.SMTP):
    """:class:`smtplib.SMTP` whose every network wait ends by the send's deadline.

    ``deadline`` is set anew for each send on a kept connection. With a
    ``tls_context`` the connection is TLS from the first byte (implicit TLS).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        local_hostname: str,
        deadline: _Deadline,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.deadline = deadline
        self._tls_context = tls_context
        self._server_name = host  # what the certificate must name
        super().__init__(host, port, local_hostname=local_hostname, timeout=deadline.per_wait)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = _connect(host, port, self.deadline)
        if self._tls_context is None:
            return sock
        try:
            sock.settimeout(self.deadline.next_wait())  # bounds the whole handshake
            return self._tls_context.wrap_socket(sock, server_hostname=self._server_name)
        except BaseException:
            sock.close()
            raise

    def send(self, s: Buffer | str) -> None:
        if self.sock is not None:
            self.sock.settimeout(self.deadline.next_wait())
        super().send(s)

    def getreply(self) -> tuple[int, bytes]:
        if self.file is None and self.sock is not None:
            self.file = _DeadlineReader(self.sock, lambda: self.deadline)
        return super().getreply()

    def hand_over(self, payload: bytes) -> None:
        """Write the message data and its final dot, after the server's 354.

        Only while a whole per-command wait for the answer still fits before
        the deadline, and written before that margin runs out: a write the
        deadline cuts has not sent the final dot, so the server delivers
        nothing. One write, so the dot does not wait on Nagle for an ACK.
        """
        if self.sock is None:
            raise smtplib.SMTPServerDisconnected("please run connect() first")
        self.sock.settimeout(self.deadline.next_wait(keep=self.deadline.per_wait))
        self.sock.sendall(_dot_stuffed(payload) + b".\r\n")


def _connect(host: str, port: int, deadline: _Deadline) -> socket.socket:
    """Like socket.create_connection, with the name lookup bounded as well."""
    addresses = run_within(
        deadline.next_wait(),
        lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM),
        name="smtp-resolve",
    )
    failure: OSError = OSError(f"no address found for {host}")
    for family, kind, protocol, _, address in addresses:
        sock = socket.socket(family, kind, protocol)
        try:
            sock.settimeout(deadline.next_wait())
            sock.connect(address)
            return sock
        except _SendDeadlinePassed:
            sock.close()
            raise
        except OSError as error:
            sock.close()
            failure = error
    raise failure


def _local_hostname() -> str:
    """What smtplib greets with when given no name: the FQDN, or an address literal."""
    fqdn = socket.getfqdn()
    if "." in fqdn:
        return fqdn
    try:
        return f"[{socket.gethostbyname(socket.gethostname())}]"
    except OSError:
        return "[127.0.0.1]"


_LEADING_DOT = re.compile(rb"(?m)^\.")


def _dot_stuffed(payload: bytes) -> bytes:
    """The DATA section's bytes (RFC 5321 §4.5.2), ending with CRLF, before the final dot."""
    stuffed = _LEADING_DOT.sub(b"..", payload)
    return stuffed if stuffed.endswith(b"\r\n") else stuffed + b"\r\n"


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
        send_timeout: timedelta,
        verify_certificates: bool,
        local_hostname: str | None = None,
    ) -> None:
        if timeout <= timedelta(0) or send_timeout <= timedelta(0):
            raise ValueError("the SMTP timeouts must be positive")
        self._host = host
        self._port = port
        self._tls = SmtpTls(tls)
        self._username = username or None
        self._password_source = password_source
        self._timeout = timeout.total_seconds()
        self._send_timeout = send_timeout.total_seconds()
        self._verify = verify_certificates
        self._local_hostname = local_hostname
        self._ssl_context: ssl.SSLContext | None = None
        self._connection: _BoundedSmtp | None = None
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
            send_timeout=settings.smtp_send_deadline,
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
        deadline = _Deadline.starting_now(self._send_timeout, self._timeout)
        payload = _wire_bytes(message)
        verdict = self._attempt(payload, envelope_from, list(recipients), deadline, may_retry=True)
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
        # QUIT gets one wait of its own: the last send's deadline has nothing to do with it.
        connection.deadline = _Deadline.starting_now(self._timeout, self._timeout)
        try:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                connection.quit()
        finally:
            _close_quietly(connection)

    # -- one try -----------------------------------------------------------------------

    def _attempt(
        self,
        payload: bytes,
        envelope_from: str,
        recipients: list[str],
        deadline: _Deadline,
        *,
        may_retry: bool,
    ) -> _Verdict:
        progress = _Progress()
        try:
            connection = self._ready_connection(progress, deadline)
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
                # was handed over: once more, on a fresh connection, within
                # the same deadline.
                return self._attempt(payload, envelope_from, recipients, deadline, may_retry=False)
            return self._classify(error, progress, deadline)

    def _ready_connection(self, progress: _Progress, deadline: _Deadline) -> _BoundedSmtp:
        connection = self._connection
        if connection is not None:
            connection.deadline = deadline
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
        self._connection = self._open(progress, deadline)
        return self._connection

    def _open(self, progress: _Progress, deadline: _Deadline) -> _BoundedSmtp:
        progress.stage = _CONNECT
        if self._local_hostname is None:
            # Looked up once (a name lookup, bounded like the rest of the send).
            self._local_hostname = run_within(
                deadline.next_wait(), _local_hostname, name="smtp-ehlo-name"
            )
        # Connecting in the constructor records the host name that TLS checks
        # the certificate against; a greeting other than 220 raises SMTPConnectError.
        connection = _BoundedSmtp(
            self._host,
            self._port,
            local_hostname=self._local_hostname,
            deadline=deadline,
            tls_context=self._context() if self._tls is SmtpTls.IMPLICIT else None,
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
                connection.login(self._username, self._password(deadline))
        except BaseException:
            _close_quietly(connection)
            raise
        return connection

    def _transaction(
        self,
        connection: _BoundedSmtp,
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
        code, reply = connection.docmd("DATA")
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        connection.hand_over(payload)
        progress.handed_over = True
        code, reply = connection.getreply()
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

    def _password(self, deadline: _Deadline) -> str:
        try:
            # A secret read from Secrets Manager is bounded by the send's deadline too.
            password = run_within(deadline.next_wait(), self._password_source, name="smtp-password")
        except TimeoutError:
            raise
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

    def _classify(self, error: Exception, progress: _Progress, deadline: _Deadline) -> _Verdict:
        stage = progress.stage
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
            if not deadline.cut:
                summary = f"timed out after {self._timeout:g}s during {stage}"
            elif progress.handed_over:
                summary = (
                    f"send deadline of {deadline.total:g}s reached waiting for the answer to "
                    "the message; the server may have accepted it"
                )
            else:
                summary = (
                    f"send deadline of {deadline.total:g}s reached during {stage}; "
                    "the message was not handed over"
                )
            return _Verdict(transient, AttemptStatus.TIMED_OUT, summary)
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
    if isinstance(error.__context__, TimeoutError):
        return False  # smtplib's "disconnected" after our own timeout: the server is slow
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
    if isinstance(connection.file, _DeadlineReader) and connection.file.buffered:
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
