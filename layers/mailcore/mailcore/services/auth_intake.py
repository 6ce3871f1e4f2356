"""Accept a login-code mail from the Auth / Session service, durably and idempotently."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from mailcore.config import SmtpMode
from mailcore.contracts.auth import AcceptanceOutcome, LoginCodeDeliveryRequest
from mailcore.domain.model import (
    AUTH_LOGIN_CODE_TEMPLATE,
    Attempt,
    Delivery,
    Envelope,
    PayloadMode,
    Source,
)
from mailcore.domain.states import AttemptStatus, DeliveryStatus
from mailcore.errors import IdempotencyConflict
from mailcore.ports import AcceptanceStore, Clock, IdGenerator
from mailcore.services.dispatch import Dispatcher


@dataclass(frozen=True, slots=True)
class AuthAcceptance:
    delivery_id: str
    outcome: AcceptanceOutcome
    replayed: bool  # an identical earlier request already created this delivery
    dispatched: bool = False  # the first attempt went to a worker at once (fast path)


# Built once (json.dumps with options builds an encoder per call). Changing the
# canonical form would turn replays of earlier requests into conflicts.
_canonical_json = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def request_fingerprint(request: LoginCodeDeliveryRequest) -> str:
    """A digest of what the caller asked for; a replay must match it exactly."""
    canonical = _canonical_json(request.model_dump(mode="json"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class AuthIntake:
    """Turns one login-code request into one stored delivery.

    In stub mode the delivery is born ``suppressed`` with no attempt, and the
    login code is not stored at all: nothing will ever render it. In smtp mode
    it is ``queued`` with its first attempt due now, and keeps the code (marked
    secret) for rendering.
    """

    def __init__(
        self,
        store: AcceptanceStore,
        clock: Clock,
        ids: IdGenerator,
        smtp_mode: SmtpMode,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._ids = ids
        self._smtp_mode = smtp_mode
        self._dispatcher = dispatcher

    def accept_login_code(
        self,
        request: LoginCodeDeliveryRequest,
        idempotency_key: str,
        *,
        time_left_ms: Callable[[], int] | None = None,
    ) -> AuthAcceptance:
        """Store the delivery (the answer's promise), then try the fast path.

        ``time_left_ms`` is the invocation's remaining time: the fast path
        never runs into it (see :meth:`Dispatcher.dispatch_soon`).
        """
        now = self._clock.now_ms()
        suppressed = self._smtp_mode is SmtpMode.STUB
        outcome = AcceptanceOutcome.SUPPRESSED if suppressed else AcceptanceOutcome.SENT
        delivery = Delivery(
            delivery_id=self._ids.new_delivery_id(),
            source=Source.AUTHSESSION,
            status=DeliveryStatus.SUPPRESSED if suppressed else DeliveryStatus.QUEUED,
            payload_mode=PayloadMode.TEMPLATE,
            envelope=Envelope(to=(request.email,)),
            idempotency_key=idempotency_key,
            created_at_ms=now,
            updated_at_ms=now,
            template_id=AUTH_LOGIN_CODE_TEMPLATE,
            locale=request.locale,
            variables={} if suppressed else {"code": request.code},
            secret_variables=frozenset({"code"}),
            attempt_count=0 if suppressed else 1,
        )
        first_attempt = (
            None
            if suppressed
            else Attempt(
                delivery_id=delivery.delivery_id,
                attempt_no=1,
                status=AttemptStatus.SCHEDULED,
                scheduled_for_ms=now,
                created_at_ms=now,
            )
        )
        result = self._store.accept(
            delivery,
            first_attempt,
            fingerprint=request_fingerprint(request),
            outcome=outcome,
        )
        if not result.fingerprint_matches:
            raise IdempotencyConflict(Source.AUTHSESSION)
        dispatched = False
        if result.created and first_attempt is not None and self._dispatcher is not None:
            # A login code never waits for a scheduler tick, nor behind a
            # notification backlog: this fast path ignores the bound on claims
            # in flight (MAIL_MAX_CLAIMS_IN_FLIGHT). It is one delivery per
            # request, so it can only go past the bound by the number of login
            # codes arriving during a burst, and the bounded dispatchers claim
            # nothing more until the workers are back below it.
            dispatched = (
                self._dispatcher.dispatch_soon(
                    [result.delivery_id],
                    bounded=False,
                    partition=result.partition,
                    time_left_ms=time_left_ms,
                )
                == 1
            )
        return AuthAcceptance(
            delivery_id=result.delivery_id,
            outcome=AcceptanceOutcome(result.outcome),
            replayed=not result.created,
            dispatched=dispatched,
        )
