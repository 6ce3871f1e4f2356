"""The stub provider: scripted or recipient-driven answers, never the network."""

from __future__ import annotations

import socket
from email.message import EmailMessage

import pytest

from mailcore.domain.states import AttemptStatus, ProviderOutcome
from mailcore.ports import MailProvider, SendResult
from mailcore.providers import StubProvider


def message(to: str = "alice@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "no-reply@example.com"
    msg["To"] = to
    msg["Subject"] = "hello"
    msg.set_content("body")
    return msg


def send(provider: MailProvider, *recipients: str, secrets: tuple[str, ...] = ()) -> SendResult:
    return provider.send(
        message(recipients[0]),
        envelope_from="bounce@example.com",
        recipients=list(recipients),
        secrets=secrets,
    )


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> socket.socket:
        raise AssertionError("the stub provider must not open a socket")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_accepts_by_default_and_sends_nothing() -> None:
    provider = StubProvider()
    result = send(provider, "alice@example.com")
    assert result == SendResult(
        ProviderOutcome.ACCEPTED, AttemptStatus.PROVIDER_ACCEPTED, "stub: accepted, not sent", 0
    )


def test_records_every_message_handed_to_it() -> None:
    provider = StubProvider([ProviderOutcome.TRANSIENT_FAILURE])
    first = message("alice@example.com")
    provider.send(first, envelope_from="bounce@example.com", recipients=["alice@example.com"])
    send(provider, "bob@example.com", "carol@example.com")

    assert provider.sent[0] == ("bounce@example.com", ["alice@example.com"], first)
    assert provider.sent[1][:2] == ("bounce@example.com", ["bob@example.com", "carol@example.com"])
    assert len(provider.sent) == 2


def test_a_script_is_consumed_in_order_then_the_default() -> None:
    custom = SendResult(
        ProviderOutcome.PERMANENT_FAILURE, AttemptStatus.PROVIDER_REJECTED, "550 custom", 12
    )
    provider = StubProvider([ProviderOutcome.TRANSIENT_FAILURE, custom, ProviderOutcome.SUPPRESSED])

    results = [send(provider, "alice@example.com") for _ in range(4)]

    assert [(r.outcome, r.attempt_status) for r in results] == [
        (ProviderOutcome.TRANSIENT_FAILURE, AttemptStatus.PROVIDER_REJECTED),
        (ProviderOutcome.PERMANENT_FAILURE, AttemptStatus.PROVIDER_REJECTED),
        (ProviderOutcome.SUPPRESSED, AttemptStatus.PROVIDER_REJECTED),
        (ProviderOutcome.ACCEPTED, AttemptStatus.PROVIDER_ACCEPTED),
    ]
    assert results[1] is custom


@pytest.mark.parametrize(
    ("outcome", "status", "summary"),
    [
        (ProviderOutcome.ACCEPTED, AttemptStatus.PROVIDER_ACCEPTED, "stub: accepted, not sent"),
        (ProviderOutcome.SUPPRESSED, AttemptStatus.PROVIDER_REJECTED, "stub: suppressed"),
        (
            ProviderOutcome.TRANSIENT_FAILURE,
            AttemptStatus.PROVIDER_REJECTED,
            "stub: 451 simulated temporary failure",
        ),
        (
            ProviderOutcome.PERMANENT_FAILURE,
            AttemptStatus.PROVIDER_REJECTED,
            "stub: 550 simulated rejection",
        ),
    ],
)
def test_a_scripted_outcome_gets_the_canned_answer(
    outcome: ProviderOutcome, status: AttemptStatus, summary: str
) -> None:
    result = send(StubProvider([outcome]), "alice@example.com")
    assert (result.outcome, result.attempt_status, result.summary) == (outcome, status, summary)


def test_the_script_wins_over_recipient_rules() -> None:
    provider = StubProvider([ProviderOutcome.ACCEPTED])
    assert send(provider, "stub-permanent@example.com").outcome is ProviderOutcome.ACCEPTED
    assert send(provider, "stub-permanent@example.com").outcome is (
        ProviderOutcome.PERMANENT_FAILURE
    )


@pytest.mark.parametrize(
    ("local_part", "outcome", "status", "summary"),
    [
        (
            "stub-suppress",
            ProviderOutcome.SUPPRESSED,
            AttemptStatus.PROVIDER_REJECTED,
            "stub: suppressed",
        ),
        (
            "stub-transient+retry",
            ProviderOutcome.TRANSIENT_FAILURE,
            AttemptStatus.PROVIDER_REJECTED,
            "stub: 451 simulated temporary failure",
        ),
        (
            "stub-permanent.x",
            ProviderOutcome.PERMANENT_FAILURE,
            AttemptStatus.PROVIDER_REJECTED,
            "stub: 550 simulated rejection",
        ),
        (
            "STUB-TIMEOUT",
            ProviderOutcome.TRANSIENT_FAILURE,
            AttemptStatus.TIMED_OUT,
            "stub: simulated timeout",
        ),
    ],
)
def test_recipient_rules(
    local_part: str, outcome: ProviderOutcome, status: AttemptStatus, summary: str
) -> None:
    provider = StubProvider()
    result = send(provider, "alice@example.com", f"{local_part}@example.com")
    assert (result.outcome, result.attempt_status, result.summary) == (outcome, status, summary)


def test_a_rule_needs_the_prefix_in_the_local_part() -> None:
    provider = StubProvider()
    assert send(provider, "alice@stub-permanent.example.com").outcome is ProviderOutcome.ACCEPTED
    assert send(provider, "my-stub-permanent@example.com").outcome is ProviderOutcome.ACCEPTED


def test_rules_are_checked_in_a_fixed_order() -> None:
    result = send(StubProvider(), "stub-timeout@example.com", "stub-suppress@example.com")
    assert result.outcome is ProviderOutcome.SUPPRESSED


def test_secrets_are_removed_from_scripted_summaries() -> None:
    leaky = SendResult(
        ProviderOutcome.ACCEPTED, AttemptStatus.PROVIDER_ACCEPTED, "250 saw code 482913", 3
    )
    result = send(StubProvider([leaky]), "alice@example.com", secrets=("482913",))
    assert result.summary == "250 saw code [redacted]"
    assert result.duration_ms == 3


def test_close_is_a_harmless_no_op() -> None:
    provider = StubProvider()
    provider.close()
    provider.close()
    assert send(provider, "alice@example.com").outcome is ProviderOutcome.ACCEPTED
    assert provider.close_calls == 2


def test_is_a_mail_provider() -> None:
    provider: MailProvider = StubProvider()
    assert isinstance(provider, StubProvider)
