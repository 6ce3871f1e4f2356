"""What the operator API answers. Secrets never reach these models."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mailcore.domain.model import Attempt, Delivery
from mailcore.domain.states import AttemptStatus

REDACTED = "[redacted]"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


class AttachmentView(BaseModel):
    model_config = ConfigDict(frozen=True)

    filename: str
    content_type: str
    size_bytes: int
    inline: bool
    content_id: str | None


class DeliveryView(BaseModel):
    """A delivery as an operator sees it: everything but secret values and bodies."""

    model_config = ConfigDict(frozen=True)

    delivery_id: str
    parent_delivery_id: str | None
    source: str
    status: str
    payload_mode: str
    template_id: str | None
    locale: str | None
    resolved_locale: str | None
    locale_fallback_used: bool | None
    to: list[str]
    cc: list[str]
    bcc: list[str]
    reply_to: list[str]
    subject: str | None = Field(
        description="The subject: a rendered-mode delivery's as given; a template delivery's "
        "as rendered, once an attempt rendered it (none before, and none when the template's "
        "subject uses a secret variable)."
    )
    variables: dict[str, Any] = Field(
        description="Template variables; values of secret ones are shown as [redacted]."
    )
    secret_variables: list[str]
    attachments: list[AttachmentView]
    attempt_count: int
    idempotency_key: str
    request_id: str | None
    trace_id: str | None
    created_at_ms: int
    updated_at_ms: int
    sent_at_ms: int | None
    last_outcome: str | None
    last_summary: str | None
    failure_code: str | None

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryView:
        return cls(
            delivery_id=delivery.delivery_id,
            parent_delivery_id=delivery.parent_delivery_id,
            source=delivery.source,
            status=delivery.status,
            payload_mode=delivery.payload_mode,
            template_id=delivery.template_id,
            locale=delivery.locale,
            resolved_locale=delivery.resolved_locale,
            locale_fallback_used=delivery.locale_fallback_used,
            to=list(delivery.envelope.to),
            cc=list(delivery.envelope.cc),
            bcc=list(delivery.envelope.bcc),
            reply_to=list(delivery.envelope.reply_to),
            subject=delivery.content.subject if delivery.content else delivery.rendered_subject,
            variables={
                name: REDACTED if name in delivery.secret_variables else value
                for name, value in delivery.variables.items()
            },
            secret_variables=sorted(delivery.secret_variables),
            attachments=[
                AttachmentView(
                    filename=a.filename,
                    content_type=a.content_type,
                    size_bytes=_decoded_size(a.content_base64),
                    inline=a.inline,
                    content_id=a.content_id,
                )
                for a in delivery.attachments
            ],
            attempt_count=delivery.attempt_count,
            idempotency_key=delivery.idempotency_key,
            request_id=delivery.request_id,
            trace_id=delivery.trace_id,
            created_at_ms=delivery.created_at_ms,
            updated_at_ms=delivery.updated_at_ms,
            sent_at_ms=delivery.sent_at_ms,
            last_outcome=delivery.last_outcome,
            last_summary=delivery.last_summary,
            failure_code=delivery.failure_code,
        )


def _decoded_size(content_base64: str) -> int:
    try:
        return len(base64.b64decode(content_base64))
    except (binascii.Error, ValueError):
        return 0


class DeliveryPage(BaseModel):
    items: list[DeliveryView]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class AttemptView(BaseModel):
    model_config = ConfigDict(frozen=True)

    attempt_no: int
    status: str = Field(
        description="One of "
        + ", ".join(f"`{status}`" for status in AttemptStatus)
        + "; `render_failed`: the message could not be rendered, no provider was contacted."
    )
    outcome: str | None
    summary: str | None = Field(
        description="The provider's answer, redacted (for `render_failed`, why rendering failed)."
    )
    failure_code: str | None
    scheduled_for_ms: int
    started_at_ms: int | None
    finished_at_ms: int | None
    duration_ms: int | None

    @classmethod
    def of(cls, attempt: Attempt) -> AttemptView:
        return cls(
            attempt_no=attempt.attempt_no,
            status=attempt.status,
            outcome=attempt.outcome,
            summary=attempt.summary,
            failure_code=attempt.failure_code,
            scheduled_for_ms=attempt.scheduled_for_ms,
            started_at_ms=attempt.started_at_ms,
            finished_at_ms=attempt.finished_at_ms,
            duration_ms=attempt.duration_ms,
        )


class AttemptList(BaseModel):
    items: list[AttemptView]


class MalformedCommandView(BaseModel):
    stream_entry_id: str
    stream: str
    failure_code: str
    failure_message: str
    raw_fields: dict[str, str] = Field(
        description="The entry's fields, truncated; variable values and file bytes hidden."
    )
    recorded_at_ms: int


class MalformedCommandPage(BaseModel):
    items: list[MalformedCommandView]
    next_cursor: str | None


class DeadLetterView(BaseModel):
    delivery_id: str
    attempts: int
    last_outcome: str | None
    last_summary: str | None
    dead_lettered_at_ms: int
    delivery: DeliveryView | None = Field(description="Null once the delivery has expired.")


class DeadLetterPage(BaseModel):
    items: list[DeadLetterView]
    next_cursor: str | None
