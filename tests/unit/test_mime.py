"""The MIME message of a delivery: headers, body structure, attachments, injection."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP, default
from email.utils import parsedate_to_datetime

import pytest

from mailcore.domain.model import (
    Attachment,
    Delivery,
    Envelope,
    PayloadMode,
    Source,
)
from mailcore.domain.states import DeliveryStatus
from mailcore.mail import Sender, build_message, envelope_recipients, message_id_for

NOW = datetime(2026, 11, 22, 9, 15, 0, tzinfo=UTC)
SENDER = Sender("no-reply@mail.example.com", "Example Mail")
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
PDF = b"%PDF-1.7\n" + bytes(range(255, -1, -1))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def make_delivery(
    *,
    delivery_id: str = "dlv_01JD8X3Q4W5E6R7T8Y9U0I1O2P",
    to: tuple[str, ...] = ("alice@example.com",),
    cc: tuple[str, ...] = (),
    bcc: tuple[str, ...] = (),
    reply_to: tuple[str, ...] = (),
    attachments: tuple[Attachment, ...] = (),
) -> Delivery:
    return Delivery(
        delivery_id=delivery_id,
        source=Source.NOTIFICATION,
        status=DeliveryStatus.RENDERED,
        payload_mode=PayloadMode.RENDERED,
        envelope=Envelope(to=to, cc=cc, bcc=bcc, reply_to=reply_to),
        idempotency_key="key-1",
        created_at_ms=1_795_338_900_000,
        updated_at_ms=1_795_338_900_000,
        attachments=attachments,
    )


def wire(message: EmailMessage) -> EmailMessage:
    """The message as a receiving server parses it."""
    return BytesParser(EmailMessage, policy=default).parsebytes(message.as_bytes(policy=SMTP))


def crlf_to_lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def build(
    delivery: Delivery | None = None,
    *,
    subject: str = "Your receipt",
    text: str = "Thanks for your order.",
    html: str | None = None,
    sender: Sender = SENDER,
) -> EmailMessage:
    return build_message(delivery or make_delivery(), subject, text, html, sender, now=NOW)


class TestHeaders:
    def test_from_to_cc_reply_to_subject_and_date(self) -> None:
        delivery = make_delivery(
            to=("alice@example.com", "bob@example.com"),
            cc=("carol@example.com",),
            reply_to=("support@example.com",),
        )
        parsed = wire(build(delivery))

        sender = parsed["From"].addresses[0]
        assert (sender.display_name, sender.addr_spec) == (
            "Example Mail",
            "no-reply@mail.example.com",
        )
        assert [a.addr_spec for a in parsed["To"].addresses] == [
            "alice@example.com",
            "bob@example.com",
        ]
        assert [a.addr_spec for a in parsed["Cc"].addresses] == ["carol@example.com"]
        assert [a.addr_spec for a in parsed["Reply-To"].addresses] == ["support@example.com"]
        assert parsed["Subject"] == "Your receipt"
        assert parsedate_to_datetime(parsed["Date"]) == NOW
        assert parsed["MIME-Version"] == "1.0"

    def test_optional_headers_are_absent_when_empty(self) -> None:
        parsed = wire(build())
        assert "Cc" not in parsed
        assert "Reply-To" not in parsed

    def test_bcc_is_never_a_header_but_is_in_the_envelope(self) -> None:
        delivery = make_delivery(
            to=("alice@example.com",), cc=("carol@example.com",), bcc=("hidden@example.com",)
        )
        message = build(delivery)
        raw = message.as_bytes(policy=SMTP)

        assert "Bcc" not in message
        assert b"hidden@example.com" not in raw
        assert envelope_recipients(delivery) == [
            "alice@example.com",
            "carol@example.com",
            "hidden@example.com",
        ]

    def test_envelope_recipients_are_listed_once(self) -> None:
        delivery = make_delivery(
            to=("alice@example.com", "bob@example.com"),
            cc=("bob@example.com",),
            bcc=("alice@example.com", "dave@example.com"),
        )
        assert envelope_recipients(delivery) == [
            "alice@example.com",
            "bob@example.com",
            "dave@example.com",
        ]

    @pytest.mark.parametrize(
        "name",
        [
            "Zoë Ünicode",
            "山田 太郎",
            "Acme, Inc.",
            'The "Best" Shop',
            "Zoë, Inc.",
            "Ω <alerts@evil.example>",
            'Ω "q" \\ x',
        ],
    )
    def test_display_names_survive_the_wire(self, name: str) -> None:
        message = build(sender=Sender("alerts@example.com", name))
        raw = message.as_bytes(policy=SMTP)
        assert raw.isascii()  # encoded words, never raw UTF-8 in headers
        sender = wire(message)["From"].addresses[0]
        assert (sender.display_name, sender.addr_spec) == (name, "alerts@example.com")

    def test_from_without_display_name(self) -> None:
        parsed = wire(build(sender=Sender("alerts@example.com")))
        assert str(parsed["From"]) == "alerts@example.com"

    def test_utf8_subject(self) -> None:
        subject = "Ihr Anmeldecode — Grüße ✓ 你好"
        message = build(subject=subject)
        assert message.as_bytes(policy=SMTP).isascii()
        assert wire(message)["Subject"] == subject

    def test_date_of_an_aware_non_utc_time(self) -> None:
        now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
        message = build_message(make_delivery(), "s", "t", None, SENDER, now=now)
        assert message["Date"].endswith("+0200")
        assert parsedate_to_datetime(message["Date"]) == now


class TestMessageId:
    def test_format_and_domain_of_the_sender(self) -> None:
        message = build(make_delivery(delivery_id="dlv_abc"))
        assert message["Message-ID"] == "<dlv_abc@mail.example.com>"
        assert message_id_for("dlv_abc", "mail.example.com") == "<dlv_abc@mail.example.com>"

    def test_stable_across_attempts_of_one_delivery(self) -> None:
        delivery = make_delivery(delivery_id="dlv_same")
        first = build_message(delivery, "s", "t", None, SENDER, now=NOW)
        retry = build_message(delivery, "s", "t", None, SENDER, now=NOW + timedelta(minutes=5))
        assert first["Message-ID"] == retry["Message-ID"]
        assert first["Date"] != retry["Date"]

    def test_a_resend_clone_has_its_own(self) -> None:
        parent = build(make_delivery(delivery_id="dlv_parent"))
        clone = build(make_delivery(delivery_id="dlv_clone"))
        assert parent["Message-ID"] != clone["Message-ID"]

    @pytest.mark.parametrize(("delivery_id", "domain"), [("", "x.com"), ("a<b", "x.com")])
    def test_refuses_unsafe_parts(self, delivery_id: str, domain: str) -> None:
        with pytest.raises(ValueError, match="Message-ID"):
            message_id_for(delivery_id, domain)


class TestBody:
    def test_text_only_is_a_single_text_plain_part(self) -> None:
        parsed = wire(build(text="Hello Alice,\nyour order shipped.\n"))
        assert parsed.get_content_type() == "text/plain"
        assert not parsed.is_multipart()
        assert crlf_to_lf(parsed.get_content()) == "Hello Alice,\nyour order shipped.\n"

    def test_text_and_html_are_alternatives(self) -> None:
        parsed = wire(build(text="plain version", html="<p>html version</p>"))
        assert parsed.get_content_type() == "multipart/alternative"
        parts = list(parsed.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        plain, html = (p.get_content() for p in parts)
        assert plain.strip() == "plain version"
        assert html.strip() == "<p>html version</p>"

    def test_non_ascii_bodies_are_utf8_and_7bit_clean(self) -> None:
        text = "Grüße aus Köln — 你好 ✓\n"
        html = "<p>Grüße — 你好 ✓</p>\n"
        message = build(text=text, html=html)
        raw = message.as_bytes(policy=SMTP)
        assert raw.isascii()  # quoted-printable or base64: no server needs 8BITMIME
        parsed = wire(message)
        plain_part = parsed.get_body(preferencelist=("plain",))
        html_part = parsed.get_body(preferencelist=("html",))
        assert isinstance(plain_part, EmailMessage)
        assert isinstance(html_part, EmailMessage)
        assert plain_part.get_content_charset() == "utf-8"
        assert crlf_to_lf(plain_part.get_content()) == text
        assert crlf_to_lf(html_part.get_content()) == html

    def test_lines_end_with_crlf_on_the_wire(self) -> None:
        raw = build(text="one\ntwo\n").as_bytes(policy=SMTP)
        assert b"\r\n" in raw
        assert b"\n" not in raw.replace(b"\r\n", b"")


class TestAttachments:
    def test_regular_attachments_decode_to_the_original_bytes(self) -> None:
        delivery = make_delivery(
            attachments=(
                Attachment("invoice.pdf", "application/pdf", b64(PDF)),
                Attachment("résumé notes.txt", "text/plain", b64("naïve\n".encode())),
            )
        )
        parsed = wire(build(delivery, html="<p>see attached</p>"))

        assert parsed.get_content_type() == "multipart/mixed"
        attachments = list(parsed.iter_attachments())
        assert [a.get_filename() for a in attachments] == ["invoice.pdf", "résumé notes.txt"]
        assert [a.get_content_type() for a in attachments] == ["application/pdf", "text/plain"]
        assert attachments[0].get_content_disposition() == "attachment"
        assert attachments[0].get_payload(decode=True) == PDF
        assert attachments[1].get_payload(decode=True) == "naïve\n".encode()
        body = parsed.get_body(preferencelist=("html",))
        assert body is not None
        assert body.get_content().strip() == "<p>see attached</p>"

    def test_attachments_with_a_text_only_body(self) -> None:
        delivery = make_delivery(attachments=(Attachment("a.pdf", "application/pdf", b64(PDF)),))
        parsed = wire(build(delivery))
        assert parsed.get_content_type() == "multipart/mixed"
        first, second = parsed.iter_parts()
        assert first.get_content_type() == "text/plain"
        assert second.get_filename() == "a.pdf"
        assert second.get_payload(decode=True) == PDF

    def test_inline_parts_sit_with_the_html_in_multipart_related(self) -> None:
        delivery = make_delivery(
            attachments=(
                Attachment("logo.png", "image/png", b64(PNG), inline=True, content_id="logo"),
                Attachment("terms.pdf", "application/pdf", b64(PDF)),
            )
        )
        html = '<p><img src="cid:logo" alt="Logo"></p>'
        parsed = wire(build(delivery, text="plain", html=html))

        assert parsed.get_content_type() == "multipart/mixed"
        alternative, attachment = parsed.iter_parts()
        assert alternative.get_content_type() == "multipart/alternative"
        plain, related = alternative.iter_parts()
        assert plain.get_content_type() == "text/plain"
        assert related.get_content_type() == "multipart/related"
        html_part, image = related.iter_parts()
        assert html_part.get_content_type() == "text/html"
        assert html_part.get_content().strip() == html
        assert image.get_content_type() == "image/png"
        assert image["Content-ID"] == "<logo>"
        assert image.get_content_disposition() == "inline"
        assert image.get_filename() == "logo.png"
        assert image.get_payload(decode=True) == PNG
        assert attachment.get_filename() == "terms.pdf"
        assert attachment.get_content_disposition() == "attachment"
        # Readers prefer the related HTML, where the cid: reference resolves.
        preferred = parsed.get_body()
        assert preferred is not None
        assert preferred.get_content_type() == "multipart/related"

    def test_inline_without_html_becomes_a_regular_attachment(self) -> None:
        delivery = make_delivery(
            attachments=(
                Attachment("logo.png", "image/png", b64(PNG), inline=True, content_id="logo"),
            )
        )
        parsed = wire(build(delivery, html=None))
        assert parsed.get_content_type() == "multipart/mixed"
        (image,) = parsed.iter_attachments()
        assert image.get_content_disposition() == "attachment"
        assert image.get_filename() == "logo.png"
        assert image.get_payload(decode=True) == PNG

    def test_container_types_are_sent_as_opaque_bytes(self) -> None:
        delivery = make_delivery(
            attachments=(Attachment("fwd.eml", "message/rfc822", b64(b"Subject: x\r\n\r\nhi")),)
        )
        (part,) = wire(build(delivery)).iter_attachments()
        assert part.get_content_type() == "application/octet-stream"
        assert part.get_payload(decode=True) == b"Subject: x\r\n\r\nhi"

    def test_invalid_base64_is_a_value_error(self) -> None:
        delivery = make_delivery(attachments=(Attachment("a.bin", "application/pdf", "not*b64"),))
        with pytest.raises(ValueError, match="base64"):
            build(delivery)


class TestHeaderInjection:
    @pytest.mark.parametrize(
        "subject",
        [
            "Hello\r\nBcc: victim@example.com",
            "Hello\nBcc: victim@example.com",
            "Hello\rX-Evil: 1",
        ],
    )
    def test_a_subject_with_cr_or_lf_is_refused(self, subject: str) -> None:
        with pytest.raises(ValueError, match="Subject"):
            build(subject=subject)

    def test_a_display_name_with_a_line_break_is_refused(self) -> None:
        with pytest.raises(ValueError, match="From"):
            build(sender=Sender("alerts@example.com", "Alerts\r\nBcc: victim@example.com"))

    def test_an_attachment_filename_with_a_line_break_is_refused(self) -> None:
        delivery = make_delivery(
            attachments=(Attachment("a.pdf\r\nX-Evil: 1", "application/pdf", b64(PDF)),)
        )
        with pytest.raises(ValueError, match="filename"):
            build(delivery)

    def test_an_address_with_a_line_break_is_refused(self) -> None:
        delivery = make_delivery(to=("alice@example.com\r\nBcc: victim@example.com",))
        with pytest.raises(ValueError, match="To"):
            build(delivery)
