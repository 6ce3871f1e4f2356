"""Records to Redis hash fields and back.

Hashes (not JSON strings) so that later scripts can change one field, such as
``status``, atomically without decoding the whole record; small hashes are
stored as compact listpacks. Empty optional fields are omitted to save memory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from mailcore.domain.model import Attempt, Delivery, Envelope, PayloadMode, Source
from mailcore.domain.states import AttemptStatus, DeliveryStatus


def _compact_json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def delivery_to_fields(delivery: Delivery) -> dict[str, str]:
    fields = {
        "delivery_id": delivery.delivery_id,
        "source": str(delivery.source),
        "status": str(delivery.status),
        "payload_mode": str(delivery.payload_mode),
        "to": _compact_json(list(delivery.envelope.to)),
        "idempotency_key": delivery.idempotency_key,
        "created_at_ms": str(delivery.created_at_ms),
        "updated_at_ms": str(delivery.updated_at_ms),
        "attempt_count": str(delivery.attempt_count),
    }
    optional = {
        "cc": _compact_json(list(delivery.envelope.cc)) if delivery.envelope.cc else "",
        "bcc": _compact_json(list(delivery.envelope.bcc)) if delivery.envelope.bcc else "",
        "reply_to": (
            _compact_json(list(delivery.envelope.reply_to)) if delivery.envelope.reply_to else ""
        ),
        "template_id": delivery.template_id or "",
        "locale": delivery.locale or "",
        "variables": _compact_json(dict(delivery.variables)) if delivery.variables else "",
        "secret_variables": (
            _compact_json(sorted(delivery.secret_variables)) if delivery.secret_variables else ""
        ),
        "parent_delivery_id": delivery.parent_delivery_id or "",
    }
    fields.update({name: value for name, value in optional.items() if value})
    return fields


def _list(fields: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = fields.get(name)
    return tuple(json.loads(raw)) if raw else ()


def delivery_from_fields(fields: Mapping[str, str]) -> Delivery:
    variables = fields.get("variables")
    secrets = fields.get("secret_variables")
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
    )
