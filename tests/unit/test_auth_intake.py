"""The auth acceptance service against in-memory ports."""

import pytest

from mailcore.config import SmtpMode
from mailcore.contracts.auth import AcceptanceOutcome, LoginCodeDeliveryRequest
from mailcore.domain.model import AUTH_LOGIN_CODE_TEMPLATE, PayloadMode, Source
from mailcore.domain.states import AttemptStatus, DeliveryStatus
from mailcore.errors import IdempotencyConflict
from mailcore.services.auth_intake import AuthIntake, request_fingerprint
from tests.support.fakes import FixedClock, InMemoryAcceptanceStore, SequentialIds

REQUEST = LoginCodeDeliveryRequest(email="ada@example.com", code="482913", locale="de-AT")


def make_intake(mode: SmtpMode) -> tuple[AuthIntake, InMemoryAcceptanceStore, FixedClock]:
    store, clock = InMemoryAcceptanceStore(), FixedClock()
    return AuthIntake(store, clock, SequentialIds(), mode), store, clock


def test_smtp_mode_queues_the_delivery_with_its_first_attempt_due_now() -> None:
    intake, store, clock = make_intake(SmtpMode.SMTP)

    accepted = intake.accept_login_code(REQUEST, "key-1")

    assert accepted.outcome is AcceptanceOutcome.SENT
    assert accepted.replayed is False
    delivery = store.deliveries[accepted.delivery_id]
    assert delivery.status is DeliveryStatus.QUEUED
    assert delivery.source is Source.AUTHSESSION
    assert delivery.payload_mode is PayloadMode.TEMPLATE
    assert delivery.template_id == AUTH_LOGIN_CODE_TEMPLATE
    assert delivery.locale == "de-AT"
    assert delivery.envelope.to == ("ada@example.com",)
    assert delivery.variables == {"code": "482913"}
    assert delivery.secret_variables == {"code"}
    assert delivery.attempt_count == 1
    attempt = store.attempts[(accepted.delivery_id, 1)]
    assert attempt.status is AttemptStatus.SCHEDULED
    assert attempt.scheduled_for_ms == clock.now
    assert store.schedule == {accepted.delivery_id: clock.now}


def test_stub_mode_suppresses_the_delivery_without_an_attempt_or_the_code() -> None:
    intake, store, _ = make_intake(SmtpMode.STUB)

    accepted = intake.accept_login_code(REQUEST, "key-1")

    assert accepted.outcome is AcceptanceOutcome.SUPPRESSED
    # Nothing will render a suppressed delivery, so its secret is not kept.
    assert store.deliveries[accepted.delivery_id].variables == {}
    assert store.deliveries[accepted.delivery_id].secret_variables == {"code"}
    assert store.deliveries[accepted.delivery_id].status is DeliveryStatus.SUPPRESSED
    assert store.deliveries[accepted.delivery_id].attempt_count == 0
    assert store.attempts == {}
    assert store.schedule == {}


def test_an_identical_replay_returns_the_first_answer() -> None:
    intake, store, _ = make_intake(SmtpMode.SMTP)
    first = intake.accept_login_code(REQUEST, "key-1")

    again = intake.accept_login_code(REQUEST, "key-1")

    assert again.delivery_id == first.delivery_id
    assert again.outcome is first.outcome
    assert again.replayed is True
    assert len(store.deliveries) == 1


def test_a_replay_answers_the_stored_outcome_even_after_a_mode_change() -> None:
    # Given a key first used while the service ran in stub mode
    stub, store, clock = make_intake(SmtpMode.STUB)
    first = stub.accept_login_code(REQUEST, "key-1")
    # When the same request arrives after a switch to smtp mode
    smtp = AuthIntake(store, clock, SequentialIds(), SmtpMode.SMTP)
    again = smtp.accept_login_code(REQUEST, "key-1")
    # Then the caller hears what happened the first time
    assert again.outcome is AcceptanceOutcome.SUPPRESSED
    assert again.delivery_id == first.delivery_id


@pytest.mark.parametrize(
    "changed",
    [
        LoginCodeDeliveryRequest(email="ada@example.com", code="000000", locale="de-AT"),
        LoginCodeDeliveryRequest(email="bob@example.com", code="482913", locale="de-AT"),
        LoginCodeDeliveryRequest(email="ada@example.com", code="482913", locale="fr"),
    ],
)
def test_the_same_key_with_a_different_request_is_a_conflict(
    changed: LoginCodeDeliveryRequest,
) -> None:
    intake, store, _ = make_intake(SmtpMode.SMTP)
    intake.accept_login_code(REQUEST, "key-1")

    with pytest.raises(IdempotencyConflict):
        intake.accept_login_code(changed, "key-1")
    assert len(store.deliveries) == 1


def test_different_keys_make_different_deliveries() -> None:
    intake, store, _ = make_intake(SmtpMode.SMTP)
    first = intake.accept_login_code(REQUEST, "key-1")
    second = intake.accept_login_code(REQUEST, "key-2")
    assert first.delivery_id != second.delivery_id
    assert len(store.deliveries) == 2


def test_the_fingerprint_is_stable_and_does_not_contain_the_code() -> None:
    assert request_fingerprint(REQUEST) == request_fingerprint(
        LoginCodeDeliveryRequest(email="ada@example.com", code="482913", locale="de-AT")
    )
    assert "482913" not in request_fingerprint(REQUEST)
