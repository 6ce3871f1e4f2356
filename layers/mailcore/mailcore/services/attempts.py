"""Execute one claimed attempt: render, start, send, record.

Rendering and the provider's send are each one X-Ray subsegment (``render``,
``provider_send``), annotated with ids, the attempt number and the outcome:
never with an address, a variable or any content.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.message import EmailMessage

from mailcore.domain.model import Delivery, PayloadMode
from mailcore.domain.states import AttemptStatus
from mailcore.errors import StoreUnavailable
from mailcore.mail.mime import Sender, build_message, envelope_recipients
from mailcore.ports import (
    ClaimedAttempt,
    ClaimedAttemptSteps,
    Clock,
    CompletionResult,
    MailProvider,
    SendResult,
    StartVerdict,
)
from mailcore.rendering.catalog import (
    DEFAULT_LOCALE,
    RenderedMessage,
    RenderError,
    TemplateCatalog,
    render_delivery,
)
from mailcore.tracing import NO_TRACING, Segment, Subsegment, XRayProvider

# Waits between tries to record a send's outcome while the store is away.
# SMTP has no idempotency: an outcome that is never recorded makes claim
# recovery send the message again, so a short outage is waited out here
# (about 3 s in all, far inside the claim's deadline) before giving up.
COMPLETION_RETRY_DELAYS_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


@dataclass(frozen=True, slots=True)
class AttemptReport:
    """What one attempt did, for logs and metrics. Never carries content or secrets."""

    delivery_id: str
    attempt_no: int
    source: str | None = None
    template_id: str | None = None
    skipped: str | None = None  # why nothing was done (stale or duplicate work)
    outcome: str | None = None  # the provider's classified answer, or render_failed
    status: str | None = None  # the delivery's status afterwards
    attempt_status: str | None = None
    locale_fallback_used: bool | None = None
    duration_ms: int | None = None
    completion_refused: str | None = None  # the claim was lost while sending


def _secret_values(delivery: Delivery) -> list[str]:
    return [
        str(delivery.variables[name])
        for name in delivery.secret_variables
        if name in delivery.variables and str(delivery.variables[name])
    ]


class AttemptExecutor:
    def __init__(
        self,
        store: ClaimedAttemptSteps,
        catalog: TemplateCatalog,
        provider: MailProvider,
        sender: Sender,
        clock: Clock,
        tracing: XRayProvider | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._store = store
        self._sleep = sleep
        self._catalog = catalog
        self._provider = provider
        self._sender = sender
        self._clock = clock
        self._tracing = tracing or NO_TRACING

    def close(self) -> None:
        """End of a worker batch: let the provider close its connection."""
        self._provider.close()

    def execute(self, claim: ClaimedAttempt) -> AttemptReport:
        claimed = self._store.read_claimed(claim)
        if claimed is None:
            return AttemptReport(claim.delivery_id, claim.attempt_no, skipped="delivery_missing")
        delivery = claimed.delivery
        report = AttemptReport(
            claim.delivery_id, claim.attempt_no, delivery.source, delivery.template_id
        )
        # Cheap early exit for duplicate or stale messages; the start script
        # makes the same checks atomically.
        if claimed.claim_token != claim.claim_token:
            return replace(report, skipped="claim_not_held")
        if claimed.attempt_status is not AttemptStatus.SCHEDULED:
            return replace(report, skipped="attempt_already_started")

        try:
            rendered = self._render(claim, delivery)
            message = self._build(delivery, rendered)
        except RenderError as error:
            started = self._store.start(
                claim, self._clock.now_ms(), rendered=False, failure_summary=str(error)
            )
            if started.verdict is StartVerdict.REFUSED:
                return replace(report, skipped=started.reason)
            return replace(
                report,
                outcome="render_failed",
                attempt_status=AttemptStatus.RENDER_FAILED,
                status="failed",
            )

        started = self._store.start(
            claim,
            self._clock.now_ms(),
            rendered=True,
            locale_fallback_used=(
                rendered.locale_fallback_used if rendered.resolved_locale else None
            ),
            resolved_locale=rendered.resolved_locale,
            rendered_subject=self._subject_to_show(delivery, rendered),
        )
        if started.verdict is StartVerdict.REFUSED:
            return replace(report, skipped=started.reason)
        report = replace(
            report,
            locale_fallback_used=(
                rendered.locale_fallback_used if rendered.resolved_locale else None
            ),
        )

        with self._tracing.in_subsegment(Subsegment.PROVIDER_SEND) as segment:
            _annotate(segment, claim, delivery)
            result = self._provider.send(
                message,
                envelope_from=self._sender.email,
                recipients=envelope_recipients(delivery),
                secrets=_secret_values(delivery),
            )
            segment.put_annotation("outcome", result.outcome)
            segment.put_annotation("attempt_status", result.attempt_status)
        completion = self._record_outcome(claim, result)
        return replace(
            report,
            outcome=result.outcome,
            attempt_status=result.attempt_status,
            status=completion.status,
            duration_ms=result.duration_ms,
            completion_refused=completion.reason,
        )

    def _record_outcome(self, claim: ClaimedAttempt, result: SendResult) -> CompletionResult:
        delays = iter(COMPLETION_RETRY_DELAYS_S)
        while True:
            try:
                return self._store.complete(
                    claim,
                    self._clock.now_ms(),
                    outcome=result.outcome,
                    attempt_status=result.attempt_status,
                    summary=result.summary,
                    duration_ms=result.duration_ms,
                )
            except StoreUnavailable:
                # The script runs whole or not at all. If a try ran but its
                # answer was lost, the next one hears that it already completed.
                delay = next(delays, None)
                if delay is None:
                    raise
                self._sleep(delay)

    def _build(self, delivery: Delivery, rendered: RenderedMessage) -> EmailMessage:
        try:
            return build_message(
                delivery,
                rendered.subject,
                rendered.text_body,
                rendered.html_body,
                self._sender,
                now=datetime.fromtimestamp(self._clock.now_ms() / 1000, tz=UTC),
            )
        except ValueError:
            # A header that would be unsafe (a line break, a control character)
            # fails the delivery like a render failure: retrying cannot fix it.
            # The error's text may quote the value, so it is not kept.
            raise RenderError(
                "render_failed", "the message cannot be built: a header value is not allowed"
            ) from None

    def _subject_to_show(self, delivery: Delivery, rendered: RenderedMessage) -> str | None:
        """A template delivery's rendered subject for operator reads; None when it could
        show a secret: its template uses a secret variable, or a secret value is in it."""
        if delivery.payload_mode is not PayloadMode.TEMPLATE or delivery.template_id is None:
            return None
        locale = delivery.locale or DEFAULT_LOCALE
        used = self._catalog.subject_variables(delivery.template_id, locale)
        if used & delivery.secret_variables:
            return None
        if any(secret in rendered.subject for secret in _secret_values(delivery)):
            return None
        return rendered.subject

    def _render(self, claim: ClaimedAttempt, delivery: Delivery) -> RenderedMessage:
        with self._tracing.in_subsegment(Subsegment.RENDER) as segment:
            _annotate(segment, claim, delivery)
            try:
                rendered = render_delivery(self._catalog, delivery)
            except RenderError as error:
                # Classified, not a crash: the delivery fails; the trace says why.
                segment.put_annotation("outcome", "render_failed")
                segment.put_annotation("render_error", error.code)
                segment.add_error(error)
                raise
            segment.put_annotation("outcome", "rendered")
            if rendered.resolved_locale:
                segment.put_annotation("locale_fallback_used", rendered.locale_fallback_used)
            return rendered


def _annotate(segment: Segment, claim: ClaimedAttempt, delivery: Delivery) -> None:
    segment.put_annotation("delivery_id", claim.delivery_id)
    segment.put_annotation("attempt_no", claim.attempt_no)
    segment.put_annotation("source", delivery.source)
    segment.put_annotation("template_id", delivery.template_id)
