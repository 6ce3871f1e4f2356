"""How validation errors are put into words: 400 bodies and malformed-command records.

A person reads these (a caller's developer, an operator), so a rule is said in
words, never as the regular expression behind it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from mailcore.contracts.auth import LoginCodeDeliveryRequest
from mailcore.contracts.stream import (
    AttachmentPayload,
    MalformedCommand,
    RenderedPayload,
    TemplatePayload,
    decode_command,
)
from mailcore.http_api import describe_validation_errors
from tests.support.commands import command, rendered_payload, template_payload


def test_each_problem_is_named_by_its_field() -> None:
    message = describe_validation_errors(
        [
            {"loc": ("body", "email"), "type": "value_error", "msg": "Value error, bad domain"},
            {"loc": ("body", "channel"), "type": "extra_forbidden", "msg": "Extra inputs"},
            {"loc": ("header", "idempotency-key"), "type": "missing", "msg": "Field required"},
        ]
    )
    assert message == (
        "email: bad domain; channel: unknown field; header Idempotency-Key is required"
    )


def test_invalid_json_and_a_missing_body_get_plain_sentences() -> None:
    assert (
        describe_validation_errors([{"loc": ("body", 1), "type": "json_invalid", "msg": "x"}])
        == "request body is not valid JSON"
    )
    assert (
        describe_validation_errors([{"loc": ("body",), "type": "missing", "msg": "Field required"}])
        == "request body is required"
    )


def test_submitted_values_are_never_quoted() -> None:
    message = describe_validation_errors(
        [
            {
                "loc": ("body", "code"),
                "type": "string_too_long",
                "msg": "String should have at most 32 characters",
                "input": "TOPSECRET-CODE-TOPSECRET-CODE-TOPSECRET",
            }
        ]
    )
    assert "TOPSECRET" not in message
    assert message == "code: String should have at most 32 characters"


def test_a_parameter_is_named_as_the_caller_wrote_it() -> None:
    message = describe_validation_errors(
        [
            {"loc": ("query", "limit"), "type": "less_than_equal", "msg": "Input should be <= 200"},
            {"loc": ("path", "delivery_id"), "type": "string_shape", "msg": "must be an id"},
        ]
    )
    assert message == "limit: Input should be <= 200; delivery_id: must be an id"


def test_a_pattern_error_that_slips_through_never_shows_its_expression() -> None:
    # Given pydantic's own pattern error, which quotes the expression
    error = {
        "loc": ("header", "idempotency-key"),
        "type": "string_pattern_mismatch",
        "msg": "String should match pattern '^[\\x21-\\x7e]+$'",
    }
    # Then the 400 message says the value is out of format, without the expression
    assert describe_validation_errors([error]) == (
        "header Idempotency-Key is not in the accepted format"
    )


def pattern_constraints(schema: Any) -> Iterator[str]:
    """Every `pattern` constraint pydantic itself would check (and quote when refusing)."""
    if isinstance(schema, dict):
        if schema.get("type") == "str" and "pattern" in schema:
            yield str(schema["pattern"])
        for value in schema.values():
            yield from pattern_constraints(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from pattern_constraints(item)


@pytest.mark.parametrize(
    "model", [LoginCodeDeliveryRequest, RenderedPayload, TemplatePayload, AttachmentPayload]
)
def test_no_contract_refuses_with_a_raw_pattern(model: type[BaseModel]) -> None:
    # Given the validation schema of a contract the callers and producers meet
    # Then no string rule in it is a bare pattern (each is a Shape, refused in words)
    assert list(pattern_constraints(model.__pydantic_core_schema__)) == []


def login_code_refusal(**changes: object) -> str:
    body = {"email": "ada@example.com", "code": "482913", "locale": "en", **changes}
    with pytest.raises(ValidationError) as raised:
        LoginCodeDeliveryRequest.model_validate(body)
    return describe_validation_errors(raised.value.errors(include_input=False))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("code", "48 29 13", "code: must be 4 to 32 characters: letters, digits or '-'"),
        (
            "locale",
            "english please",
            "locale: must be a language tag such as en, pt-BR or en_US: 2 or 3 letters, "
            "then subtags of 1 to 8 letters or digits, at most 35 characters",
        ),
    ],
)
def test_a_refused_login_code_field_is_said_in_words(field: str, value: str, message: str) -> None:
    assert login_code_refusal(**{field: value}) == message


def stream_refusal(fields: dict[str, str]) -> MalformedCommand:
    raw = [(name.encode(), value.encode()) for name, value in fields.items()]
    result = decode_command("1-1", raw)
    assert isinstance(result, MalformedCommand), result
    return result


ATTACHMENT = {"filename": "a.pdf", "content_type": "application/pdf", "content_base64": "aGk="}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            command(1, idempotency_key="two words"),
            "idempotency_key: must be 1 to 128 visible ASCII characters "
            "(no spaces or control characters)",
        ),
        (
            command(1, requested_at_ms="yesterday"),
            "requested_at_ms: must be a time in milliseconds since the Unix epoch: 1 to 15 digits",
        ),
        (
            command(1, request_id="r\u00e9q"),
            "request_id: must be 1 to 128 visible ASCII characters "
            "(no spaces or control characters)",
        ),
        (
            command(1, mode="template", payload=template_payload(template_id="Account.Reset")),
            "template_id: must be a template id such as account.password_reset: 1 to 100 "
            "lower-case letters, digits, '.', '_' or '-', starting with a letter or digit",
        ),
        (
            command(1, mode="template", payload=template_payload(locale="de_DE.UTF-8")),
            "locale: must be a language tag such as en, pt-BR or en_US: 2 or 3 letters, "
            "then subtags of 1 to 8 letters or digits, at most 35 characters",
        ),
        (
            command(
                1,
                mode="template",
                payload=template_payload(variables={"first-name": "Ada"}, secret_variables=[]),
            ),
            "variables.first-name.[key]: must be a variable name: a letter or '_', then "
            "letters, digits or '_', at most 64 characters",
        ),
        (
            command(1, payload=rendered_payload(attachments=[{**ATTACHMENT, "filename": "a/b"}])),
            "attachments.0.filename: must be a file name of 1 to 255 characters, "
            "without '/' or '\\'",
        ),
        (
            command(
                1, payload=rendered_payload(attachments=[{**ATTACHMENT, "content_type": "pdf"}])
            ),
            "attachments.0.content_type: must be a media type such as application/pdf or "
            "image/png, at most 127 characters",
        ),
        (
            command(
                1,
                payload=rendered_payload(
                    attachments=[{**ATTACHMENT, "inline": True, "content_id": "<logo>"}]
                ),
            ),
            "attachments.0.content_id: must be a content id such as logo@example.com: letters, "
            "digits, '.', '_', '%', '+' or '-', then optionally '@' and a domain; "
            "at most 128 characters",
        ),
    ],
)
def test_a_malformed_command_record_says_what_is_wrong_in_words(
    fields: dict[str, str], message: str
) -> None:
    # When a stream entry is refused, Then its record's message reads as a sentence
    refusal = stream_refusal(fields)
    assert refusal.message == message
    assert "pattern" not in refusal.message
    assert "^" not in json.dumps(refusal.message)
