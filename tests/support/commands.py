"""Stream commands as the Notification service publishes them (the producer side)."""

from __future__ import annotations

import base64
import json
from typing import Any, cast

import redis

STREAM = "mail:delivery_commands"
REQUESTED_AT = "1795338900000"
PDF_BYTES = b"%PDF-1.7 invoice 42"
LOGO_BYTES = b"\x89PNG\r\n\x1a\n tiny logo"


def rendered_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "to": ["ada@example.com"],
        "cc": ["bob@example.com"],
        "bcc": ["audit@example.com"],
        "reply_to": ["support@example.com"],
        "subject": "Your invoice #42",
        "text_body": "Hello Ada, your invoice is attached.",
        "html_body": '<p>Hello Ada</p><img src="cid:logo@example.com">',
        "attachments": [
            {
                "filename": "invoice-42.pdf",
                "content_type": "application/pdf",
                "content_base64": base64.b64encode(PDF_BYTES).decode(),
            },
            {
                "filename": "logo.png",
                "content_type": "image/png",
                "content_base64": base64.b64encode(LOGO_BYTES).decode(),
                "inline": True,
                "content_id": "logo@example.com",
            },
        ],
    }
    payload.update(overrides)
    return payload


def template_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "to": ["ada@example.com"],
        "template_id": "account.password_reset",
        "locale": "de-AT",
        "variables": {"name": "Ada", "reset_token": "tok-SECRET-7781", "expires_minutes": 30},
        "secret_variables": ["reset_token"],
    }
    payload.update(overrides)
    return payload


def command(
    number: int = 1,
    *,
    payload: dict[str, Any] | None = None,
    mode: str = "rendered",
    **fields: str,
) -> dict[str, str]:
    """The stream fields of one command; ``fields`` replace or add top-level fields."""
    if payload is None:
        payload = rendered_payload() if mode == "rendered" else template_payload()
    entry = {
        "delivery_id": f"notif-{number:06d}",
        "source": "notification",
        "payload_mode": mode,
        "idempotency_key": f"notification:intent-{number}",
        "requested_at_ms": REQUESTED_AT,
        "payload_json": json.dumps(payload),
        "request_id": f"req-{number}",
        "trace_id": f"trace-{number}",
    }
    entry.update(fields)
    return entry


# What redis-py's xadd stub accepts (its key type is a long union).
StreamFields = dict[Any, Any]


def publish(client: redis.Redis, fields: dict[str, Any], stream: str = STREAM) -> str:
    entry_id = client.xadd(stream, cast(StreamFields, fields))
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
