"""docs/asyncapi.yaml, the command stream contract, says what the decoder does.

The decoder (mailcore.contracts.stream) is the source of truth. These tests fail
when the document drifts from it: a field added, dropped or made optional, a
new failure code or payload mode, a changed default limit, an example that no
longer decodes, or a pattern that accepts what the decoder refuses (or the
reverse).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from jsonschema import Draft7Validator, ValidationError, validators  # type: ignore[import-untyped]
from pydantic import BaseModel
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from mailcore.config import Settings
from mailcore.contracts.stream import (
    ACCEPTED_SOURCES,
    MAX_BODY_CHARS,
    MAX_VARIABLES,
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    AttachmentPayload,
    CommandLimits,
    DeliveryCommand,
    FailureCode,
    MalformedCommand,
    RenderedPayload,
    TemplatePayload,
    decode_command,
)
from mailcore.domain.model import PayloadMode

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCUMENT_PATH = REPO_ROOT / "docs" / "asyncapi.yaml"
DOCUMENT_URI = DOCUMENT_PATH.as_uri()


def load_document() -> dict[str, Any]:
    document = yaml.safe_load(DOCUMENT_PATH.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


DOCUMENT = load_document()
SCHEMAS: dict[str, Any] = DOCUMENT["components"]["schemas"]
MESSAGE: dict[str, Any] = DOCUMENT["components"]["messages"]["deliveryCommand"]
ENTRY_SCHEMA: dict[str, Any] = MESSAGE["payload"]
ENTRY_POINTER = "/components/messages/deliveryCommand/payload"
MODE_SCHEMAS = {PayloadMode.RENDERED: "RenderedPayload", PayloadMode.TEMPLATE: "TemplatePayload"}
MODELS: dict[str, type[BaseModel]] = {
    "RenderedPayload": RenderedPayload,
    "TemplatePayload": TemplatePayload,
    "Attachment": AttachmentPayload,
}
REGISTRY: Registry[Any] = Registry().with_resource(
    DOCUMENT_URI, Resource.from_contents(DOCUMENT, default_specification=DRAFT7)
)


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    # JSON Schema patterns are ECMA 262, where `$` ends the text; Python's `$` also
    # matches before a final newline, which would let "id\n" through.
    if not isinstance(instance, str):
        return
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    if not re.search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


EcmaDraft7Validator: Any = validators.extend(Draft7Validator, {"pattern": _ecma_pattern})


def validator_for(pointer: str) -> Any:
    """A draft-07 validator for the schema at ``pointer``, resolving the document's $refs."""
    return EcmaDraft7Validator({"$ref": f"{DOCUMENT_URI}#{pointer}"}, registry=REGISTRY)


def resolve(pointer: str) -> Any:
    node: Any = DOCUMENT
    for part in pointer.removeprefix("#/").split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), f"{pointer}: {key} is not inside an object"
        assert key in node, f"{pointer} does not resolve: no {key!r}"
        node = node[key]
    return node


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def examples() -> dict[str, dict[str, Any]]:
    return {example["name"]: example["payload"] for example in MESSAGE["examples"]}


def example_for(mode: PayloadMode) -> dict[str, str]:
    for name, payload in examples().items():
        if payload.get("payload_mode") == mode.value:
            strings = {key: value for key, value in payload.items() if isinstance(value, str)}
            assert strings == payload, f"example {name}: every stream field must be a string"
            return strings
    raise AssertionError(f"the document has no example of payload_mode {mode.value}")


