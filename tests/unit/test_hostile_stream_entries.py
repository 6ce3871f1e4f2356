"""Whatever a producer writes to the stream, decoding ends in a command or a record."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from mailcore.contracts.stream import (
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    DeliveryCommand,
    MalformedCommand,
    decode_command,
)
from tests.support.commands import command

FIELD_NAMES = st.sampled_from([*REQUIRED_FIELDS, *OPTIONAL_FIELDS, "extra"]).map(str.encode)
ANY_BYTES = st.binary(max_size=300)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(FIELD_NAMES | ANY_BYTES, ANY_BYTES), max_size=10))
def test_random_fields_never_crash_the_decoder(fields: list[tuple[bytes, bytes]]) -> None:
    result = decode_command("1-1", fields)
    assert isinstance(result, DeliveryCommand | MalformedCommand)
    if isinstance(result, MalformedCommand):
        assert result.message
        json.dumps(dict(result.raw_fields))  # the record can always be stored


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["rendered", "template"]),
    st.dictionaries(
        st.sampled_from(
            [
                "to",
                "cc",
                "bcc",
                "reply_to",
                "subject",
                "text_body",
                "html_body",
                "attachments",
                "template_id",
                "locale",
                "variables",
                "secret_variables",
                "other",
            ]
        ),
        JSON_VALUES,
        max_size=8,
    ),
)
def test_random_payloads_never_crash_the_decoder(mode: str, payload: dict[str, object]) -> None:
    fields = command(1, mode=mode, payload_json=json.dumps(payload))
    result = decode_command("1-1", [(k.encode(), v.encode()) for k, v in fields.items()])
    assert isinstance(result, DeliveryCommand | MalformedCommand)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=80))
def test_no_subject_with_a_line_break_is_ever_accepted(subject: str) -> None:
    payload = {"to": ["ada@example.com"], "subject": subject, "text_body": "hi"}
    fields = command(1, payload_json=json.dumps(payload))
    result = decode_command("1-1", [(k.encode(), v.encode()) for k, v in fields.items()])
    if isinstance(result, DeliveryCommand):
        assert "\r" not in subject
        assert "\n" not in subject
