"""Turn a delivery and its rendered content into one RFC 5322 message.

The standard library's :mod:`email` package does the MIME work; this module
only decides the shape:

- text only: one ``text/plain`` part;
- text and HTML: ``multipart/alternative`` (plain first, HTML preferred);
- inline attachments (with HTML): the HTML part becomes ``multipart/related``
  holding the HTML and the inline parts, each with ``Content-ID: <id>`` and
  ``Content-Disposition: inline``, so ``cid:`` references in the HTML resolve;
- regular attachments: everything above wrapped in ``multipart/mixed``.

Bcc recipients appear only in the SMTP envelope (:func:`envelope_recipients`),
never as a header. Header values are checked for CR/LF before they are set:
an injection attempt is a :class:`ValueError`, never a forged header. Callers
sanitise subjects and filenames at intake, so valid deliveries never meet it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from mailcore.domain.model import Attachment, Delivery

__all__ = ["MESSAGE_POLICY", "Sender", "build_message", "envelope_recipients", "message_id_for"]

# email.policy.SMTP (CRLF line ends, RFC 2047 headers), 7-bit clean: non-ASCII
# bodies go out quoted-printable or base64, so no server needs 8BITMIME.
MESSAGE_POLICY = SMTP.clone(cte_type="7bit")

# Attachments of these major types cannot be carried as base64 leaves.
_OPAQUE_MAINTYPES = frozenset({"multipart", "message"})


@dataclass(frozen=True, slots=True)
class Sender:
    """The From of every message: the service's sender address and display name."""

    email: str
    name: str | None = None

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]


def message_id_for(delivery_id: str, domain: str) -> str:
    """The Message-ID of a delivery: the same for every attempt, unique per delivery.

    SMTP has no idempotency, so a worker that dies between the server's 250 and
    recording it causes one duplicate; a stable Message-ID lets the receiving
    side recognise it. A resend clone has its own delivery id, so its own id.
    """
    _check_header_value("Message-ID", delivery_id)
    _check_header_value("Message-ID", domain)
    if not delivery_id or not domain or any(c in delivery_id + domain for c in "<>@ "):
        raise ValueError("a Message-ID needs a delivery id and a domain without <, >, @ or spaces")
    return f"<{delivery_id}@{domain}>"


def envelope_recipients(delivery: Delivery) -> list[str]:
    """Every RCPT TO of the delivery: to, cc and bcc, each once, in that order."""
    return list(delivery.envelope.recipients())


def build_message(
    delivery: Delivery,
    subject: str,
    text_body: str,
    html_body: str | None,
    sender: Sender,
    *,
    now: datetime,
) -> EmailMessage:
    """Build the message for one delivery; raises ValueError if a header would be unsafe."""
    envelope = delivery.envelope
    if not envelope.to:
        raise ValueError("a message needs at least one To recipient")
    message = EmailMessage(policy=MESSAGE_POLICY)
    _set_header(message, "From", _from_address(sender))
    _set_header(message, "To", ", ".join(envelope.to))
    if envelope.cc:
        _set_header(message, "Cc", ", ".join(envelope.cc))
    if envelope.reply_to:
        _set_header(message, "Reply-To", ", ".join(envelope.reply_to))
    _set_header(message, "Subject", subject)
    _set_header(message, "Date", format_datetime(now if now.tzinfo else now.replace(tzinfo=UTC)))
    _set_header(message, "Message-ID", message_id_for(delivery.delivery_id, sender.domain))
    _set_header(message, "MIME-Version", "1.0")

    message.set_content(text_body, subtype="plain", charset="utf-8")
    inline = [a for a in delivery.attachments if a.inline and a.content_id]
    regular = [a for a in delivery.attachments if not (a.inline and a.content_id)]
    if html_body is not None:
        message.add_alternative(html_body, subtype="html", charset="utf-8")
        if inline:
            html_part = message.get_body(preferencelist=("html",))
            if html_part is None:  # pragma: no cover - add_alternative just created it
                raise RuntimeError("the HTML part is missing")
            for attachment in inline:
                maintype, subtype = _content_type(attachment)
                _check_header_value("attachment filename", attachment.filename)
                _check_header_value("attachment content_id", attachment.content_id or "")
                html_part.add_related(
                    _decode(attachment),
                    maintype=maintype,
                    subtype=subtype,
                    cid=f"<{attachment.content_id}>",
                    disposition="inline",
                    filename=attachment.filename,
                )
    else:
        # Nothing can reference an inline part without HTML: send it as a file.
        regular = list(delivery.attachments)
    for attachment in regular:
        maintype, subtype = _content_type(attachment)
        _check_header_value("attachment filename", attachment.filename)
        message.add_attachment(
            _decode(attachment),
            maintype=maintype,
            subtype=subtype,
            filename=attachment.filename,
        )
    return message


def _check_header_value(name: str, value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{name} must not contain CR or LF (header injection refused)")


def _set_header(message: EmailMessage, name: str, value: str | Address) -> None:
    _check_header_value(name, str(value))
    try:
        message[name] = value
    except (ValueError, IndexError) as error:  # the email package's guard, or unparsable
        raise ValueError(f"{name} header refused: {error}") from None


def _from_address(sender: Sender) -> Address:
    # A structured Address, not formataddr(): the policy re-parses a string value,
    # and an encoded non-ASCII name holding "<", ">" or quotes would come out as
    # a different address. From the Address the policy encodes the name itself.
    _check_header_value("From", sender.email)
    _check_header_value("From", sender.name or "")
    try:
        return Address(display_name=sender.name or "", addr_spec=sender.email)
    except (ValueError, IndexError) as error:
        raise ValueError(f"From header refused: {error}") from None


def _content_type(attachment: Attachment) -> tuple[str, str]:
    maintype, _, subtype = attachment.content_type.lower().partition("/")
    if not maintype or not subtype or maintype in _OPAQUE_MAINTYPES:
        return "application", "octet-stream"
    return maintype, subtype


def _decode(attachment: Attachment) -> bytes:
    try:
        return base64.b64decode(attachment.content_base64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"attachment {attachment.filename!r} is not valid base64") from None
