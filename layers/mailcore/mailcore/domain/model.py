"""The records the service keeps: deliveries and their attempts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mailcore.domain.states import AttemptStatus, DeliveryStatus


class Source(StrEnum):
    """Who asked for the delivery."""

    AUTHSESSION = "authsession"  # login codes over the trusted REST intake
    NOTIFICATION = "notification"  # generic mail from the Redis Stream
    OPERATOR_RESEND = "operator_resend"  # a clone created by an operator's resend


class PayloadMode(StrEnum):
    RENDERED = "rendered"  # the caller supplied subject and bodies
    TEMPLATE = "template"  # the service renders a catalog template


AUTH_LOGIN_CODE_TEMPLATE = "auth.login_code"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One delivery is one SMTP envelope: every recipient receives the same message."""

    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()

    def recipients(self) -> tuple[str, ...]:
        """Every envelope recipient, once each, in order."""
        return tuple(dict.fromkeys((*self.to, *self.cc, *self.bcc)))


@dataclass(frozen=True, slots=True)
class Content:
    """A message the caller rendered itself (payload mode ``rendered``)."""

    subject: str
    text_body: str
    html_body: str | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    content_base64: str  # kept encoded: it is stored and sent as base64 anyway
    inline: bool = False
    content_id: str | None = None  # referenced from HTML as cid:<content_id> when inline


@dataclass(frozen=True, slots=True)
class Delivery:
    delivery_id: str
    source: Source
    status: DeliveryStatus
    payload_mode: PayloadMode
    envelope: Envelope
    idempotency_key: str
    created_at_ms: int
    updated_at_ms: int
    template_id: str | None = None
    locale: str | None = None
    # Template variables (template mode). Names listed in `secret_variables`
    # are needed to render but never shown, logged or measured.
    variables: Mapping[str, Any] = field(default_factory=dict)
    secret_variables: frozenset[str] = frozenset()
    content: Content | None = None  # rendered mode
    attachments: tuple[Attachment, ...] = ()
    attempt_count: int = 0
    parent_delivery_id: str | None = None
    # Tracing metadata of stream commands; not part of the idempotency fingerprint.
    requested_at_ms: int | None = None
    request_id: str | None = None
    trace_id: str | None = None
    # Written as attempts run (by the store's scripts, never at acceptance).
    locale_fallback_used: bool | None = None
    resolved_locale: str | None = None
    # A template delivery's subject as rendered, for operators (never one that
    # shows a secret variable).
    rendered_subject: str | None = None
    last_outcome: str | None = None
    last_summary: str | None = None
    failure_code: str | None = None
    sent_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    delivery_id: str
    attempt_no: int
    status: AttemptStatus
    scheduled_for_ms: int
    created_at_ms: int
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    outcome: str | None = None  # a ProviderOutcome value once finished
    summary: str | None = None  # the provider's answer, redacted
    duration_ms: int | None = None
    failure_code: str | None = None
