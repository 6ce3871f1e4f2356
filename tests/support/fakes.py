"""In-memory fakes of our own ports, for the unit tier."""

from __future__ import annotations

from mailcore.domain.model import Attempt, Delivery
from mailcore.ports import AcceptanceResult


class FixedClock:
    def __init__(self, now_ms: int = 1_795_338_900_000) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


class SequentialIds:
    def __init__(self) -> None:
        self.issued = 0

    def new_delivery_id(self) -> str:
        self.issued += 1
        return f"dlv_{self.issued:026d}"


class InMemoryAcceptanceStore:
    """Keeps the AcceptanceStore contract: first writer of a key wins, whole or nothing."""

    def __init__(self) -> None:
        self.idempotency: dict[tuple[str, str], tuple[str, str, str]] = {}
        self.deliveries: dict[str, Delivery] = {}
        self.attempts: dict[tuple[str, int], Attempt] = {}
        self.schedule: dict[str, int] = {}

    def accept(
        self,
        delivery: Delivery,
        first_attempt: Attempt | None,
        *,
        fingerprint: str,
        outcome: str,
    ) -> AcceptanceResult:
        key = (str(delivery.source), delivery.idempotency_key)
        if key in self.idempotency:
            stored_fingerprint, delivery_id, stored_outcome = self.idempotency[key]
            return AcceptanceResult(
                False, delivery_id, stored_outcome, stored_fingerprint == fingerprint
            )
        self.idempotency[key] = (fingerprint, delivery.delivery_id, outcome)
        self.deliveries[delivery.delivery_id] = delivery
        if first_attempt is not None:
            self.attempts[(delivery.delivery_id, first_attempt.attempt_no)] = first_attempt
            self.schedule[delivery.delivery_id] = first_attempt.scheduled_for_ms
        return AcceptanceResult(True, delivery.delivery_id, outcome, True)
