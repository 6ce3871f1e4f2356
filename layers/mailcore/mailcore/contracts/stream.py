"""The Notification service's contract: mail commands on a Redis Stream.

:func:`decode_command` turns one raw stream entry into either a typed
:class:`DeliveryCommand` or a :class:`MalformedCommand` that says precisely
why it was refused. It never raises on bad input: every entry the poller reads
ends as one or the other, so the stream offset can always move on.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mailcore.contracts.fields import (
    DeliveryId,
    EmailAddress,
    Locale,
    Shape,
    absent_when_empty,
    visible_ascii,
)

# Re-exported: the decoder answers with these.
from mailcore.contracts.malformed import FailureCode as FailureCode
from mailcore.contracts.malformed import MalformedCommand as MalformedCommand
from mailcore.domain.model import PayloadMode, Source

REQUIRED_FIELDS = (
    "delivery_id",
    "source",
    "payload_mode",
    "idempotency_key",
    "requested_at_ms",
    "payload_json",
)
OPTIONAL_FIELDS = ("request_id", "trace_id")
# How a Go producer writes an optional field it has no value for: the empty
# string, or "null" from a nil pointer marshalled as JSON. Both mean absent.
ABSENT_VALUES = frozenset({"", "null"})
ACCEPTED_SOURCES = (Source.NOTIFICATION,)

MAX_BODY_CHARS = 1024 * 1024
MAX_RAW_FIELD_CHARS = 1024  # per field, in a malformed-command record
MAX_VARIABLES = 100


@dataclass(frozen=True, slots=True)
class CommandLimits:
    max_recipients: int = 50
    max_subject_chars: int = 255
    max_attachment_bytes: int = 10 * 1024 * 1024

    @property
    def max_payload_chars(self) -> int:
        # base64 grows attachments by 4/3; bodies and the rest get a fixed allowance.
        return self.max_attachment_bytes * 4 // 3 + 3 * MAX_BODY_CHARS + 64 * 1024


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

VisibleAscii = Annotated[str, visible_ascii(128)]
TemplateId = Annotated[
    str,
    Shape(
        r"^[a-z0-9][a-z0-9._-]{0,99}$",
        "must be a template id such as account.password_reset: 1 to 100 lower-case "
        "letters, digits, '.', '_' or '-', starting with a letter or digit",
    ),
]
VariableName = Annotated[
    str,
    Shape(
        r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        "must be a variable name: a letter or '_', then letters, digits or '_', "
        "at most 64 characters",
    ),
]


def _no_control_characters(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters such as CR or LF")
    return value


def _limits(info: ValidationInfo) -> CommandLimits:
    context = info.context or {}
    limits = context.get("limits")
    return limits if isinstance(limits, CommandLimits) else CommandLimits()


class _ZeroValuesAreAbsent(BaseModel):
    """A payload object whose optional keys may come as ``""`` or ``null``, meaning absent."""

    _optional: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._optional = frozenset(
            name for name, info in cls.model_fields.items() if not info.is_required()
        )

    @model_validator(mode="before")
    @classmethod
    def _zero_values_are_absent(cls, data: Any) -> Any:
        return absent_when_empty(data, cls._optional)


class AttachmentPayload(_ZeroValuesAreAbsent):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    filename: Annotated[
        str,
        Shape(
            r"^[^/\\]{1,255}$",
            "must be a file name of 1 to 255 characters, without '/' or '\\'",
        ),
        AfterValidator(_no_control_characters),
    ]
    content_type: Annotated[
        str,
        Shape(
            r"^(?=.{1,127}$)[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$",
            "must be a media type such as application/pdf or image/png, at most 127 characters",
        ),
    ]
    content_base64: str
    inline: bool = False
    content_id: (
        Annotated[
            str,
            Shape(
                r"^(?=.{1,128}$)[A-Za-z0-9._%+-]+(@[A-Za-z0-9.-]+)?$",
                "must be a content id such as logo@example.com: letters, digits, "
                "'.', '_', '%', '+' or '-', then optionally '@' and a domain; "
                "at most 128 characters",
            ),
        ]
        | None
    ) = None

    @field_validator("content_base64")
    @classmethod
    def _valid_base64(cls, value: str) -> str:
        try:
            binascii.a2b_base64(value, strict_mode=True)
        except (binascii.Error, ValueError):
            raise ValueError("content_base64 is not valid base64") from None
        return value

    @model_validator(mode="after")
    def _inline_needs_content_id(self) -> Self:
        if self.inline and self.content_id is None:
            raise ValueError("an inline attachment needs a content_id")
        return self

    def decoded_size(self) -> int:
        padding = len(self.content_base64) - len(self.content_base64.rstrip("="))
        return len(self.content_base64) * 3 // 4 - padding


class _EnvelopePayload(_ZeroValuesAreAbsent):
    """Fields both payload modes share: one envelope and its attachments."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    to: list[EmailAddress] = Field(min_length=1)
    cc: list[EmailAddress] = Field(default_factory=list)
    bcc: list[EmailAddress] = Field(default_factory=list)
    reply_to: list[EmailAddress] = Field(default_factory=list)
    attachments: list[AttachmentPayload] = Field(default_factory=list)

    @model_validator(mode="after")
    def _within_limits(self, info: ValidationInfo) -> Self:
        limits = _limits(info)
        recipients = len(self.to) + len(self.cc) + len(self.bcc)
        if recipients > limits.max_recipients:
            raise PydanticCustomError(
                FailureCode.TOO_MANY_RECIPIENTS,
                "{count} recipients exceed the limit of {limit}",
                {"count": recipients, "limit": limits.max_recipients},
            )
        total = sum(attachment.decoded_size() for attachment in self.attachments)
        if total > limits.max_attachment_bytes:
            raise PydanticCustomError(
                FailureCode.ATTACHMENTS_TOO_LARGE,
                "attachments total {total} bytes, more than the limit of {limit}",
                {"total": total, "limit": limits.max_attachment_bytes},
            )
        content_ids = [a.content_id for a in self.attachments if a.content_id is not None]
        if len(content_ids) != len(set(content_ids)):
            raise PydanticCustomError(
                FailureCode.INVALID_ATTACHMENT, "content_id values must be unique"
            )
        return self


