"""Turn a delivery and its rendered content into one RFC 5322 message.

The shape:

- text only: one ``text/plain`` part;
- text and HTML: ``multipart/alternative`` (plain first, HTML preferred);
- inline attachments (with HTML): the HTML part becomes ``multipart/related``
  holding the HTML and the inline parts, each with ``Content-ID: <id>`` and
  ``Content-Disposition: inline``, so ``cid:`` references in the HTML resolve;
- regular attachments: everything above wrapped in ``multipart/mixed``.

Bcc recipients appear only in the SMTP envelope (:func:`envelope_recipients`),
never as a header.

Why headers and bodies are encoded here and not by :mod:`email`'s modern API
(``EmailMessage.set_content`` and the header registry): that API parses every
header it is given into a header object and refolds it when the message is
written, about 2.5 ms per message, more than the rest of an attempt's own
work. Here each header value is encoded once, straight into its wire form
(ASCII, folded with CRLF at most 78 characters a line), and stored raw
(``set_raw``); bodies are stored already transfer-encoded; the standard
library's generator then writes the parts as they are with
:data:`WIRE_POLICY`. The encoders are small and limited to what this service
sends: RFC 2047 ``B`` words for a non-ASCII subject, RFC 2231 for a file
name, quoted-printable or base64 (both from :mod:`binascii`) for bodies. Less
common values (a display name, an address that is not a plain dot-atom
addr-spec) still go through the header registry, which is correct for every
case and only slow.

Header injection: a subject, file name, display name or address with CR or
LF is a :class:`ValueError` before anything is built (callers sanitise
subjects and file names at intake, so valid deliveries never meet it). Every
other control character in a subject or file name is encoded (RFC 2047 or
RFC 2231), never written raw; in a display name it becomes a space; an
address with one is refused.
:data:`WIRE_POLICY` writes a raw value as it is only if it cannot start a new
header line; anything else it re-encodes with the header registry.
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.policy import SMTP, EmailPolicy
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote

from mailcore.domain.model import Attachment, Delivery

__all__ = [
    "MESSAGE_POLICY",
    "WIRE_POLICY",
    "Sender",
    "build_message",
    "envelope_recipients",
    "message_id_for",
]

# The policy of every message built here: email.policy.SMTP (CRLF line ends,
# RFC 2047 headers), 7-bit clean, so reading a header gives the usual header
# object (message["Date"].datetime, message["To"].addresses).
MESSAGE_POLICY = SMTP.clone(cte_type="7bit")

# Lines of the header section: RFC 5322 asks for at most 78 characters, allows 998.
_FOLD_AT = 78
_MAX_LINE = 998

# Attachments of these major types cannot be carried as base64 leaves.
_OPAQUE_MAINTYPES = frozenset({"multipart", "message"})
# RFC 6838 restricted-name characters (after lower-casing): a type and subtype
# made of anything else are sent as application/octet-stream.
_MEDIA_TOKEN = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*")

# A plain addr-spec: dot-atom local part, domain of letters, digits, hyphens and
# dots (what the intake contracts accept). Written as it is; any other address
# goes through the header registry.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
)
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# A Message-ID half: visible ASCII without <, > and @.
_MESSAGE_ID_PART = re.compile(r"[\x21-\x3b\x3d\x3f\x41-\x7e]+")
# Characters of a delivery id that the Message-ID escapes as =XX: all but
# RFC 5322 atext and '.', and '=' itself (a producer's id is any visible ASCII,
# `email:abc` or `a<b@c` too). The ids the service makes never need it.
_NOT_ATEXT = re.compile(r"[^A-Za-z0-9!#$%&'*+/?^_`{|}~.-]")
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
# A Content-ID: visible ASCII without < and >.
_CONTENT_ID = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]+")
# A header value that can be written as it is: printable ASCII (and tabs),
# every line break a CRLF followed by a space or tab (folding), so it can never
# end the header or start another one.
_WIRE_READY = re.compile(r"[\t\x20-\x7e]*(?:\r\n[\t ][\t\x20-\x7e]*)*")
# What EmailPolicy.header_fetch_parse removes before it parses a raw value.
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
# Bytes that keep an ASCII body from going out as 7bit (CR and LF are line ends).
_BODY_CONTROLS = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# RFC 2231 attribute-char beyond what urllib.parse.quote always keeps (A-Za-z0-9_.-~).
_RFC2231_SAFE = "!#$&+^`{|}"


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
    if not _VISIBLE_ASCII.fullmatch(delivery_id) or not _MESSAGE_ID_PART.fullmatch(domain):
        raise ValueError(
            "a Message-ID needs a delivery id of visible ASCII and a domain of visible ASCII"
            " without <, >, @ or spaces"
        )
    left = _NOT_ATEXT.sub(lambda found: f"={ord(found.group()):02X}", delivery_id)
    return f"<{left}@{domain}>"


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
    """Build the message for one delivery; raises ValueError if a header would be unsafe.

    Its headers are stored in their wire form; reading one gives the parsed
    header as usual. Write it with :data:`WIRE_POLICY` (the SMTP provider
    does), or any ``email`` policy.
    """
    envelope = delivery.envelope
    if not envelope.to:
        raise ValueError("a message needs at least one To recipient")
    headers = [
        ("From", _from_value(sender.email, sender.name or "")),
        ("To", _address_list("To", envelope.to)),
    ]
    if envelope.cc:
        headers.append(("Cc", _address_list("Cc", envelope.cc)))
    if envelope.reply_to:
        headers.append(("Reply-To", _address_list("Reply-To", envelope.reply_to)))
    headers += [
        ("Subject", _unstructured("Subject", subject)),
        ("Date", format_datetime(now if now.tzinfo else now.replace(tzinfo=UTC))),
        ("Message-ID", message_id_for(delivery.delivery_id, sender.domain)),
        ("MIME-Version", "1.0"),
    ]

    body: _Leaf | _Multipart = _text_part(text_body, "plain")
    inline = [a for a in delivery.attachments if a.inline and a.content_id]
    regular = [a for a in delivery.attachments if not (a.inline and a.content_id)]
    if html_body is not None:
        html: _Leaf | _Multipart = _text_part(html_body, "html")
        if inline:
            html = _Multipart("related", [html, *(_attachment(a, inline=True) for a in inline)])
        body = _Multipart("alternative", [body, html])
    else:
        # Nothing can reference an inline part without HTML: send it as a file.
        regular = list(delivery.attachments)
    if regular:
        body = _Multipart("mixed", [body, *(_attachment(a, inline=False) for a in regular)])

    message = EmailMessage(policy=MESSAGE_POLICY)
    for name, value in headers:
        message.set_raw(name, value)
    _materialise(body, message, _boundary_token(body), itertools.count(1))
    return message


# --------------------------------------------------------------------------- writing


class _WirePolicy(EmailPolicy):
    """email.policy.SMTP for writing a message as it goes on the wire.

    A raw header value that is already in wire form (see ``_WIRE_READY``) is
    written as it is, without being parsed and refolded; any other value (a
    header object, or a raw string that is not ASCII or not safely folded) is
    encoded by the header registry, as SMTP would. While the generator writes,
    it reads Content-Type (its boundary) and Content-Transfer-Encoding as
    plain strings: no header object is made for that either.
    """

    def header_fetch_parse(self, name: str, value: Any) -> Any:
        if hasattr(value, "name"):
            return value
        return "".join(_LINE_BREAKS.split(value))

    def fold(self, name: str, value: Any) -> str:
        if _is_raw_and_ready(name, value):
            return self._as_is(name, value)
        folded: str = super().fold(name, self._header(name, value))
        return folded

    def fold_binary(self, name: str, value: Any) -> bytes:
        if _is_raw_and_ready(name, value):
            return self._as_is(name, value).encode("ascii")
        return super().fold_binary(name, self._header(name, value))

    def _as_is(self, name: str, value: str) -> str:
        line = f"{name}: {value}\r\n"
        return line if self.linesep == "\r\n" else line.replace("\r\n", self.linesep)

    def _header(self, name: str, value: Any) -> Any:
        if hasattr(value, "name"):
            return value
        # Never written raw: line breaks removed, then parsed and encoded.
        return self.header_factory(name, "".join(_LINE_BREAKS.split(value)))


# The policy the SMTP provider writes messages with (CRLF, ASCII headers).
WIRE_POLICY = _WirePolicy(linesep="\r\n")


def _is_raw_and_ready(name: str, value: Any) -> bool:
    return isinstance(value, str) and not hasattr(value, "name") and _is_wire_ready(name, value)


def _is_wire_ready(name: str, value: str) -> bool:
    if not _WIRE_READY.fullmatch(value):
        return False
    room = _MAX_LINE - len(name) - 2
    return len(value) <= room or max(len(line) for line in value.split("\r\n")) <= room


# --------------------------------------------------------------------------- headers


def _check_header_value(name: str, value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{name} must not contain CR or LF (header injection refused)")


@functools.lru_cache(maxsize=16)
def _from_value(email: str, name: str) -> str:
    # The sender is the same for every message of a process, so the header
    # registry's price is paid once. A structured Address, not formataddr(): a
    # string would be re-parsed, and an encoded non-ASCII name holding "<", ">"
    # or quotes would come out as a different address. Control characters
    # become spaces: the registry would write an ASCII one as it is, and no
    # display name needs one.
    _check_header_value("From", email)
    _check_header_value("From", name)
    try:
        address = Address(display_name=_CONTROL.sub(" ", name), addr_spec=email)
    except (ValueError, IndexError) as error:
        raise ValueError(f"From header refused: {error}") from None
    return _registry_encoded("From", address)


def _address_list(name: str, addresses: tuple[str, ...]) -> str:
    for address in addresses:
        _check_header_value(name, address)
        if _CONTROL.search(address):
            raise ValueError(f"{name} must not contain control characters")
    if all(_PLAIN_ADDRESS.fullmatch(a) and "=?" not in a for a in addresses):
        return _fold_list(name, addresses)
    try:
        # One Address per string: an address can never become two recipients.
        parsed = [Address(addr_spec=address) for address in addresses]
    except (ValueError, IndexError) as error:
        raise ValueError(f"{name} header refused: {error}") from None
    return _registry_encoded(name, parsed)


def _unstructured(name: str, text: str) -> str:
    """Printable ASCII as it is (folded at spaces); anything else as RFC 2047 words."""
    _check_header_value(name, text)
    if text.isascii() and text.isprintable() and "=?" not in text:
        folded = _fold_at_spaces(name, text)
        if folded is not None:
            return folded
    return _encoded_words(name, text)


def _fold_list(name: str, items: tuple[str, ...]) -> str:
    """``a, b, c``, folded after a comma where a line would pass 78 characters."""
    lines, line = [], f"{name}:"
    last = len(items) - 1
    for number, item in enumerate(items):
        piece = f" {item}," if number < last else f" {item}"
        if len(line) + len(piece) > _FOLD_AT and line.endswith(","):
            lines.append(line)
            line = ""
        line += piece
    lines.append(line)
    return "\r\n".join(lines)[len(name) + 2 :]


def _fold_at_spaces(name: str, text: str) -> str | None:
    """Fold before spaces (unfolding gives the text back); None if a word is too long."""
    if len(name) + 2 + len(text) <= _FOLD_AT:
        return text
    words = text.split(" ")
    lines, line = [], f"{name}: {words[0]}"
    for word in words[1:]:
        if len(line) + 1 + len(word) > _FOLD_AT and line.strip():
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    if max(map(len, lines)) > _FOLD_AT:
        return None
    return "\r\n".join(lines)[len(name) + 2 :]


def _encoded_words(name: str, text: str) -> str:
    """RFC 2047 ``B`` words of whole UTF-8 characters, one a line, each line ≤ 78.

    Readers join adjacent encoded words without the folding between them, so
    the text comes back exactly; no character (CR, LF or any other) is raw.
    """
    data = text.encode("utf-8")
    # "Name: " + "=?utf-8?b?" + base64 + "?=" fits on the first line.
    size = (_FOLD_AT - len(name) - 2 - 12) // 4 * 3
    words = []
    start = 0
    while start < len(data):
        end = min(start + size, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # inside a character
            end -= 1
        words.append(f"=?utf-8?b?{base64.b64encode(data[start:end]).decode('ascii')}?=")
        start = end
    return "\r\n ".join(words)


def _registry_encoded(name: str, value: object) -> str:
    """The value encoded and folded by the header registry, without ``Name: ``."""
    try:
        header = MESSAGE_POLICY.header_factory(name, value)
        folded: str = header.fold(policy=MESSAGE_POLICY)
    except (ValueError, IndexError, TypeError) as error:
        raise ValueError(f"{name} header refused: {error}") from None
    encoded = folded[len(name) + 1 :].removesuffix("\r\n").removeprefix(" ")
    if not _is_wire_ready(name, encoded):
        raise ValueError(f"{name} header refused: it does not encode to a safe header")
    return encoded


# --------------------------------------------------------------------------- parts


@dataclass(slots=True)
class _Leaf:
    headers: list[tuple[str, str]]
    body: str  # transfer-encoded, CRLF line ends
    seven_bit: bool = False  # the body is the text itself (may hold anything)


@dataclass(slots=True)
class _Multipart:
    subtype: str
    parts: list[_Leaf | _Multipart]


def _text_part(text: str, subtype: str) -> _Leaf:
    cte, body = _encode_text(text)
    return _Leaf(
        [("Content-Type", f'text/{subtype}; charset="utf-8"'), ("Content-Transfer-Encoding", cte)],
        body,
        seven_bit=cte == "7bit",
    )


def _encode_text(text: str) -> tuple[str, str]:
    """UTF-8 text as 7bit if it is short-lined ASCII, else quoted-printable or base64.

    The same choice as email.contentmanager for a 7-bit policy: no server
    needs 8BITMIME, and lines stay within 78 characters.
    """
    lines = text.encode("utf-8").splitlines()
    data = b"\r\n".join(lines) + b"\r\n"
    if (
        data.isascii()
        and max(map(len, lines), default=0) <= _FOLD_AT
        and not _BODY_CONTROLS.search(data)
    ):
        return "7bit", data.decode("ascii")
    quoted = binascii.b2a_qp(data, istext=True)  # CRLF in, CRLF (and "=" CRLF) out
    encoded_size = (len(data) + 2) // 3 * 4
    if len(quoted) <= encoded_size + (encoded_size + 75) // 76 * 2:  # base64 with its CRLFs
        return "quoted-printable", quoted.decode("ascii")
    return "base64", _base64_lines(data).decode("ascii")


def _base64_lines(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _attachment(attachment: Attachment, *, inline: bool) -> _Leaf:
    maintype, subtype = _content_type(attachment)
    _check_header_value("attachment filename", attachment.filename)
    headers = [
        ("Content-Type", f"{maintype}/{subtype}"),
        ("Content-Transfer-Encoding", "base64"),
        ("Content-Disposition", _disposition("inline" if inline else "attachment", attachment)),
    ]
    if inline:
        content_id = attachment.content_id or ""
        _check_header_value("attachment content_id", content_id)
        if not _CONTENT_ID.fullmatch(content_id):
            raise ValueError("attachment content_id must be visible ASCII without < or >")
        headers.append(("Content-ID", f"<{content_id}>"))
    return _Leaf(headers, _base64_lines(_decode(attachment)).decode("ascii"))


def _disposition(kind: str, attachment: Attachment) -> str:
    params = _filename_params(attachment.filename)
    one_line = f"{kind}; " + "; ".join(params)
    if len("Content-Disposition: ") + len(one_line) <= _FOLD_AT:
        return one_line
    return f"{kind};\r\n " + ";\r\n ".join(params)


def _filename_params(filename: str) -> list[str]:
    """``filename="..."`` for printable ASCII, else RFC 2231 (continued if long)."""
    if filename.isascii() and filename.isprintable() and "=?" not in filename:
        quoted = '"' + filename.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if len(f" filename={quoted};") <= _FOLD_AT:
            return [f"filename={quoted}"]
    encoded = quote(filename, safe=_RFC2231_SAFE, encoding="utf-8", errors="strict")
    if len(f" filename*=utf-8''{encoded};") <= _FOLD_AT:
        return [f"filename*=utf-8''{encoded}"]
    # Continuations (filename*0*=, filename*1*=, ...), split between characters.
    room = _FOLD_AT - len(" filename*00*=;")
    segments, segment = [], "utf-8''"
    for character in filename:
        piece = quote(character, safe=_RFC2231_SAFE, encoding="utf-8", errors="strict")
        if len(segment) + len(piece) > room:
            segments.append(segment)
            segment = ""
        segment += piece
    segments.append(segment)
    return [f"filename*{number}*={segment}" for number, segment in enumerate(segments)]


def _content_type(attachment: Attachment) -> tuple[str, str]:
    maintype, _, subtype = attachment.content_type.lower().partition("/")
    if (
        not _MEDIA_TOKEN.fullmatch(maintype)
        or not _MEDIA_TOKEN.fullmatch(subtype)
        or maintype in _OPAQUE_MAINTYPES
    ):
        return "application", "octet-stream"
    return maintype, subtype


def _decode(attachment: Attachment) -> bytes:
    try:
        return base64.b64decode(attachment.content_base64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"attachment {attachment.filename!r} is not valid base64") from None


def _boundary_token(body: _Leaf | _Multipart) -> str:
    """Random, and (checked) in no 7bit body; QP and base64 never hold "=_"."""
    texts = [part.body for part in _leaves(body) if part.seven_bit]
    while True:
        token = secrets.token_hex(12)
        if not any(token in text for text in texts):
            return token


def _leaves(part: _Leaf | _Multipart) -> list[_Leaf]:
    if isinstance(part, _Leaf):
        return [part]
    return [leaf for child in part.parts for leaf in _leaves(child)]


def _materialise(
    part: _Leaf | _Multipart, into: EmailMessage, token: str, numbers: Iterator[int]
) -> None:
    """Store a part's wire-form headers and body into a message object."""
    if isinstance(part, _Leaf):
        for name, value in part.headers:
            into.set_raw(name, value)
        into.set_payload(part.body)
        return
    # The number first: no boundary is a prefix of another.
    boundary = f"=_{next(numbers)}.{token}"
    into.set_raw("Content-Type", f'multipart/{part.subtype}; boundary="{boundary}"')
    children: list[Message | str] = []
    for child in part.parts:
        message = EmailMessage(policy=MESSAGE_POLICY)
        _materialise(child, message, token, numbers)
        children.append(message)
    into.set_payload(children)
