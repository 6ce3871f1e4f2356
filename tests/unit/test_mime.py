"""The MIME message of a delivery: headers, body structure, attachments, injection."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP, default
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcore.domain.model import (
    Attachment,
    Delivery,
    Envelope,
    PayloadMode,
    Source,
)
from mailcore.domain.states import DeliveryStatus
from mailcore.mail import Sender, build_message, envelope_recipients, message_id_for
from mailcore.mail.mime import WIRE_POLICY

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


def written(message: EmailMessage) -> bytes:
    """The message as the SMTP provider writes it (less a Bcc header, which it never has)."""
    return message.as_bytes(policy=WIRE_POLICY)


def wire(message: EmailMessage) -> EmailMessage:
    """The message as a receiving server parses it."""
    return BytesParser(EmailMessage, policy=default).parsebytes(written(message))


def header_lines(message: EmailMessage) -> list[bytes]:
    """Every physical line of the top-level header section, as written."""
    return written(message).split(b"\r\n\r\n", 1)[0].split(b"\r\n")


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
        raw = written(message)

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
        raw = written(message)
        assert raw.isascii()  # encoded words, never raw UTF-8 in headers
        sender = wire(message)["From"].addresses[0]
        assert (sender.display_name, sender.addr_spec) == (name, "alerts@example.com")

    def test_from_without_display_name(self) -> None:
        parsed = wire(build(sender=Sender("alerts@example.com")))
        assert str(parsed["From"]) == "alerts@example.com"

    def test_utf8_subject(self) -> None:
        subject = "Ihr Anmeldecode — Grüße ✓ 你好"
        message = build(subject=subject)
        assert written(message).isascii()
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

    @pytest.mark.parametrize(
        ("delivery_id", "message_id"),
        [
            ("email:1775240000000-0:user/42", "<email=3A1775240000000-0=3Auser/42@x.com>"),
            ("a<b@c>", "<a=3Cb=40c=3E@x.com>"),
            ("x=3A", "<x=3D3A@x.com>"),
            ('q"(c)[d],;\\', "<q=22=28c=29=5Bd=5D=2C=3B=5C@x.com>"),
            ("dlv_01M80V1YDYEAMXQ6J5FPNQF0NS", "<dlv_01M80V1YDYEAMXQ6J5FPNQF0NS@x.com>"),
            ("ntf.inv_2024-0042", "<ntf.inv_2024-0042@x.com>"),
        ],
    )
    def test_a_producers_id_is_escaped_into_a_valid_message_id(
        self, delivery_id: str, message_id: str
    ) -> None:
        # Given a delivery id a producer chose (any visible ASCII)
        # Then the Message-ID keeps RFC 5322 atext and escapes the rest as =XX, so
        # two ids never share one, and the ids the service makes stay as they are
        assert message_id_for(delivery_id, "x.com") == message_id
        message = build(make_delivery(delivery_id=delivery_id))
        assert message["Message-ID"] == message_id.replace("x.com", "mail.example.com")

    @pytest.mark.parametrize(
        ("delivery_id", "domain"),
        [("", "x.com"), ("a b", "x.com"), ("a\r\nb", "x.com"), ("a", "x<y")],
    )
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
        raw = written(message)
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
        raw = written(build(text="one\ntwo\n"))
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


class TestWireForm:
    """Headers are encoded once, into their wire form; bodies are stored transfer-encoded."""

    def test_every_line_is_ascii_and_at_most_78_characters(self) -> None:
        delivery = make_delivery(
            to=tuple(f"recipient-number-{n}@subdomain.example.com" for n in range(6)),
            cc=("carol@example.com",),
            reply_to=("support@example.com",),
            attachments=(
                Attachment("ü" * 120 + ".pdf", "application/pdf", b64(PDF)),
                Attachment("x" * 150 + ".png", "image/png", b64(PNG), inline=True, content_id="l"),
            ),
        )
        message = build(
            delivery,
            subject="Grüße — " + "a long subject line " * 12,
            text="plain " * 100 + "\n",
            html="<p>" + "html " * 100 + "</p>",
            sender=Sender("alerts@example.com", "Zoë from the accounts department, Example Inc."),
        )
        data = written(message)
        assert data.isascii()
        assert max(len(line) for line in data.split(b"\r\n")) <= 78

    @pytest.mark.parametrize(
        "subject",
        [
            "Your order  with  double  spaces " * 6,
            "x" * 300,
            "Ihr Anmeldecode — Grüße " * 8,
            "😀" * 40 + "漢字" * 30,
            "a\x00b\x0bc\x7fd\x85e\u2028f\tg",
            "=?utf-8?q?Hello=0D=0ABcc:_eve@example.org?=",
        ],
        ids=[
            "ascii-folded",
            "one-long-word",
            "latin",
            "astral-and-cjk",
            "controls",
            "ew-lookalike",
        ],
    )
    def test_a_subject_comes_back_exactly(self, subject: str) -> None:
        message = build(subject=subject)
        assert wire(message)["Subject"] == subject
        lines = header_lines(message)
        assert all(b"\x00" not in line and b"\x7f" not in line for line in lines)
        assert max(len(line) for line in lines) <= 78

    def test_a_subject_with_control_characters_never_carries_them_raw(self) -> None:
        (subject_line,) = (
            line for line in header_lines(build(subject="a\x0bb\x1fc")) if b"Subject" in line
        )
        assert subject_line.startswith(b"Subject: =?utf-8?b?")
        assert all(0x20 <= byte < 0x7F for byte in subject_line)

    @pytest.mark.parametrize(
        "filename",
        [
            'a"b\\c.pdf',
            "x" * 200 + ".pdf",
            "ü" * 200 + ".pdf",
            "tab\there.pdf",
            "nel\x85and\u2028separators.pdf",
            "=?utf-8?q?evil=0D=0A.exe?=",
            'invoice.pdf"; filename="evil.exe',
            "emoji 😀.png",
            "semi;colon, comma (paren) 100%.pdf",
        ],
    )
    def test_a_file_name_comes_back_exactly(self, filename: str) -> None:
        delivery = make_delivery(attachments=(Attachment(filename, "application/pdf", b64(PDF)),))
        message = build(delivery)
        (attachment,) = wire(message).iter_attachments()
        assert attachment.get_filename() == filename
        assert attachment.get_payload(decode=True) == PDF
        assert max(len(line) for line in written(message).split(b"\r\n")) <= 78

    def test_control_characters_in_a_display_name_become_spaces(self) -> None:
        message = build(sender=Sender("alerts@example.com", "Eve\x1f\x7f\x85 <eve@example.org>"))
        (from_line,) = (line for line in header_lines(message) if line.startswith(b"From:"))
        assert all(0x20 <= byte < 0x7F for byte in from_line)
        (sender,) = wire(message)["From"].addresses
        assert (sender.display_name, sender.addr_spec) == (
            "Eve    <eve@example.org>",
            "alerts@example.com",
        )

    def test_many_recipients_are_folded_after_commas(self) -> None:
        addresses = tuple(f"recipient-number-{n}@subdomain.example.com" for n in range(8))
        message = build(make_delivery(to=addresses, cc=addresses[:3]))
        parsed = wire(message)
        assert [a.addr_spec for a in parsed["To"].addresses] == list(addresses)
        assert [a.addr_spec for a in parsed["Cc"].addresses] == list(addresses[:3])
        assert max(len(line) for line in header_lines(message)) <= 78

    def test_an_address_that_is_not_a_plain_addr_spec_goes_through_the_registry(self) -> None:
        parsed = wire(build(make_delivery(to=('"john doe"@example.com',))))
        assert [a.addr_spec for a in parsed["To"].addresses] == ['"john doe"@example.com']

    @pytest.mark.parametrize(
        "address",
        ["alice@example.com, eve@example.org", "Eve <eve@example.org>", "a\x00b@example.com"],
    )
    def test_an_address_that_would_be_more_or_other_than_one_is_refused(self, address: str) -> None:
        with pytest.raises(ValueError, match="To"):
            build(make_delivery(to=(address,)))

    def test_a_content_id_with_angle_brackets_is_refused(self) -> None:
        delivery = make_delivery(
            attachments=(
                Attachment("a.png", "image/png", b64(PNG), inline=True, content_id="a><b"),
            )
        )
        with pytest.raises(ValueError, match="content_id"):
            build(delivery, html="<p>x</p>")

    @pytest.mark.parametrize("content_type", ["text/html; charset=x", "image/", "a b/c", ""])
    def test_an_unusual_content_type_is_sent_as_octet_stream(self, content_type: str) -> None:
        delivery = make_delivery(attachments=(Attachment("a.bin", content_type, b64(PDF)),))
        (part,) = wire(build(delivery)).iter_attachments()
        assert part.get_content_type() == "application/octet-stream"
        assert part.get_payload(decode=True) == PDF

    def test_long_ascii_lines_go_out_quoted_printable(self) -> None:
        text = "x" * 300 + "\n" + "tail with trailing space \n"
        message = build(text=text)
        parsed = wire(message)
        assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
        assert crlf_to_lf(parsed.get_content()) == text
        assert max(len(line) for line in written(message).split(b"\r\n")) <= 78

    def test_control_characters_in_a_body_are_never_sent_as_7bit(self) -> None:
        parsed = wire(build(text="a\x00b\x1bc\n"))
        assert parsed["Content-Transfer-Encoding"] != "7bit"
        assert crlf_to_lf(parsed.get_content()) == "a\x00b\x1bc\n"

    def test_mostly_non_latin_text_goes_out_base64(self) -> None:
        text = "你好世界" * 50 + "\n"
        parsed = wire(build(text=text))
        assert parsed["Content-Transfer-Encoding"] == "base64"
        assert crlf_to_lf(parsed.get_content()) == text

    def test_a_boundary_never_occurs_in_a_7bit_body(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # A text that happens to hold the first random token: another one is drawn.
        tokens = iter(["a" * 24, "b" * 24])
        monkeypatch.setattr("mailcore.mail.mime.secrets.token_hex", lambda _: next(tokens))
        text = "--=_1." + "a" * 24 + "\n"
        parsed = wire(build(text=text, html="<p>x</p>"))
        assert parsed.get_boundary() == "=_1." + "b" * 24
        plain, _ = parsed.iter_parts()
        assert crlf_to_lf(plain.get_content()) == text

    def test_reading_a_header_gives_the_parsed_header(self) -> None:
        delivery = make_delivery(to=("alice@example.com", "bob@example.com"))
        message = build(delivery, subject="Grüße ✓")
        assert [a.addr_spec for a in message["To"].addresses] == [
            "alice@example.com",
            "bob@example.com",
        ]
        assert message["Subject"] == "Grüße ✓"
        assert message["Date"].datetime == NOW
        assert message.get_content_type() == "text/plain"

    def test_any_email_policy_writes_an_equivalent_message(self) -> None:
        delivery = make_delivery(
            cc=("carol@example.com",),
            attachments=(
                Attachment("logo.png", "image/png", b64(PNG), inline=True, content_id="logo"),
                Attachment("résumé.pdf", "application/pdf", b64(PDF)),
            ),
        )
        message = build(delivery, subject="Grüße", text="Grüße\n", html="<p>Grüße</p>")

        def summary(data: bytes) -> list[tuple[list[tuple[str, str]], object]]:
            parsed = BytesParser(EmailMessage, policy=default).parsebytes(data)
            return [
                (
                    [(k, str(v)) for k, v in part.items() if k != "Content-Type"],
                    None if part.is_multipart() else part.get_payload(decode=True),
                )
                for part in parsed.walk()
            ]

        expected = summary(written(message))
        assert summary(message.as_bytes(policy=SMTP)) == expected
        assert summary(message.as_bytes()) == expected


class TestWirePolicy:
    """What the SMTP provider writes messages with: raw values only when they are safe."""

    def test_a_raw_value_with_a_line_break_is_never_written_raw(self) -> None:
        message = build()
        message.set_raw("X-Note", "a\r\nBcc: eve@example.org\r\n\r\nbody")
        data = written(message)
        assert b"\r\nBcc:" not in data
        parsed = wire(message)
        assert "Bcc" not in parsed
        assert parsed["X-Note"] == "aBcc: eve@example.orgbody"
        assert crlf_to_lf(parsed.get_content()) == "Thanks for your order.\n"

    def test_a_non_ascii_raw_value_is_encoded(self) -> None:
        message = build()
        message.set_raw("X-Note", "Grüße")
        assert written(message).isascii()
        assert wire(message)["X-Note"] == "Grüße"

    def test_a_header_added_the_usual_way_is_encoded_by_the_registry(self) -> None:
        message = build()
        message["X-Note"] = "Grüße " * 30
        data = written(message)
        assert data.isascii()
        assert wire(message)["X-Note"] == "Grüße " * 30

    def test_a_message_built_elsewhere_is_written_as_smtp_writes_it(self) -> None:
        message = EmailMessage()
        message["From"] = "Zoë <zoe@example.com>"
        message["To"] = "alice@example.com"
        message["Subject"] = "Grüße " * 20
        message.set_content("Grüße\n")
        message.add_attachment(PDF, maintype="application", subtype="pdf", filename="ü.pdf")
        assert message.as_bytes(policy=WIRE_POLICY) == message.as_bytes(policy=SMTP)


HOSTILE_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\r\n"),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(subject=HOSTILE_TEXT, filename=HOSTILE_TEXT.filter(bool), name=HOSTILE_TEXT)
def test_any_subject_file_name_or_display_name_stays_in_its_header(
    subject: str, filename: str, name: str
) -> None:
    delivery = make_delivery(
        cc=("carol@example.com",),
        attachments=(Attachment(filename, "application/pdf", b64(PDF)),),
    )
    message = build(delivery, subject=subject, sender=Sender("alerts@example.com", name or None))
    data = written(message)

    assert data.isascii()
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    head = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b"")
    assert all(0x20 <= byte < 0x7F for byte in head.replace(b"\r\n", b""))
    parsed = BytesParser(EmailMessage, policy=default).parsebytes(data)
    assert [k.lower() for k in parsed] == [
        *("from", "to", "cc", "subject", "date", "message-id", "mime-version", "content-type")
    ]
    assert [a.addr_spec for a in parsed["From"].addresses] == ["alerts@example.com"]
    assert [a.addr_spec for a in parsed["To"].addresses] == ["alice@example.com"]
    assert [a.addr_spec for a in parsed["Cc"].addresses] == ["carol@example.com"]
    # Exactly, but for blanks after "Subject:" when it is not encoded (readers drop them).
    assert parsed["Subject"] in (subject, subject.lstrip(" "))
    [attachment] = parsed.iter_attachments()
    assert attachment.get_filename() == as_read(filename)
    assert attachment.get_payload(decode=True) == PDF


def as_read(filename: str) -> str:
    """A file name as Python's reader gives it back: unwrapped from one "..." or <...>, stripped."""
    if len(filename) > 1 and filename[0] + filename[-1] in ('""', "<>"):
        filename = filename[1:-1]
    return filename.strip()