class RenderedPayload(_EnvelopePayload):
    """``payload_mode=rendered``: the producer supplies the finished message."""

    subject: str
    text_body: Annotated[str, StringConstraints(min_length=1, max_length=MAX_BODY_CHARS)]
    html_body: Annotated[str, StringConstraints(min_length=1, max_length=MAX_BODY_CHARS)] | None = (
        None
    )

    @field_validator("subject")
    @classmethod
    def _one_line_subject(cls, value: str, info: ValidationInfo) -> str:
        limit = _limits(info).max_subject_chars
        if not value.strip():
            raise ValueError("subject must not be empty")
        if len(value) > limit:
            raise ValueError(f"subject must be at most {limit} characters")
        return _no_control_characters(value)


class TemplatePayload(_EnvelopePayload):
    """``payload_mode=template``: the service renders a catalog template."""

    template_id: TemplateId
    # Absent: the catalog's default locale, en.
    locale: Locale | None = None
    variables: dict[VariableName, JsonValue] = Field(default_factory=dict, max_length=MAX_VARIABLES)
    secret_variables: list[VariableName] = Field(default_factory=list)

    @model_validator(mode="after")
    def _secrets_are_variables(self) -> Self:
        unknown = sorted(set(self.secret_variables) - set(self.variables))
        if unknown:
            raise ValueError(f"secret_variables names unknown variables: {', '.join(unknown)}")
        return self


