"""The life-cycle rules of DESIGN §4.3, written out here as the specification."""

import itertools

import pytest

from mailcore.domain.states import (
    AttemptStatus,
    DeliveryStatus,
    ForbiddenTransition,
    check_attempt_transition,
    check_delivery_transition,
    is_resendable,
)

D = DeliveryStatus
A = AttemptStatus

ALLOWED_DELIVERY_MOVES = {
    (D.ACCEPTED, D.QUEUED),
    (D.ACCEPTED, D.SUPPRESSED),
    (D.ACCEPTED, D.FAILED),
    (D.QUEUED, D.RENDERED),
    (D.QUEUED, D.FAILED),
    (D.QUEUED, D.DEAD_LETTER),
    (D.RENDERED, D.SENDING),
    (D.RENDERED, D.QUEUED),
    (D.RENDERED, D.DEAD_LETTER),
    (D.SENDING, D.SENT),
    (D.SENDING, D.SUPPRESSED),
    (D.SENDING, D.FAILED),
    (D.SENDING, D.QUEUED),
    (D.SENDING, D.DEAD_LETTER),
}
ALLOWED_ATTEMPT_MOVES = {
    (A.SCHEDULED, A.IN_PROGRESS),
    (A.SCHEDULED, A.TIMED_OUT),
    (A.SCHEDULED, A.RENDER_FAILED),
    (A.IN_PROGRESS, A.PROVIDER_ACCEPTED),
    (A.IN_PROGRESS, A.PROVIDER_REJECTED),
    (A.IN_PROGRESS, A.TRANSPORT_FAILED),
    (A.IN_PROGRESS, A.TIMED_OUT),
}


def test_the_states_are_exactly_those_of_the_design() -> None:
    assert [s.value for s in DeliveryStatus] == [
        "accepted",
        "queued",
        "rendered",
        "sending",
        "sent",
        "suppressed",
        "failed",
        "dead_letter",
    ]
    assert [s.value for s in AttemptStatus] == [
        "scheduled",
        "in_progress",
        "provider_accepted",
        "provider_rejected",
        "transport_failed",
        "timed_out",
        # Beyond the design's list: a render failure contacted no provider,
        # so it is not `provider_rejected`.
        "render_failed",
    ]


@pytest.mark.parametrize(("current", "target"), sorted(itertools.product(DeliveryStatus, repeat=2)))
def test_every_delivery_move_is_allowed_or_refused_as_specified(
    current: DeliveryStatus, target: DeliveryStatus
) -> None:
    # Given a delivery in `current`, When asked to move to `target`
    if (current, target) in ALLOWED_DELIVERY_MOVES:
        # Then an allowed move passes
        check_delivery_transition(current, target)
    else:
        # Then anything else is an error naming both states, never a silent overwrite
        with pytest.raises(ForbiddenTransition) as raised:
            check_delivery_transition(current, target)
        assert str(current) in str(raised.value)
        assert str(target) in str(raised.value)


@pytest.mark.parametrize(("current", "target"), sorted(itertools.product(AttemptStatus, repeat=2)))
def test_every_attempt_move_is_allowed_or_refused_as_specified(
    current: AttemptStatus, target: AttemptStatus
) -> None:
    if (current, target) in ALLOWED_ATTEMPT_MOVES:
        check_attempt_transition(current, target)
    else:
        with pytest.raises(ForbiddenTransition):
            check_attempt_transition(current, target)


@pytest.mark.parametrize("status", list(DeliveryStatus))
def test_only_settled_deliveries_can_be_resent(status: DeliveryStatus) -> None:
    settled = {D.SENT, D.SUPPRESSED, D.FAILED, D.DEAD_LETTER}
    assert is_resendable(status) is (status in settled)


@pytest.mark.parametrize("status", [D.SENT, D.SUPPRESSED, D.FAILED, D.DEAD_LETTER])
def test_settled_deliveries_never_move_again(status: DeliveryStatus) -> None:
    for target in DeliveryStatus:
        with pytest.raises(ForbiddenTransition):
            check_delivery_transition(status, target)
