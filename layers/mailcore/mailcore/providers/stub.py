"""The stub provider: deterministic answers, no network, for tests and local runs."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from email.message import EmailMessage

from mailcore.domain.states import AttemptStatus, ProviderOutcome
from mailcore.ports import SendResult
from mailcore.providers.redaction import redact_summary

__all__ = ["StubProvider"]

_ACCEPTED = SendResult(
    ProviderOutcome.ACCEPTED, AttemptStatus.PROVIDER_ACCEPTED, "stub: accepted, not sent", 0
)
_SUPPRESSED = SendResult(
    ProviderOutcome.SUPPRESSED, AttemptStatus.PROVIDER_REJECTED, "stub: suppressed", 0
)
_TRANSIENT = SendResult(
    ProviderOutcome.TRANSIENT_FAILURE,
    AttemptStatus.PROVIDER_REJECTED,
    "stub: 451 simulated temporary failure",
    0,
)
_PERMANENT = SendResult(
    ProviderOutcome.PERMANENT_FAILURE,
    AttemptStatus.PROVIDER_REJECTED,
    "stub: 550 simulated rejection",
    0,
)
_TIMEOUT = SendResult(
    ProviderOutcome.TRANSIENT_FAILURE, AttemptStatus.TIMED_OUT, "stub: simulated timeout", 0
)

_FOR_OUTCOME = {
    ProviderOutcome.ACCEPTED: _ACCEPTED,
    ProviderOutcome.SUPPRESSED: _SUPPRESSED,
    ProviderOutcome.TRANSIENT_FAILURE: _TRANSIENT,
    ProviderOutcome.PERMANENT_FAILURE: _PERMANENT,
}

# Recipient rules for local use, checked in this order: the first rule that
# any recipient's local part starts with decides.
RECIPIENT_RULES: tuple[tuple[str, SendResult], ...] = (
    ("stub-suppress", _SUPPRESSED),
    ("stub-transient", _TRANSIENT),
    ("stub-permanent", _PERMANENT),
    ("stub-timeout", _TIMEOUT),
)


class StubProvider:
    """A :class:`~mailcore.ports.MailProvider` that never touches the network.

    Answers, per ``send`` call:

    1. the next entry of ``script``, if any is left (a bare outcome gets the
       stub's canned attempt status and summary);
    2. else a recipient rule: a local part starting with ``stub-suppress``,
       ``stub-transient``, ``stub-permanent`` or ``stub-timeout``;
    3. else accepted, ``"stub: accepted, not sent"``.

    Every message handed to it is recorded in ``sent``, whatever the answer.
    """

    def __init__(self, script: Sequence[ProviderOutcome | SendResult] = ()) -> None:
        self._script: deque[ProviderOutcome | SendResult] = deque(script)
        self.sent: list[tuple[str, list[str], EmailMessage]] = []
        self.close_calls = 0

    def send(
        self,
        message: EmailMessage,
        *,
        envelope_from: str,
        recipients: Sequence[str],
        secrets: Sequence[str] = (),
    ) -> SendResult:
        self.sent.append((envelope_from, list(recipients), message))
        result = self._answer(recipients)
        summary = redact_summary(result.summary, secrets)
        if summary == result.summary:
            return result
        return SendResult(result.outcome, result.attempt_status, summary, result.duration_ms)

    def close(self) -> None:
        self.close_calls += 1

    def _answer(self, recipients: Sequence[str]) -> SendResult:
        if self._script:
            scripted = self._script.popleft()
            return scripted if isinstance(scripted, SendResult) else _FOR_OUTCOME[scripted]
        local_parts = [recipient.rpartition("@")[0].lower() for recipient in recipients]
        for prefix, result in RECIPIENT_RULES:
            if any(local.startswith(prefix) for local in local_parts):
                return result
        return _ACCEPTED
