"""Records to Redis hash fields and back.

Hashes (not JSON strings) so that later scripts can change one field, such as
``status``, atomically without decoding the whole record; small hashes are
stored as compact listpacks. Empty optional fields are omitted to save memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring

from mailcore.domain.model import (
    Attachment,
    Attempt,
    Content,
    Delivery,
    Envelope,
    PayloadMode,
    Source,
)
from mailcore.domain.states import AttemptStatus, DeliveryStatus

# Built once: json.dumps with options builds an encoder on every call, and
# acceptance encodes several fields per delivery.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode


def _compact_json(value: object) -> str:
    return _encode(value)


def _string_list(values: Iterable[str]) -> str:
    """``_compact_json`` of a list of strings (addresses, names), byte for byte, but cheaper."""
    return "[" + ",".join(map(encode_basestring, values)) + "]"


def delivery_to_fields(delivery: Delivery) -> dict[str, str]:
    envelope = delivery.envelope
    fields = {
        "delivery_id": delivery.delivery_id,
        "source": str(delivery.source),
        "status": str(delivery.status),
        "payload_mode": str(delivery.payload_mode),
        "to": _string_list(envelope.to),
        "idempotency_key": delivery.idempotency_key,
        "created_at_ms": str(delivery.created_at_ms),
        "updated_at_ms": str(delivery.updated_at_ms),
        "attempt_count": str(delivery.attempt_count),
    }
    # Optional fields only when they have a value (in this order).
    if envelope.cc:
        fields["cc"] = _string_list(envelope.cc)
    if envelope.bcc:
        fields["bcc"] = _string_list(envelope.bcc)
    if envelope.reply_to:
        fields["reply_to"] = _string_list(envelope.reply_to)
    if delivery.template_id:
        fields["template_id"] = delivery.template_id
    if delivery.locale:
        fields["locale"] = delivery.locale
    if delivery.variables:
        fields["variables"] = _compact_json(dict(delivery.variables))
    if delivery.secret_variables:
        fields["secret_variables"] = _string_list(sorted(delivery.secret_variables))
    if delivery.parent_delivery_id:
        fields["parent_delivery_id"] = delivery.parent_delivery_id
    if delivery.content:
        fields["content"] = _compact_json(_content_dict(delivery.content))
    if delivery.attachments:
        fields["attachments"] = _compact_json([_attachment_dict(a) for a in delivery.attachments])
    if delivery.requested_at_ms is not None:
        fields["requested_at_ms"] = str(delivery.requested_at_ms)
    if delivery.request_id:
        fields["request_id"] = delivery.request_id
    if delivery.trace_id:
        fields["trace_id"] = delivery.trace_id
    return fields


def _content_dict(content: Content) -> dict[str, str]:
    values = {"subject": content.subject, "text_body": content.text_body}
    if content.html_body is not None:
        values["html_body"] = content.html_body
    return values


def _attachment_dict(attachment: Attachment) -> dict[str, object]:
    values: dict[str, object] = {
        "filename": attachment.filename,
        "content_type": attachment.content_type,
        "content_base64": attachment.content_base64,
        "inline": attachment.inline,
    }
    if attachment.content_id is not None:
        values["content_id"] = attachment.content_id
    return values


def _list(fields: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = fields.get(name)
    return tuple(json.loads(raw)) if raw else ()


def delivery_from_fields(fields: Mapping[str, str]) -> Delivery:
    variables = fields.get("variables")
    secrets = fields.get("secret_variables")
    content = json.loads(fields["content"]) if fields.get("content") else None
    attachments = json.loads(fields["attachments"]) if fields.get("attachments") else []
    requested_at = fields.get("requested_at_ms")
    return Delivery(
        delivery_id=fields["delivery_id"],
        source=Source(fields["source"]),
        status=DeliveryStatus(fields["status"]),
        payload_mode=PayloadMode(fields["payload_mode"]),
        envelope=Envelope(
            to=_list(fields, "to"),
            cc=_list(fields, "cc"),
            bcc=_list(fields, "bcc"),
            reply_to=_list(fields, "reply_to"),
        ),
        idempotency_key=fields["idempotency_key"],
        created_at_ms=int(fields["created_at_ms"]),
        updated_at_ms=int(fields["updated_at_ms"]),
        template_id=fields.get("template_id") or None,
        locale=fields.get("locale") or None,
        variables=json.loads(variables) if variables else {},
        secret_variables=frozenset(json.loads(secrets)) if secrets else frozenset(),
        attempt_count=int(fields.get("attempt_count", "0")),
        parent_delivery_id=fields.get("parent_delivery_id") or None,
        content=Content(**content) if content else None,
        attachments=tuple(Attachment(**item) for item in attachments),
        requested_at_ms=int(requested_at) if requested_at else None,
        request_id=fields.get("request_id") or None,
        trace_id=fields.get("trace_id") or None,
        locale_fallback_used=(
            fields["locale_fallback_used"] == "1" if "locale_fallback_used" in fields else None
        ),
        resolved_locale=fields.get("resolved_locale") or None,
        rendered_subject=fields.get("rendered_subject") or None,
        last_outcome=fields.get("last_outcome") or None,
        last_summary=fields.get("last_summary") or None,
        failure_code=fields.get("failure_code") or None,
        sent_at_ms=_int_or_none(fields.get("sent_at_ms")),
    )


def attempt_to_fields(attempt: Attempt) -> dict[str, str]:
    return {
        "delivery_id": attempt.delivery_id,
        "attempt_no": str(attempt.attempt_no),
        "status": str(attempt.status),
        "scheduled_for_ms": str(attempt.scheduled_for_ms),
        "created_at_ms": str(attempt.created_at_ms),
    }


def attempt_from_fields(fields: Mapping[str, str]) -> Attempt:
    return Attempt(
        delivery_id=fields["delivery_id"],
        attempt_no=int(fields["attempt_no"]),
        status=AttemptStatus(fields["status"]),
        scheduled_for_ms=int(fields["scheduled_for_ms"]),
        created_at_ms=int(fields["created_at_ms"]),
        started_at_ms=_int_or_none(fields.get("started_at_ms")),
        finished_at_ms=_int_or_none(fields.get("finished_at_ms")),
        outcome=fields.get("outcome") or None,
        summary=fields.get("summary") or None,
        duration_ms=_int_or_none(fields.get("duration_ms")),
        failure_code=fields.get("failure_code") or None,
    )


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value else None