def encode(fields: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """The entry as XADD stores it and XREAD returns it: field/value pairs of bytes."""
    return [(name.encode("utf-8"), value.encode("utf-8")) for name, value in fields.items()]


def document_allows(fields: Mapping[str, str]) -> bool:
    """Whether a producer that follows only the document would think the entry valid."""
    if not validator_for(ENTRY_POINTER).is_valid(dict(fields)):
        return False
    try:
        payload = json.loads(fields["payload_json"])
    except json.JSONDecodeError:
        return False
    schema = MODE_SCHEMAS[PayloadMode(fields["payload_mode"])]
    return bool(validator_for(f"/components/schemas/{schema}").is_valid(payload))


# -- the document as a whole ------------------------------------------------------------


def test_the_document_is_asyncapi_3_with_the_agreed_title_and_version() -> None:
    # Given the parsed document
    info = DOCUMENT["info"]
    # Then it is AsyncAPI 3.0.0 with the agreed identity
    assert DOCUMENT["asyncapi"] == "3.0.0"
    assert info["title"] == "Mail service command stream"
    assert info["version"] == "1.0.0"
    # And its description covers how entries are added, deduplicated, refused and
    # trimmed, and how a Go producer's values are read
    for topic in [
        "XADD",
        "fingerprint",
        "idempotency_conflict",
        "MAXLEN",
        "XTRIM",
        "MINID",
        "MAIL_STREAM_RETENTION",
        "XDEL",
        '`""` or `null`',
        "en_US",
    ]:
        assert topic in info["description"], topic


def test_every_reference_resolves_inside_the_document() -> None:
    # Given every $ref in the document
    found = list(references(DOCUMENT))
    assert found
    # Then each is a local JSON pointer to something that exists
    for reference in found:
        assert reference.startswith("#/"), reference
        resolve(reference)


def test_the_channel_is_the_default_command_stream_and_the_service_receives_from_it() -> None:
    # Given the one channel and the one operation
    [(channel_id, channel)] = DOCUMENT["channels"].items()
    [operation] = DOCUMENT["operations"].values()
    # Then the channel's address is the stream the service reads by default
    assert channel["address"] == Settings.model_fields["redis_command_stream"].default
    assert "MAIL_REDIS_COMMAND_STREAM" in channel["description"]
    # And the service receives the delivery command from that channel
    assert operation["action"] == "receive"
    assert operation["channel"] == {"$ref": f"#/channels/{channel_id}"}
    assert [resolve(m["$ref"]) for m in operation["messages"]] == [
        {"$ref": "#/components/messages/deliveryCommand"}
    ]


def test_every_schema_in_the_document_is_valid_json_schema_draft_7() -> None:
    # Given the stream entry schema and every component schema
    for name, schema in [("deliveryCommand payload", ENTRY_SCHEMA), *SCHEMAS.items()]:
        # Then each is well formed (a typo in a keyword's value fails here)
        problems = [
            error.message
            for error in Draft7Validator(Draft7Validator.META_SCHEMA).iter_errors(schema)
        ]
        assert problems == [], name


# -- the stream entry -------------------------------------------------------------------


def test_the_stream_entry_has_exactly_the_decoders_fields_all_strings() -> None:
    # Given the schema of one stream entry
    properties: dict[str, Any] = ENTRY_SCHEMA["properties"]
    # Then it lists the decoder's fields, no more, no fewer, and refuses others
    assert set(properties) == set(REQUIRED_FIELDS) | set(OPTIONAL_FIELDS)
    assert set(ENTRY_SCHEMA["required"]) == set(REQUIRED_FIELDS)
    assert ENTRY_SCHEMA["additionalProperties"] is False
    # And every value is a described string, as XADD stores it
    for name, schema in properties.items():
        assert schema["type"] == "string", name
        assert schema.get("description"), name


def test_the_source_enum_is_the_accepted_sources() -> None:
    # Given the source field of the stream entry
    documented = ENTRY_SCHEMA["properties"]["source"]["enum"]
    # Then it names exactly the sources the decoder accepts
    assert set(documented) == {source.value for source in ACCEPTED_SOURCES}
    assert len(documented) == len(set(documented))


def test_the_payload_mode_enum_is_every_payload_mode() -> None:
    # Given the payload_mode field of the stream entry
    documented = ENTRY_SCHEMA["properties"]["payload_mode"]["enum"]
    # Then it names exactly the modes the decoder knows
    assert set(documented) == {mode.value for mode in PayloadMode}
    assert len(documented) == len(set(documented))


def test_payload_json_points_at_one_schema_per_payload_mode() -> None:
    # Given the payload_json field
    payload_json = ENTRY_SCHEMA["properties"]["payload_json"]
    # Then it holds JSON whose shape is one of the per-mode payload schemas
    assert payload_json["contentMediaType"] == "application/json"
    pointed = [option["$ref"] for option in payload_json["contentSchema"]["oneOf"]]
    assert sorted(pointed) == sorted(f"#/components/schemas/{s}" for s in MODE_SCHEMAS.values())


def test_the_documented_limits_are_the_decoders_defaults() -> None:
    # Given the decoder's default limits
    limits = CommandLimits()
    rendered = SCHEMAS["RenderedPayload"]["properties"]
    # Then the document states the same numbers
    assert ENTRY_SCHEMA["properties"]["payload_json"]["maxLength"] == limits.max_payload_chars
    assert rendered["subject"]["maxLength"] == limits.max_subject_chars
    assert rendered["text_body"]["maxLength"] == MAX_BODY_CHARS
    assert rendered["html_body"]["maxLength"] == MAX_BODY_CHARS
    assert SCHEMAS["TemplatePayload"]["properties"]["variables"]["maxProperties"] == MAX_VARIABLES
    assert f"(default {limits.max_recipients})" in SCHEMAS["RenderedPayload"]["description"]


# -- payload_json -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_payload_schema_has_the_models_fields_and_required_fields(name: str) -> None:
    # Given a payload schema and the pydantic model that decodes it
    schema = SCHEMAS[name]
    model = MODELS[name]
    # Then it lists the model's fields, requires those without a default, refuses others
    assert set(schema["properties"]) == set(model.model_fields)
    assert set(schema["required"]) == {
        field_name for field_name, info in model.model_fields.items() if info.is_required()
    }
    assert schema["additionalProperties"] is False


def test_attachments_of_both_payloads_are_attachment_schemas() -> None:
    for name in MODE_SCHEMAS.values():
        attachments = SCHEMAS[name]["properties"]["attachments"]
        assert attachments["items"] == {"$ref": "#/components/schemas/Attachment"}, name


def test_the_failure_codes_are_every_failure_code_each_described() -> None:
    # Given the FailureCode schema
    schema = SCHEMAS["FailureCode"]
    documented = schema["enum"]
    # Then it lists each code the decoder or the store can give, once
    assert set(documented) == {code.value for code in FailureCode}
    assert len(documented) == len(set(documented))
    # And its description list explains each of them
    described = {
        line.strip().removeprefix("- `").split("`", 1)[0]
        for line in schema["description"].splitlines()
        if line.strip().startswith("- `")
    }
    assert described == {code.value for code in FailureCode}


# -- the examples -----------------------------------------------------------------------


def test_there_is_an_example_of_each_payload_mode_and_the_examples_use_every_field() -> None:
    # Given the examples of the message
    payloads = list(examples().values())
    # Then each payload mode has one, and together they show every field
    assert {p["payload_mode"] for p in payloads} == {m.value for m in PayloadMode}
    assert set().union(*payloads) == set(REQUIRED_FIELDS) | set(OPTIONAL_FIELDS)


# What the Go publisher's examples must decode to (tests/e2e/test_go_producer.py
# also delivers each through the local stack).
GO_EXAMPLES: dict[str, dict[str, object]] = {
    "go-rendered-zero-values": {"html_body": None, "attachments": []},
    "go-template-posix-locale": {"locale": "en-US"},
    "go-template-unsupported-locale": {"locale": "de-AT"},
    "go-template-no-locale": {"locale": None},
}


def test_the_go_producers_encodings_are_examples_of_the_document() -> None:
    # Given the examples written the way the Notification service's Go publisher writes
    found = {name: fields for name, fields in examples().items() if name.startswith("go-")}
    assert set(found) == set(GO_EXAMPLES)
    for name, fields in found.items():
        # Then each uses a route id with ':' and writes unset values as "" or null
        assert fields["delivery_id"].startswith("email:"), name
        assert fields["request_id"] in {"", "null"}, name
        assert fields["trace_id"] in {"", "null"}, name
        payload = json.loads(fields["payload_json"])
        assert any(value is None or value == "" for value in payload.values()), name
        # And the decoder takes the zero values as absent
        decoded = decode_command("1775240000000-0", encode(fields))
        assert isinstance(decoded, DeliveryCommand), (name, decoded)
        assert (decoded.request_id, decoded.trace_id) == (None, None), name
        assert (decoded.payload.cc, decoded.payload.bcc, decoded.payload.reply_to) == ([], [], [])
        expected: dict[str, object] = GO_EXAMPLES[name]
        for key, value in expected.items():
            assert getattr(decoded.payload, key) == value, (name, key)


@pytest.mark.parametrize("name", sorted(examples()))
def test_an_example_decodes_to_a_delivery_command_in_the_mode_it_claims(name: str) -> None:
    # Given an example entry, every value a string as XADD stores it
    fields = examples()[name]
    for field_name, value in fields.items():
        assert isinstance(value, str), f"{field_name} is {type(value).__name__}, not a string"
    # When it is read from the stream and decoded
    decoded = decode_command("1730000000000-0", encode(fields))
    # Then it is a delivery command in the mode the example claims
    assert isinstance(decoded, DeliveryCommand), decoded
    mode = PayloadMode(fields["payload_mode"])
    assert decoded.payload_mode is mode
    expected_model = RenderedPayload if mode is PayloadMode.RENDERED else TemplatePayload
    assert isinstance(decoded.payload, expected_model)
    assert decoded.delivery_id == fields["delivery_id"]
    assert decoded.idempotency_key == fields["idempotency_key"]
    # And the document's own schemas accept it too
    assert document_allows(fields)


# -- where the schemas' patterns and limits meet the decoder -----------------------------

ATTACHMENT: dict[str, object] = {
    "filename": "invoice.pdf",
    "content_type": "application/pdf",
    "content_base64": "JVBERi0xLjcK",
}


def attachment(**changes: object) -> list[dict[str, object]]:
    return [{**ATTACHMENT, **changes}]


@dataclass(frozen=True)
class Case:
    """An example entry of ``mode`` with a few changes, and what the decoder makes of it."""

    mode: PayloadMode
    refused_as: FailureCode | None  # None: accepted
    fields: Mapping[str, str] = field(default_factory=dict)  # stream fields set
    payload: Mapping[str, object] = field(default_factory=dict)  # payload_json keys set
    drop_fields: tuple[str, ...] = ()
    drop_keys: tuple[str, ...] = ()

    def entry(self) -> dict[str, str]:
        fields = example_for(self.mode)
        if self.payload or self.drop_keys:
            document = json.loads(fields["payload_json"])
            document.update(self.payload)
            for key in self.drop_keys:
                del document[key]
            fields["payload_json"] = json.dumps(document)
        fields.update(self.fields)
        for name in self.drop_fields:
            del fields[name]
        return fields


R, T = PayloadMode.RENDERED, PayloadMode.TEMPLATE
CODE = FailureCode
CASES = [
    # stream fields
    pytest.param(Case(R, None, fields={"delivery_id": "a" * 256}), id="delivery_id-256"),
    pytest.param(Case(R, CODE.INVALID_FIELD, fields={"delivery_id": "a" * 257}), id="id-257"),
    pytest.param(Case(R, None, fields={"delivery_id": "-x"}), id="id-leading-dash"),
    pytest.param(Case(R, None, fields={"delivery_id": "email:1-0:user/42"}), id="id-go-route"),
    pytest.param(Case(R, None, fields={"delivery_id": "a{p1}<b>@c"}), id="id-braces-brackets"),
    pytest.param(Case(R, CODE.INVALID_FIELD, fields={"delivery_id": "é"}), id="id-accent"),
    pytest.param(Case(R, CODE.INVALID_FIELD, fields={"delivery_id": "a b"}), id="id-space"),
    pytest.param(Case(R, CODE.INVALID_FIELD, fields={"delivery_id": ""}), id="id-empty"),
    pytest.param(Case(R, CODE.INVALID_FIELD, fields={"delivery_id": "a\n"}), id="id-newline"),
    pytest.param(Case(R, None, fields={"idempotency_key": "~" * 128}), id="key-128"),
    pytest.param(Case(R, CODE.INVALID_FIELD, fields={"idempotency_key": "k" * 129}), id="key-129"),
    pytest.param(Case(R, CODE.INVALID_FIELD, fields={"idempotency_key": "a b"}), id="key-space"),
    pytest.param(Case(R, CODE.INVALID_FIELD, fields={"idempotency_key": "clé"}), id="key-accent"),
    pytest.param(Case(R, None, fields={"requested_at_ms": "9" * 15}), id="requested-15-digits"),
    pytest.param(Case(R, CODE.INVALID_FIELD, fields={"requested_at_ms": "9" * 16}), id="req-16"),
    pytest.param(Case(R, CODE.INVALID_FIELD, fields={"requested_at_ms": "-1"}), id="req-negative"),
    pytest.param(Case(R, CODE.INVALID_FIELD, fields={"requested_at_ms": ""}), id="req-empty"),
    pytest.param(Case(R, CODE.INVALID_FIELD, fields={"request_id": "é"}), id="request_id-accent"),
    pytest.param(Case(R, None, fields={"trace_id": ""}), id="trace_id-empty"),
    pytest.param(Case(R, None, fields={"request_id": "", "trace_id": "null"}), id="go-zero-ids"),
    pytest.param(Case(R, CODE.INVALID_FIELD, fields={"trace_id": "t" * 129}), id="trace_id-129"),
    pytest.param(Case(R, None, drop_fields=OPTIONAL_FIELDS), id="no-optional-fields"),
    pytest.param(
        Case(R, CODE.MISSING_FIELD, drop_fields=("idempotency_key",)), id="missing-required"
    ),
    pytest.param(Case(R, CODE.UNKNOWN_FIELD, fields={"priority": "high"}), id="unknown-field"),
    pytest.param(Case(R, CODE.UNSUPPORTED_SOURCE, fields={"source": "billing"}), id="source"),
    pytest.param(
        Case(R, CODE.UNSUPPORTED_PAYLOAD_MODE, fields={"payload_mode": "markdown"}), id="mode"
    ),
    pytest.param(Case(R, CODE.INVALID_JSON, fields={"payload_json": "{to:"}), id="not-json"),
    pytest.param(Case(R, CODE.INVALID_PAYLOAD, fields={"payload_json": "[]"}), id="json-array"),
    pytest.param(
        Case(R, CODE.INVALID_PAYLOAD, fields={"payload_mode": "template"}), id="wrong-mode"
    ),
    # recipients
    pytest.param(Case(R, CODE.INVALID_RECIPIENT, payload={"to": []}), id="to-empty"),
    pytest.param(Case(R, CODE.INVALID_RECIPIENT, payload={"to": "a@example.com"}), id="to-str"),
    pytest.param(Case(R, CODE.INVALID_RECIPIENT, payload={"to": ["ana"]}), id="to-no-at"),
    pytest.param(Case(R, CODE.INVALID_RECIPIENT, payload={"cc": ["a@localhost"]}), id="one-label"),
    pytest.param(
        Case(R, CODE.INVALID_RECIPIENT, payload={"bcc": ['"a b"@example.com']}), id="quoted-local"
    ),
    pytest.param(
        Case(R, CODE.INVALID_RECIPIENT, payload={"reply_to": ["a@[192.0.2.1]"]}), id="literal"
    ),
    pytest.param(Case(R, CODE.INVALID_RECIPIENT, payload={"to": ["a@-x.com"]}), id="label-dash"),
    pytest.param(Case(R, None, payload={"to": ["l" * 64 + "@example.com"]}), id="local-64"),
    pytest.param(
        Case(R, CODE.INVALID_RECIPIENT, payload={"to": ["l" * 65 + "@example.com"]}), id="local-65"
    ),
    pytest.param(Case(R, None, payload={"to": ["O'Hara.x+y@Example.COM"]}), id="to-mixed-case"),
    # rendered content
    pytest.param(Case(R, None, payload={"subject": "s" * 255}), id="subject-255"),
    pytest.param(Case(R, CODE.INVALID_SUBJECT, payload={"subject": "s" * 256}), id="subject-256"),
    pytest.param(Case(R, CODE.INVALID_SUBJECT, payload={"subject": " \t "}), id="subject-blank"),
    pytest.param(Case(R, CODE.INVALID_SUBJECT, payload={"subject": "a\r\nBcc: x"}), id="subj-crlf"),
    pytest.param(Case(R, CODE.INVALID_SUBJECT, payload={"subject": 42}), id="subject-number"),
    pytest.param(Case(R, CODE.INVALID_SUBJECT, drop_keys=("subject",)), id="subject-missing"),
    pytest.param(Case(R, CODE.INVALID_PAYLOAD, payload={"text_body": ""}), id="text-empty"),
    pytest.param(Case(R, None, payload={"html_body": None}), id="html-null"),
    pytest.param(Case(R, None, drop_keys=("html_body", "bcc", "reply_to")), id="defaults"),
    pytest.param(Case(R, None, payload={"html_body": ""}), id="html-empty"),
    pytest.param(
        Case(R, None, payload={"cc": None, "bcc": None, "reply_to": None, "attachments": None}),
        id="go-null-lists",
    ),
    pytest.param(Case(R, CODE.INVALID_RECIPIENT, payload={"to": None}), id="to-null"),
    pytest.param(Case(R, CODE.INVALID_SUBJECT, payload={"subject": ""}), id="subject-empty"),
    pytest.param(Case(R, CODE.INVALID_PAYLOAD, payload={"text_body": None}), id="text-null"),
    pytest.param(Case(R, CODE.UNKNOWN_FIELD, payload={"priority": 1}), id="unknown-key"),
    # attachments
    pytest.param(Case(R, None, payload={"attachments": []}), id="no-attachments"),
    pytest.param(
        Case(R, CODE.INVALID_ATTACHMENT, payload={"attachments": attachment(filename="a/b")}),
        id="filename-slash",
    ),
    pytest.param(
        Case(R, CODE.INVALID_ATTACHMENT, payload={"attachments": attachment(filename="a\\b")}),
        id="filename-backslash",
    ),
    pytest.param(
        Case(R, CODE.INVALID_ATTACHMENT, payload={"attachments": attachment(filename="a\nb")}),
        id="filename-newline",
    ),
    pytest.param(
        Case(R, CODE.INVALID_ATTACHMENT, payload={"attachments": attachment(content_type="pdf")}),
        id="content-type",
    ),
    pytest.param(
        Case(R, CODE.INVALID_ATTACHMENT, payload={"attachments": attachment(content_base64="QQ=")}),
        id="base64-padding",
    ),
    pytest.param(
        Case(
            R, CODE.INVALID_ATTACHMENT, payload={"attachments": attachment(content_base64="QQ==\n")}
        ),
        id="base64-newline",
    ),
    pytest.param(
        Case(R, None, payload={"attachments": attachment(content_base64="")}), id="base64-empty"
    ),
    pytest.param(
        Case(R, CODE.INVALID_ATTACHMENT, payload={"attachments": attachment(inline=True)}),
        id="inline-without-content-id",
    ),
    pytest.param(
        Case(
            R,
            CODE.INVALID_ATTACHMENT,
            payload={"attachments": attachment(inline=True, content_id=None)},
        ),
        id="inline-null-content-id",
    ),
    pytest.param(
        Case(
            R,
            None,
            payload={"attachments": attachment(inline=True, content_id="logo@example.com")},
        ),
        id="inline-with-content-id",
    ),
    pytest.param(
        Case(R, CODE.INVALID_ATTACHMENT, payload={"attachments": attachment(inline="yes")}),
        id="inline-string",
    ),
    pytest.param(
        Case(R, CODE.INVALID_ATTACHMENT, payload={"attachments": attachment(content_id="a b")}),
        id="content-id-space",
    ),
    pytest.param(
        Case(R, CODE.UNKNOWN_FIELD, payload={"attachments": attachment(size=12)}),
        id="attachment-unknown-key",
    ),
    pytest.param(
        Case(R, None, payload={"attachments": attachment(inline=None, content_id="")}),
        id="attachment-go-zero-values",
    ),
    pytest.param(
        Case(
            R,
            CODE.INVALID_ATTACHMENT,
            payload={"attachments": attachment(inline=True, content_id="")},
        ),
        id="inline-empty-content-id",
    ),
    # template
    pytest.param(Case(T, CODE.INVALID_PAYLOAD, payload={"template_id": "Acct.X"}), id="tpl-upper"),
    pytest.param(Case(T, CODE.INVALID_PAYLOAD, payload={"template_id": ".x"}), id="tpl-dot"),
    pytest.param(Case(T, None, payload={"template_id": "t" * 100}), id="template_id-100"),
    pytest.param(Case(T, CODE.INVALID_PAYLOAD, payload={"template_id": "t" * 101}), id="tpl-101"),
    pytest.param(Case(T, None, payload={"locale": "zh-Hant-TW"}), id="locale-three-parts"),
    pytest.param(Case(T, CODE.INVALID_PAYLOAD, payload={"locale": "english"}), id="locale-word"),
    pytest.param(Case(T, None, drop_keys=("locale",)), id="locale-missing"),
    pytest.param(Case(T, None, payload={"locale": ""}), id="locale-empty"),
    pytest.param(Case(T, None, payload={"locale": None}), id="locale-null"),
    pytest.param(Case(T, None, payload={"locale": "en_US"}), id="locale-posix"),
    pytest.param(Case(T, None, payload={"locale": "es-419"}), id="locale-region-digits"),
    pytest.param(Case(T, None, payload={"locale": "en-US-u-ca-gregory"}), id="locale-extension"),
    pytest.param(
        Case(T, CODE.INVALID_PAYLOAD, payload={"locale": "en_US.UTF-8"}), id="locale-charset"
    ),
    pytest.param(
        Case(T, CODE.INVALID_PAYLOAD, payload={"locale": "en-" + "abcdefgh-" * 4 + "x"}),
        id="locale-36",
    ),
    pytest.param(
        Case(T, None, payload={"variables": None, "secret_variables": None}), id="go-null-maps"
    ),
    pytest.param(
        Case(T, CODE.INVALID_PAYLOAD, payload={"variables": {"1st": 1}, "secret_variables": []}),
        id="variable-name",
    ),
    pytest.param(
        Case(
            T,
            None,
            payload={
                "variables": {f"v{i}": {"nested": [i, None]} for i in range(MAX_VARIABLES)},
                "secret_variables": ["v0"],
            },
        ),
        id="variables-at-limit",
    ),
    pytest.param(
        Case(
            T,
            CODE.INVALID_PAYLOAD,
            payload={
                "variables": {f"v{i}": i for i in range(MAX_VARIABLES + 1)},
                "secret_variables": [],
            },
        ),
        id="variables-over-limit",
    ),
    pytest.param(
        Case(T, CODE.INVALID_PAYLOAD, payload={"secret_variables": "reset_token"}),
        id="secret-variables-string",
    ),
    pytest.param(Case(T, CODE.UNKNOWN_FIELD, payload={"subject": "Hi"}), id="template-subject"),
]


@pytest.mark.parametrize("case", CASES)
def test_the_document_and_the_decoder_agree_on_an_edge_case(case: Case) -> None:
    # Given an example entry with one thing changed
    fields = case.entry()
    # When the decoder decodes it and the document's schemas judge it
    decoded = decode_command("1730000000000-0", encode(fields))
    allowed = document_allows(fields)
    # Then both accept it, or both refuse it (the decoder with the expected code)
    if case.refused_as is None:
        assert isinstance(decoded, DeliveryCommand), decoded
        assert allowed, "the decoder accepts this entry but the document forbids it"
    else:
        assert isinstance(decoded, MalformedCommand), "the decoder accepts this entry"
        assert decoded.failure_code is case.refused_as, decoded.message
        assert not allowed, "the decoder refuses this entry but the document allows it"
