"""An SMTP capture server for the local stack, built on aiosmtpd.

It listens on 127.0.0.1 (port 1025 unless ``LOCAL_SMTP_PORT`` says otherwise),
speaks plain SMTP (the stack points the handlers at it with
``MAIL_SMTP_TLS=none``), keeps every message it accepts as an ``.eml`` file
in its mail folder and prints a one-line summary of each transaction.

Files are named so they sort by arrival,
``20261122T091500.123-<message id>.eml`` (UTC), and written whole before
they appear under that name. Each starts with the envelope, as a mailbox
would record it: ``Return-Path`` (MAIL FROM) and ``X-Envelope-To`` (every
RCPT TO, Bcc included).

To try failures from outside, it answers by the recipient's local part:

- ``tempfail-once…@``: ``451 4.3.0`` at DATA the first time a Message-ID is
  seen, then 250 (the Message-IDs seen are kept in the mail folder, so a
  retry after a restart of the stack is accepted);
- ``tempfail-always…@``: ``451 4.3.0`` at DATA every time;
- ``reject…@``: ``550 5.1.1`` at RCPT for that recipient;
- anything else: 250.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import default as default_policy
from enum import StrEnum
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

DEFAULT_PORT = 1025
HOST = "127.0.0.1"
SERVER_NAME = "mail-capture.localhost"  # no getfqdn(): it can stall on a DNS lookup
DATA_SIZE_LIMIT = 64 * 1024 * 1024  # 10 MiB of attachments is ~14 MiB in base64
SEEN_FILE = ".tempfail-once-seen"  # Message-IDs already answered 451 once

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]+")


class Rule(StrEnum):
    ACCEPT = "accept"
    TEMPFAIL_ONCE = "tempfail-once"
    TEMPFAIL_ALWAYS = "tempfail-always"
    REJECT = "reject"


def rule_for(address: str) -> Rule:
    """What the capture server does for mail to ``address``, by its local part."""
    local = address.rpartition("@")[0].lower() if "@" in address else address.lower()
    for rule in (Rule.TEMPFAIL_ONCE, Rule.TEMPFAIL_ALWAYS, Rule.REJECT):
        if local.startswith(rule.value):
            return rule
    return Rule.ACCEPT


def file_name(arrived: datetime, message_id: str | None) -> str:
    """``20261122T091500.123-<message id, sanitised>.eml``: sorts by arrival (UTC)."""
    stamp = arrived.astimezone(UTC)
    when = f"{stamp:%Y%m%dT%H%M%S}.{stamp.microsecond // 1000:03d}"
    name = _UNSAFE.sub("_", (message_id or "").strip().strip("<>")).strip("._")[:120]
    return f"{when}-{name or 'no-message-id'}.eml"


def _one_line(value: str, limit: int = 120) -> str:
    flat = " ".join(value.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class CaptureHandler:
    """aiosmtpd's handler hooks; they run on the server's event loop thread."""

    def __init__(self, mail_dir: Path, log: Callable[[str], None]) -> None:
        self.mail_dir = mail_dir
        self._log = log
        self._seen_path = mail_dir / SEEN_FILE
        self._seen: set[str] = set()
        if self._seen_path.exists():
            self._seen = set(self._seen_path.read_text(errors="replace").split())

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if rule_for(address) is Rule.REJECT:
            reply = "550 5.1.1 Recipient address rejected: reject... (local capture)"
            self._log(f"{self._now()} RCPT TO {address} -> {reply}")
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        arrived = datetime.now(UTC)
        content = envelope.original_content or b""  # the bytes as received, dot-unstuffed
        headers = BytesParser(policy=default_policy).parsebytes(content, headersonly=True)
        message_id = str(headers.get("Message-ID", "") or "").strip() or None
        subject = str(headers.get("Subject", "") or "")
        recipients: Sequence[str] = envelope.rcpt_tos
        rules = {rule_for(address) for address in recipients}
        summary = (
            f"{self._now(arrived)} {message_id or '(no Message-ID)'}"
            f" from={envelope.mail_from or '<>'} to={','.join(recipients)}"
            f' subject="{_one_line(subject)}"'
        )
        if Rule.TEMPFAIL_ALWAYS in rules:
            reply = "451 4.3.0 Temporary failure: tempfail-always... (local capture)"
            self._log(f"{summary} -> {reply}")
            return reply
        if Rule.TEMPFAIL_ONCE in rules and (message_id or "") not in self._seen:
            self._remember(message_id or "")
            reply = "451 4.3.0 Temporary failure: tempfail-once..., first try (local capture)"
            self._log(f"{summary} -> {reply}")
            return reply
        path = self._save(arrived, message_id, envelope.mail_from or "", recipients, content)
        self._log(f"{summary} -> 250 saved {path.name}")
        return f"250 2.0.0 Ok: saved as {path.name}"

    def _remember(self, message_id: str) -> None:
        self._seen.add(message_id)
        if message_id:
            with self._seen_path.open("a") as seen:
                seen.write(message_id + "\n")

    def _save(
        self,
        arrived: datetime,
        message_id: str | None,
        mail_from: str,
        recipients: Sequence[str],
        content: bytes,
    ) -> Path:
        envelope_headers = (
            f"Return-Path: <{mail_from}>\r\nX-Envelope-To: {', '.join(recipients)}\r\n"
        ).encode("utf-8", errors="replace")
        name = file_name(arrived, message_id)
        path = self.mail_dir / name
        counter = 1
        while path.exists():  # the same Message-ID in the same millisecond
            counter += 1
            path = self.mail_dir / name.replace(".eml", f"-{counter}.eml")
        partial = self.mail_dir / f".{path.name}.partial"
        partial.write_bytes(envelope_headers + content)
        partial.replace(path)  # appears whole, never half written
        return path

    @staticmethod
    def _now(moment: datetime | None = None) -> str:
        stamp = moment or datetime.now(UTC)
        return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def quiet_aiosmtpd_log() -> None:
    """aiosmtpd logs every command at INFO to ``mail.log``: keep its warnings, on their own.

    Its logger must not propagate: the handlers' Powertools logger is named
    ``mail`` (the service), and would print aiosmtpd's lines as the JSON of
    whichever function logged last.
    """
    log = logging.getLogger("mail.log")
    log.setLevel(logging.WARNING)
    log.propagate = False
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("[smtp-capture] %(levelname)s %(message)s"))
        log.addHandler(handler)


class CaptureStartError(RuntimeError):
    pass


class SmtpCapture:
    """The capture server on its own thread (aiosmtpd's threaded ``Controller``)."""

    def __init__(self, mail_dir: Path, port: int = DEFAULT_PORT) -> None:
        self.mail_dir = mail_dir
        self.port = port
        self._print_lock = threading.Lock()
        self.handler = CaptureHandler(mail_dir, self._print)
        self._controller: Controller | None = None

    @property
    def addr(self) -> str:
        return f"{HOST}:{self.port}"

    def _print(self, line: str) -> None:
        with self._print_lock:
            print(f"[smtp-capture] {line}", flush=True)

    def start(self) -> None:
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        quiet_aiosmtpd_log()
        controller = Controller(
            self.handler,
            hostname=HOST,
            port=self.port,
            server_hostname=SERVER_NAME,
            data_size_limit=DATA_SIZE_LIMIT,
            ready_timeout=10.0,
        )
        try:
            controller.start()
        except Exception as error:
            raise CaptureStartError(
                f"cannot serve SMTP on {self.addr}: {error} (set LOCAL_SMTP_PORT to another port, "
                "or MAIL_SMTP_ADDR to use another SMTP server)"
            ) from error
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        print(f"SMTP capture stopped; mail stays in {self.mail_dir}", flush=True)
