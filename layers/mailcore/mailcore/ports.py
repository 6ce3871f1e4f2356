"""The ports the application services depend on; adapters implement them.

Services receive these through their constructors, so tests can hand them
in-memory fakes and the Lambda composition roots hand them Redis adapters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mailcore.domain.clock import Clock
from mailcore.domain.ids import IdGenerator
from mailcore.domain.model import Attempt, Delivery

__all__ = ["AcceptanceResult", "AcceptanceStore", "Clock", "DeliveryReader", "IdGenerator"]


@dataclass(frozen=True, slots=True)
class AcceptanceResult:
    """What the store did with an acceptance request."""

    created: bool  # False: the idempotency key was already reserved
    delivery_id: str  # the new delivery, or the one the key already points at
    outcome: str  # the outcome recorded with the key
    fingerprint_matches: bool  # for a duplicate: was it the same request?


class AcceptanceStore(Protocol):
    def accept(
        self,
        delivery: Delivery,
        first_attempt: Attempt | None,
        *,
        fingerprint: str,
        outcome: str,
    ) -> AcceptanceResult:
        """Atomically reserve the idempotency key and store, index and schedule the delivery.

        Raises ``StoreUnavailable`` when the store cannot be reached; then
        nothing, or the whole acceptance, was written, never a part.
        """
        ...


class DeliveryReader(Protocol):
    def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    def get_attempt(self, delivery_id: str, attempt_no: int) -> Attempt | None: ...
