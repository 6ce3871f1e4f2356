"""Strict decoding of stream entries, without Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mailcore.contracts.stream import (
    CommandLimits,
    DeliveryCommand,
    FailureCode,
    MalformedCommand,
    RenderedPayload,
    TemplatePayload,
    decode_command,
)
from mailcore.domain.model import PayloadMode, Source
from tests.support.commands import command, rendered_payload, template_payload


def pairs(fields: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    return [
        (name.encode(), value if isinstance(value, bytes) else str(value).encode())
        for name, value in fields.items()
    ]


def decoded(fields: dict[str, Any], limits: CommandLimits | None = None) -> DeliveryCommand:
    result = decode_command("1-1", pairs(fields), limits)
    assert isinstance(result, DeliveryCommand), result
    return result


def refused(fields: dict[str, Any] | list[tuple[bytes, bytes]], **limits: int) -> MalformedCommand:
    raw = fields if isinstance(fields, list) else pairs(fields)
    result = decode_command("1-1", raw, CommandLimits(**limits) if limits else None)
    assert isinstance(result, MalformedCommand), result
    return result


def test_both_payload_modes_decode_into_typed_commands() -> None:
    rendered = decoded(command(1))
    assert rendered.payload_mode is PayloadMode.RENDERED
    assert isinstance(rendered.payload, RenderedPayload)
    assert rendered.source is Source.NOTIFICATION
    assert rendered.requested_at_ms == 1795338900000
    assert rendered.template_id is None

    template = decoded(command(2, mode="template"))
    assert isinstance(template.payload, TemplatePayload)
    assert template.template_id == "account.password_reset"
    assert template.payload.secret_variables == ["reset_token"]


def test_tracing_metadata_stays_out_of_the_fingerprint() -> None:
    first = decoded(command(1))
    retraced = decoded(command(1, request_id="req-other", trace_id="trace-other"))
    untraced = dict(command(1))
    del untraced["request_id"], untraced["trace_id"]
    assert first.fingerprint() == retraced.fingerprint() == decoded(untraced).fingerprint()


def test_the_fingerprint_ignores_json_formatting_but_not_content() -> None:
    compact = command(1, payload_json=json.dumps(rendered_payload(), separators=(",", ":")))
    spaced = command(1, payload_json=json.dumps(rendered_payload(), indent=4))
    assert decoded(compact).fingerprint() == decoded(spaced).fingerprint()
    changed = command(1, payload=rendered_payload(text_body="Other text"))
    assert decoded(changed).fingerprint() != decoded(compact).fingerprint()
    assert decoded(command(1, requested_at_ms="1")).fingerprint() != decoded(compact).fingerprint()


def test_a_repeated_field_name_is_refused() -> None:
    raw = [*pairs(command(1)), (b"source", b"notification")]
    refusal = refused(raw)
    assert refusal.failure_code is FailureCode.INVALID_FIELD
    assert "repeated field(s): source" in refusal.message


@pytest.mark.parametrize(
    ("limits", "payload", "code"),
    [
        ({"max_recipients": 2}, rendered_payload(), FailureCode.TOO_MANY_RECIPIENTS),
        ({"max_subject_chars": 5}, rendered_payload(), FailureCode.INVALID_SUBJECT),
        ({"max_attachment_bytes": 10}, rendered_payload(), FailureCode.ATTACHMENTS_TOO_LARGE),
    ],
)
def test_limits_are_configurable(
    limits: dict[str, int], payload: dict[str, Any], code: FailureCode
) -> None:
    # Given a command the defaults accept
    decoded(command(1, payload=payload))
    # When the limits are tighter, Then it is refused for the right reason
    assert refused(command(1, payload=payload), **limits).failure_code is code


def test_secret_variables_must_name_variables() -> None:
    payload = template_payload(secret_variables=["not_there"])
    refusal = refused(command(1, mode="template", payload=payload))
    assert refusal.failure_code is FailureCode.INVALID_PAYLOAD
    assert "not_there" in refusal.message


def test_content_ids_must_be_unique() -> None:
    attachment = {
        "filename": "a.png",
        "content_type": "image/png",
        "content_base64": "aGk=",
        "inline": True,
        "content_id": "same@example.com",
    }
    payload = rendered_payload(attachments=[attachment, {**attachment, "filename": "b.png"}])
    assert refused(command(1, payload=payload)).failure_code is FailureCode.INVALID_ATTACHMENT


@pytest.mark.parametrize(
    "filename", ["../etc/passwd", "a\r\nContent-Type: text/html", "", "x" * 256]
)
def test_attachment_filenames_cannot_carry_paths_or_header_breaks(filename: str) -> None:
    attachment = {"filename": filename, "content_type": "text/plain", "content_base64": "aGk="}
    payload = rendered_payload(attachments=[attachment])
    assert refused(command(1, payload=payload)).failure_code is FailureCode.INVALID_ATTACHMENT


def test_refusal_messages_never_quote_variable_values() -> None:
    payload = template_payload(locale="nope nope")
    refusal = refused(command(1, mode="template", payload=payload))
    assert "tok-SECRET-7781" not in refusal.message
    assert "tok-SECRET-7781" not in json.dumps(dict(refusal.raw_fields))


def test_deeply_nested_json_is_refused_not_crashed() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    refusal = refused(command(1, payload_json=deep))
    assert refusal.failure_code is FailureCode.INVALID_JSON


def test_an_oversized_payload_is_refused_before_parsing() -> None:
    # Given a payload_json past the size any valid command could have
    limits = CommandLimits(max_attachment_bytes=0)
    huge = "{" + " " * (limits.max_payload_chars + 1) + "}"
    # Then it is refused as too large, not parsed
    refusal = refused(command(1, payload_json=huge), max_attachment_bytes=0)
    assert refusal.failure_code is FailureCode.PAYLOAD_TOO_LARGE
    assert len(refusal.raw_fields["payload_json"]) < 1100


@pytest.mark.parametrize(
    "payload",
    [
        '{"to":["a@example.com"],"variables":{"reset_token":"tok-SECRET-1"}',  # cut short
        '["tok-SECRET-1"]',
        '"tok-SECRET-1"',
    ],
)
def test_a_payload_that_is_not_a_json_object_is_hidden_from_operators(payload: str) -> None:
    # Given a stream entry whose payload_json is not a JSON object, carrying a secret
    fields = {**command(1), "payload_json": payload}

    # When it is decoded
    result = refused(fields)

    # Then its record shows the payload's size, not its text
    assert "tok-SECRET-1" not in json.dumps(result.raw_fields)
    assert result.raw_fields["payload_json"] == (
        f"[{len(payload)} characters hidden: not a JSON object]"
    )


# -- what a Go producer writes (the Notification service's publisher) ---------------------
#
# Go's encoders write an unset optional value as its zero value: a nil slice
# or map as JSON null, a string as "". Its route ids, which become delivery
# ids, contain ':' (`email:<notification id>:<user id>`), and a locale may come
# POSIX-style (`en_US`).

GO_DELIVERY_ID = "email:1775240000000-0:user/42"


@pytest.mark.parametrize("absent", ["", "null"])
def test_optional_stream_fields_written_empty_or_null_are_absent(absent: str) -> None:
    # Given a command whose request_id and trace_id are written as the Go zero value
    fields = command(1, request_id=absent, trace_id=absent)
    # When it is decoded
    result = decoded(fields)
    # Then both are absent, and the command is the one that leaves them out
    assert (result.request_id, result.trace_id) == (None, None)
    left_out = {k: v for k, v in fields.items() if k not in {"request_id", "trace_id"}}
    assert result.fingerprint() == decoded(left_out).fingerprint()


@pytest.mark.parametrize("absent", ["", None])
@pytest.mark.parametrize(
    ("mode", "key"),
    [
        ("rendered", "cc"),
        ("rendered", "bcc"),
        ("rendered", "reply_to"),
        ("rendered", "html_body"),
        ("rendered", "attachments"),
        ("template", "locale"),
        ("template", "variables"),
        ("template", "secret_variables"),
        ("template", "attachments"),
    ],
)
def test_optional_payload_keys_written_empty_or_null_are_absent(
    mode: str, key: str, absent: str | None
) -> None:
    # Given a payload with one optional key written as "" or null
    base = rendered_payload() if mode == "rendered" else template_payload(variables={})
    base = {k: v for k, v in base.items() if k != "secret_variables"}
    left_out = {k: v for k, v in base.items() if k != key}
    # When it is decoded
    result = decoded(command(1, mode=mode, payload={**left_out, key: absent}))
    # Then it is the same command as one that leaves the key out
    assert result.payload == decoded(command(1, mode=mode, payload=left_out)).payload
    assert result.fingerprint() == decoded(command(1, mode=mode, payload=left_out)).fingerprint()


@pytest.mark.parametrize("absent", ["", None])
def test_optional_attachment_keys_written_empty_or_null_are_absent(absent: str | None) -> None:
    attachment = {"filename": "a.pdf", "content_type": "application/pdf", "content_base64": "aGk="}
    payload = rendered_payload(attachments=[{**attachment, "inline": absent, "content_id": absent}])
    [decoded_attachment] = decoded(command(1, payload=payload)).payload.attachments
    assert (decoded_attachment.inline, decoded_attachment.content_id) == (False, None)


@pytest.mark.parametrize(
    ("mode", "key", "code"),
    [
        ("rendered", "to", FailureCode.INVALID_RECIPIENT),
        ("rendered", "subject", FailureCode.INVALID_SUBJECT),
        ("rendered", "text_body", FailureCode.INVALID_PAYLOAD),
        ("template", "template_id", FailureCode.INVALID_PAYLOAD),
    ],
)
def test_a_required_payload_key_written_null_is_still_refused(
    mode: str, key: str, code: FailureCode
) -> None:
    payload = rendered_payload() if mode == "rendered" else template_payload()
    assert refused(command(1, mode=mode, payload={**payload, key: None})).failure_code is code


def test_an_absent_locale_renders_in_the_default_one() -> None:
    payload = {k: v for k, v in template_payload().items() if k != "locale"}
    result = decoded(command(1, mode="template", payload=payload))
    assert isinstance(result.payload, TemplatePayload)
    assert result.payload.locale is None


@pytest.mark.parametrize(
    ("given", "stored"),
    [("en_US", "en-US"), ("pt_BR", "pt-BR"), ("de-AT", "de-AT"), ("zh_Hant_TW", "zh-Hant-TW")],
)
def test_a_posix_style_locale_is_taken_as_its_bcp47_tag(given: str, stored: str) -> None:
    result = decoded(command(1, mode="template", payload=template_payload(locale=given)))
    assert isinstance(result.payload, TemplatePayload)
    assert result.payload.locale == stored
    # and the two spellings are one command
    same = decoded(command(1, mode="template", payload=template_payload(locale=stored)))
    assert result.fingerprint() == same.fingerprint()


@pytest.mark.parametrize(
    "delivery_id",
    [GO_DELIVERY_ID, "email:{p1}:}{", "a<b@c>", "~", "x" * 256, "-leading-dash", "%2F"],
)
def test_a_delivery_id_is_any_visible_ascii_up_to_256_characters(delivery_id: str) -> None:
    assert decoded(command(1, delivery_id=delivery_id)).delivery_id == delivery_id


@pytest.mark.parametrize("delivery_id", ["", "x" * 257, "a b", "tab\there", "é", "line\n"])
def test_a_delivery_id_outside_visible_ascii_is_refused_in_words(delivery_id: str) -> None:
    refusal = refused(command(1, delivery_id=delivery_id))
    assert refusal.failure_code is FailureCode.INVALID_FIELD
    assert refusal.message == (
        "delivery_id: must be 1 to 256 visible ASCII characters (no spaces or control characters)"
    )