class _CommandFields(BaseModel):
    """The top-level stream fields other than ``payload_json``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    delivery_id: DeliveryId
    source: str
    payload_mode: str
    idempotency_key: VisibleAscii
    requested_at_ms: Annotated[
        str,
        Shape(
            r"^[0-9]{1,15}$",
            "must be a time in milliseconds since the Unix epoch: 1 to 15 digits",
        ),
    ]
    request_id: VisibleAscii | None = None
    trace_id: VisibleAscii | None = None


# The fingerprint's canonical form; built once (json.dumps with options builds
# an encoder per call). Changing it would turn every replay of a command
# accepted before the change into an idempotency conflict.
_canonical_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class DeliveryCommand:
    stream_entry_id: str
    delivery_id: str
    source: Source
    payload_mode: PayloadMode
    idempotency_key: str
    requested_at_ms: int
    payload: RenderedPayload | TemplatePayload
    request_id: str | None = None
    trace_id: str | None = None

    @property
    def template_id(self) -> str | None:
        return self.payload.template_id if isinstance(self.payload, TemplatePayload) else None

    def fingerprint(self) -> str:
        """What makes two commands the same; tracing metadata is left out."""
        canonical = _canonical_json(
            {
                "delivery_id": self.delivery_id,
                "source": self.source,
                "payload_mode": self.payload_mode,
                "idempotency_key": self.idempotency_key,
                "requested_at_ms": self.requested_at_ms,
                "payload": self.payload.model_dump(mode="json"),
            }
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class _Refused(Exception):
    def __init__(self, code: FailureCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


RawFields = Iterable[tuple[bytes, bytes]]


def decode_command(
    stream_entry_id: str, fields: RawFields, limits: CommandLimits | None = None
) -> DeliveryCommand | MalformedCommand:
    """Decode one stream entry (its field/value pairs, in order) strictly; never raises."""
    pairs = list(fields)
    try:
        return _decode(stream_entry_id, pairs, limits or CommandLimits())
    except _Refused as refusal:
        return MalformedCommand(
            stream_entry_id, refusal.code, refusal.message, redacted_raw_fields(pairs)
        )


def _decode(
    stream_entry_id: str, raw: list[tuple[bytes, bytes]], limits: CommandLimits
) -> DeliveryCommand:
    try:
        pairs = [(name.decode("utf-8"), value.decode("utf-8")) for name, value in raw]
    except UnicodeDecodeError:
        raise _Refused(FailureCode.INVALID_ENCODING, "a field is not valid UTF-8") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        # A stream entry may repeat a field name; which value wins would be a guess.
        repeated = sorted({name for name, _ in pairs if [n for n, _ in pairs].count(name) > 1})
        raise _Refused(FailureCode.INVALID_FIELD, f"repeated field(s): {', '.join(repeated)}")
    missing = [name for name in REQUIRED_FIELDS if name not in fields]
    if missing:
        raise _Refused(FailureCode.MISSING_FIELD, f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(fields) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise _Refused(FailureCode.UNKNOWN_FIELD, f"unknown field(s): {', '.join(unknown)}")
    for name in OPTIONAL_FIELDS:
        if fields.get(name) in ABSENT_VALUES:
            del fields[name]
    payload_json = fields.pop("payload_json")
    try:
        top = _CommandFields.model_validate(fields)
    except ValidationError as error:
        raise _Refused(FailureCode.INVALID_FIELD, _describe(error)) from None
    if top.source not in ACCEPTED_SOURCES:
        raise _Refused(
            FailureCode.UNSUPPORTED_SOURCE,
            f"source must be one of: {', '.join(ACCEPTED_SOURCES)}",
        )
    try:
        mode = PayloadMode(top.payload_mode)
    except ValueError:
        raise _Refused(
            FailureCode.UNSUPPORTED_PAYLOAD_MODE, "payload_mode must be rendered or template"
        ) from None
    if len(payload_json) > limits.max_payload_chars:
        raise _Refused(
            FailureCode.PAYLOAD_TOO_LARGE,
            f"payload_json exceeds {limits.max_payload_chars} characters",
        )
    try:
        document = json.loads(payload_json)
    except (ValueError, RecursionError):
        # ValueError: not JSON, or an integer past Python's 4300-digit conversion limit.
        raise _Refused(FailureCode.INVALID_JSON, "payload_json is not valid JSON") from None
    if "\\u" in payload_json and not _is_unicode(document):
        raise _Refused(
            FailureCode.INVALID_JSON, "payload_json escapes a lone surrogate (\\ud800-\\udfff)"
        )
    if not isinstance(document, dict):
        raise _Refused(FailureCode.INVALID_PAYLOAD, "payload_json must be a JSON object")
    model = RenderedPayload if mode is PayloadMode.RENDERED else TemplatePayload
    try:
        payload = model.model_validate(document, context={"limits": limits})
    except ValidationError as error:
        raise _Refused(_payload_failure(error), _describe(error)) from None
    return DeliveryCommand(
        stream_entry_id=stream_entry_id,
        delivery_id=top.delivery_id,
        source=Source(top.source),
        payload_mode=mode,
        idempotency_key=top.idempotency_key,
        requested_at_ms=int(top.requested_at_ms),
        payload=payload,
        request_id=top.request_id,
        trace_id=top.trace_id,
    )


def _is_unicode(document: object) -> bool:
    """False when a string holds a lone surrogate, which no UTF-8 text (or Redis) can carry."""
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_FAILURE_CODES = frozenset(code.value for code in FailureCode)
_LOCATION_CODES = {
    "to": FailureCode.INVALID_RECIPIENT,
    "cc": FailureCode.INVALID_RECIPIENT,
    "bcc": FailureCode.INVALID_RECIPIENT,
    "reply_to": FailureCode.INVALID_RECIPIENT,
    "subject": FailureCode.INVALID_SUBJECT,
    "attachments": FailureCode.INVALID_ATTACHMENT,
}


def _payload_failure(error: ValidationError) -> FailureCode:
    first = error.errors(include_input=False)[0]
    if first["type"] in _FAILURE_CODES:
        return FailureCode(first["type"])
    if first["type"] == "extra_forbidden":
        return FailureCode.UNKNOWN_FIELD
    location = first["loc"][0] if first["loc"] else ""
    return _LOCATION_CODES.get(str(location), FailureCode.INVALID_PAYLOAD)


def _describe(error: ValidationError) -> str:
    """Name each problem by its location; never quote the input (it may be a secret)."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        location = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "string_pattern_mismatch":  # never show a regular expression
            message = "is not in the accepted format"
        problems.append(f"{location}: {message}" if location else message)
    return "; ".join(problems)


