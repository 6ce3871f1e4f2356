"""What a refused stream entry becomes: a failure code and a malformed-command record.

Kept apart from :mod:`mailcore.contracts.stream` (the decoder and its pydantic
models) so that the store and the functions that never decode commands do not
import, and pay at cold start for, the decoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class FailureCode(StrEnum):
    """Why a stream entry became a malformed-command record."""

    INVALID_ENCODING = "invalid_encoding"  # a field name or value is not UTF-8
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    INVALID_FIELD = "invalid_field"  # a top-level field is out of shape
    UNSUPPORTED_SOURCE = "unsupported_source"
    UNSUPPORTED_PAYLOAD_MODE = "unsupported_payload_mode"
    INVALID_JSON = "invalid_json"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    INVALID_PAYLOAD = "invalid_payload"  # payload_json decodes but is out of shape
    INVALID_RECIPIENT = "invalid_recipient"
    TOO_MANY_RECIPIENTS = "too_many_recipients"
    INVALID_SUBJECT = "invalid_subject"
    INVALID_ATTACHMENT = "invalid_attachment"
    ATTACHMENTS_TOO_LARGE = "attachments_too_large"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"  # same key, different command
    DELIVERY_ID_CONFLICT = "delivery_id_conflict"  # the delivery id is taken


@dataclass(frozen=True, slots=True)
class MalformedCommand:
    stream_entry_id: str
    failure_code: FailureCode
    message: str
    raw_fields: Mapping[str, str]  # truncated, with variable values and attachment bytes hidden


# Refusals the store decides, since they depend on what is already stored
# (accept_batch.lua writes the same messages into its records).
STORE_FAILURE_MESSAGES: Mapping[str, str] = {
    FailureCode.IDEMPOTENCY_CONFLICT: "idempotency_key was already used for a different command",
    FailureCode.DELIVERY_ID_CONFLICT: "delivery_id already belongs to another delivery",
}
