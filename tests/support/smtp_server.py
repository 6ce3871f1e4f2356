"""A real, scriptable SMTP server for the integration tier, built on aiosmtpd.

``SmtpTestServer`` listens on a free 127.0.0.1 port in a background thread
(aiosmtpd's threaded ``Controller``) and speaks real SMTP over a real socket:

- ``tls="none" | "starttls" | "implicit"``, with a self-signed certificate for
  ``localhost``/``127.0.0.1`` made at start (``cert_path`` is the PEM);
  ``offer_starttls=False`` plays a server that never advertises STARTTLS;
- ``require_auth=(user, password)``: AUTH PLAIN/LOGIN, MAIL refused with 530
  until the client authenticated;
- ``server.script(...)`` queues behaviours; each new transaction (MAIL FROM)
  takes the next one: ``Reply(code, text, at="mail"|"rcpt"|"data")``,
  ``Stall(seconds, at=...)``, ``DropDuringData()``. Without one, everything is
  accepted and DATA answers ``250 2.0.0 Ok: queued as <id>``;
- ``received`` holds every accepted message, ``connections`` counts client
  connections that greeted (EHLO/HELO), ``drop_connections()`` hangs up on
  every client, like a server closing idle connections.

Other modules use the ``smtp_server`` fixture (a factory) or the class directly.
"""

from __future__ import annotations

import asyncio
import datetime
import hmac
import ipaddress
import itertools
import shutil
import ssl
import tempfile
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.network import free_port

__all__ = [
    "Behaviour",
    "DropDuringData",
    "ReceivedMessage",
    "Reply",
    "SmtpServerFactory",
    "SmtpTestServer",
    "Stage",
    "Stall",
    "TlsMode",
    "free_port",
    "smtp_server",
]