def redacted_raw_fields(raw: RawFields) -> dict[str, str]:
    """The entry as an operator may see it: truncated, secrets and file bytes hidden."""
    shown: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("utf-8", errors="replace")[:MAX_RAW_FIELD_CHARS]
        text = value.decode("utf-8", errors="replace")
        if key == "payload_json":
            text = _redact_payload(text)
        if len(text) > MAX_RAW_FIELD_CHARS:
            text = text[:MAX_RAW_FIELD_CHARS] + f"…[{len(text) - MAX_RAW_FIELD_CHARS} more]"
        shown[key] = text
    return shown


def _redact_payload(text: str) -> str:
    # A payload that is not a JSON object cannot be told apart into variables
    # (which may hold secrets) and the rest, so none of it is shown; the
    # record's failure message says what is wrong with it.
    hidden = f"[{len(text)} characters hidden: not a JSON object]"
    try:
        document: Any = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or a number too long to convert
        return hidden
    if not isinstance(document, dict):
        return hidden
    variables = document.get("variables")
    if isinstance(variables, dict):
        # A variable may be a secret (a reset token); a malformed command
        # cannot be trusted to say which, so none is shown.
        document["variables"] = dict.fromkeys(variables, "[redacted]")
    attachments = document.get("attachments")
    if isinstance(attachments, list):
        for attachment in attachments:
            if isinstance(attachment, dict) and isinstance(attachment.get("content_base64"), str):
                size = len(attachment["content_base64"])
                attachment["content_base64"] = f"[{size} base64 characters]"
    # A lone surrogate stays escaped: the record must be storable UTF-8.
    readable = _is_unicode(document)
    return json.dumps(document, ensure_ascii=not readable, separators=(",", ":"))