TlsMode = Literal["none", "starttls", "implicit"]
Stage = Literal["mail", "rcpt", "data"]


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer ``code text`` at MAIL, RCPT (every recipient, or only ``recipient``) or DATA."""

    code: int
    text: str = "scripted reply"
    at: Stage = "data"
    recipient: str | None = None

    @property
    def line(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True, slots=True)
class Stall:
    """Sleep this long before answering the command (longer than the client's timeout)."""

    seconds: float
    at: Stage = "data"


@dataclass(frozen=True, slots=True)
class DropDuringData:
    """Hang up once the message data arrived, before answering it."""


Behaviour = Reply | Stall | DropDuringData


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # exactly as received, dot-unstuffed
    message: EmailMessage  # parsed with email.policy.default
    tls: bool  # the transaction ran over TLS (STARTTLS or implicit)
    login: str | None  # the AUTH user, if the client authenticated


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Handler:
    """aiosmtpd handler hooks; runs on the server's event loop thread."""

    def __init__(self, owner: SmtpTestServer) -> None:
        self.owner = owner
        self.behaviours: weakref.WeakKeyDictionary[Envelope, Behaviour | None] = (
            weakref.WeakKeyDictionary()
        )
        self.queue_ids = itertools.count(0x4F3A)

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        self.owner._greeted(server)
        session.host_name = hostname
        return responses

    async def handle_HELO(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        self.owner._greeted(server)
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.owner.require_auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        behaviour = self.owner._next_behaviour()
        self.behaviours[envelope] = behaviour
        if isinstance(behaviour, Reply) and behaviour.at == "mail":
            return behaviour.line
        if isinstance(behaviour, Stall) and behaviour.at == "mail":
            await asyncio.sleep(behaviour.seconds)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        behaviour = self.behaviours.get(envelope)
        if (
            isinstance(behaviour, Reply)
            and behaviour.at == "rcpt"
            and behaviour.recipient in (None, address)
        ):
            return behaviour.line
        if isinstance(behaviour, Stall) and behaviour.at == "rcpt":
            await asyncio.sleep(behaviour.seconds)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        behaviour = self.behaviours.pop(envelope, None)
        if isinstance(behaviour, DropDuringData):
            assert server.transport is not None
            server.transport.close()
            await asyncio.sleep(30)  # cancelled as soon as the connection is gone
            return "421 4.3.0 dropped"
        if isinstance(behaviour, Stall) and behaviour.at == "data":
            await asyncio.sleep(behaviour.seconds)
        if isinstance(behaviour, Reply) and behaviour.at == "data":
            reply = behaviour.line
        else:
            reply = f"250 2.0.0 Ok: queued as {next(self.queue_ids):X}"
        if reply.startswith("2"):
            self.owner._record(server, session, envelope)
        return reply


class SmtpTestServer:
    """One scriptable SMTP server on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        *,
        tls: TlsMode = "none",
        require_auth: tuple[str, str] | None = None,
        offer_starttls: bool = True,
        idle_timeout: float | None = None,
    ) -> None:
        self.tls: TlsMode = tls
        self.require_auth = require_auth
        self.offer_starttls = offer_starttls
        self.idle_timeout = idle_timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.cert_path: Path | None = None
        self.received: list[ReceivedMessage] = []
        self._lock = threading.Lock()
        self._queue: deque[Behaviour] = deque()
        self._connections = 0
        self._clients: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._controller: Controller | None = None
        self._tmp: Path | None = None

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> Self:
        if self._controller is not None:
            raise RuntimeError("the SMTP test server is already running")
        self._tmp = Path(tempfile.mkdtemp(prefix="smtp-test-"))
        implicit_context: ssl.SSLContext | None = None
        starttls_context: ssl.SSLContext | None = None
        if self.tls != "none":
            self.cert_path, key_path = _self_signed_certificate(self._tmp)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert_path, key_path)
            if self.tls == "implicit":
                implicit_context = context
            elif self.offer_starttls:
                starttls_context = context
        options: dict[str, Any] = {
            "tls_context": starttls_context,
            "authenticator": self._authenticate if self.require_auth else None,
            # AUTH only after STARTTLS; implicit TLS and plain test servers take it at once.
            "auth_require_tls": self.tls == "starttls",
        }
        if self.idle_timeout is not None:
            options["timeout"] = self.idle_timeout
        self.port = free_port()
        controller = Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            ssl_context=implicit_context,
            server_hostname="smtp.test",
            **options,
        )
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- test controls --------------------------------------------------------------

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        """Client connections that greeted with EHLO or HELO since start."""
        with self._lock:
            return self._connections

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours; each following transaction takes the next one."""
        with self._lock:
            self._queue.extend(behaviours)

    @property
    def pending(self) -> list[Behaviour]:
        with self._lock:
            return list(self._queue)

    def drop_connections(self) -> None:
        """Hang up on every connected client, as a server closing idle connections does."""
        controller = self._controller
        if controller is None:
            return

        async def hang_up() -> None:
            for client in list(self._clients):
                if client.transport is not None:
                    client.transport.close()
            await asyncio.sleep(0.05)

        asyncio.run_coroutine_threadsafe(hang_up(), controller.loop).result(timeout=5)

    # -- called by the handler on the server thread ---------------------------------

    def _greeted(self, client: SMTP) -> None:
        with self._lock:
            if client not in self._clients:
                self._clients.add(client)
                self._connections += 1

    def _next_behaviour(self) -> Behaviour | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def _record(self, server: SMTP, session: Session, envelope: Envelope) -> None:
        data = envelope.original_content or b""
        message = BytesParser(EmailMessage, policy=default_policy).parsebytes(data)
        over_tls = (
            server.transport is not None
            and server.transport.get_extra_info("ssl_object") is not None
        )
        user = getattr(session.auth_data, "login", None) if session.authenticated else None
        login = user.decode() if isinstance(user, bytes) else None
        with self._lock:
            self.received.append(
                ReceivedMessage(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=list(envelope.rcpt_tos),
                    data=data,
                    message=message,
                    tls=over_tls,
                    login=login,
                )
            )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert self.require_auth is not None
        user, password = self.require_auth
        ok = (
            isinstance(auth_data, LoginPassword)
            and hmac.compare_digest(auth_data.login, user.encode())
            and hmac.compare_digest(auth_data.password, password.encode())
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data)


class SmtpServerFactory(Protocol):
    def __call__(
        self,
        *,
        tls: TlsMode = "none",
        require_auth: tuple[str, str] | None = None,
        offer_starttls: bool = True,
        idle_timeout: float | None = None,
    ) -> SmtpTestServer: ...


@pytest.fixture
def smtp_server() -> Iterator[SmtpServerFactory]:
    """Start SMTP test servers on demand; all are stopped when the test ends."""
    started: list[SmtpTestServer] = []

    def start(
        *,
        tls: TlsMode = "none",
        require_auth: tuple[str, str] | None = None,
        offer_starttls: bool = True,
        idle_timeout: float | None = None,
    ) -> SmtpTestServer:
        server = SmtpTestServer(
            tls=tls,
            require_auth=require_auth,
            offer_starttls=offer_starttls,
            idle_timeout=idle_timeout,
        )
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()
