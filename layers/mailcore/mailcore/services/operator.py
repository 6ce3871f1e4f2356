"""What operators may do: read deliveries, attempts, malformed commands and dead
letters, and resend a settled delivery as a linked clone."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from mailcore.contracts.auth import AcceptanceOutcome
from mailcore.contracts.operator import (
    AttemptList,
    AttemptView,
    DeadLetterPage,
    DeadLetterView,
    DeliveryPage,
    DeliveryView,
    MalformedCommandPage,
    MalformedCommandView,
)
from mailcore.domain.model import Attempt, Delivery, Source
from mailcore.domain.states import AttemptStatus, DeliveryStatus, is_resendable
from mailcore.errors import IdempotencyConflict, NotFound, NotResendable
from mailcore.ports import AcceptanceStore, Clock, DeliveryFilters, DeliveryQueries, IdGenerator
from mailcore.services.dispatch import Dispatcher


@dataclass(frozen=True, slots=True)
class Resent:
    clone: DeliveryView
    replayed: bool  # the same resend (same key, same parent) was made before


def _malformed_view(record: dict[str, str]) -> MalformedCommandView:
    return MalformedCommandView(
        stream_entry_id=record["stream_entry_id"],
        stream=record.get("stream", ""),
        failure_code=record.get("failure_code", ""),
        failure_message=record.get("failure_message", ""),
        raw_fields=json.loads(record.get("raw_fields") or "{}"),
        recorded_at_ms=int(record.get("recorded_at_ms", "0")),
    )


class OperatorService:
    def __init__(
        self,
        queries: DeliveryQueries,
        store: AcceptanceStore,
        clock: Clock,
        ids: IdGenerator,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self._queries = queries
        self._store = store
        self._clock = clock
        self._ids = ids
        self._dispatcher = dispatcher

    def list_deliveries(
        self, filters: DeliveryFilters, limit: int, cursor: str | None
    ) -> DeliveryPage:
        page = self._queries.deliveries(filters, limit, cursor)
        return DeliveryPage(
            items=[DeliveryView.of(d) for d in page.items], next_cursor=page.next_cursor
        )

    def get_delivery(self, delivery_id: str) -> DeliveryView:
        return DeliveryView.of(self._delivery(delivery_id))

    def attempts(self, delivery_id: str) -> AttemptList:
        """A delivery's attempts, as long as any is kept.

        Attempts outlive their delivery (``MAIL_ATTEMPT_TTL`` is longer than
        ``MAIL_DELIVERY_TTL`` by default): an expired delivery's attempts are
        still answered; only when neither is left is the id unknown.
        """
        delivery = self._queries.delivery(delivery_id)
        count = delivery.attempt_count if delivery is not None else None
        attempts = self._queries.attempts(delivery_id, count)
        if delivery is None and not attempts:
            raise NotFound(f"no delivery {delivery_id}")
        return AttemptList(items=[AttemptView.of(a) for a in attempts])

    def malformed_command(self, stream_entry_id: str) -> MalformedCommandView:
        record = self._queries.malformed_command(stream_entry_id)
        if record is None:
            raise NotFound(f"no malformed command {stream_entry_id}")
        return _malformed_view(record)

    def malformed_commands(self, limit: int, cursor: str | None) -> MalformedCommandPage:
        page = self._queries.malformed_commands(limit, cursor)
        return MalformedCommandPage(
            items=[_malformed_view(r) for r in page.items], next_cursor=page.next_cursor
        )

    def dead_letters(self, limit: int, cursor: str | None) -> DeadLetterPage:
        page = self._queries.dead_letters(limit, cursor)
        return DeadLetterPage(
            items=[
                DeadLetterView(
                    delivery_id=entry.delivery_id,
                    attempts=entry.attempts,
                    last_outcome=entry.last_outcome,
                    last_summary=entry.last_summary,
                    dead_lettered_at_ms=entry.dead_lettered_at_ms,
                    delivery=DeliveryView.of(entry.delivery) if entry.delivery else None,
                )
                for entry in page.items
            ],
            next_cursor=page.next_cursor,
        )

    def resend(
        self,
        delivery_id: str,
        idempotency_key: str,
        *,
        time_left_ms: Callable[[], int] | None = None,
    ) -> Resent:
        """Clone a settled delivery into a new one with a fresh first attempt.

        The parent is never changed. The clone keeps the parent's envelope and
        content (secret variables included, so it can be rendered) and links
        back through ``parent_delivery_id``; it has its own id, so its own
        Message-ID. The same key with the same parent returns the same clone.
        """
        parent = self._delivery(delivery_id)
        if not is_resendable(parent.status):
            raise NotResendable(delivery_id, parent.status)
        now = self._clock.now_ms()
        clone = Delivery(
            delivery_id=self._ids.new_delivery_id(),
            source=Source.OPERATOR_RESEND,
            status=DeliveryStatus.QUEUED,
            payload_mode=parent.payload_mode,
            envelope=parent.envelope,
            idempotency_key=idempotency_key,
            created_at_ms=now,
            updated_at_ms=now,
            template_id=parent.template_id,
            locale=parent.locale,
            variables=parent.variables,
            secret_variables=parent.secret_variables,
            content=parent.content,
            attachments=parent.attachments,
            attempt_count=1,
            parent_delivery_id=parent.delivery_id,
        )
        first = Attempt(clone.delivery_id, 1, AttemptStatus.SCHEDULED, now, now)
        fingerprint = hashlib.sha256(f"resend:{parent.delivery_id}".encode()).hexdigest()
        result = self._store.accept(
            clone, first, fingerprint=fingerprint, outcome=AcceptanceOutcome.SENT
        )
        if not result.fingerprint_matches:
            raise IdempotencyConflict(Source.OPERATOR_RESEND)
        if result.created and self._dispatcher is not None:
            # Within the bound on claims in flight: a script resending many
            # deliveries must not flood the queue (the scheduler sends the rest).
            self._dispatcher.dispatch_soon(
                [clone.delivery_id], partition=result.partition, time_left_ms=time_left_ms
            )
        return Resent(self.get_delivery(result.delivery_id), replayed=not result.created)

    def _delivery(self, delivery_id: str) -> Delivery:
        delivery = self._queries.delivery(delivery_id)
        if delivery is None:
            raise NotFound(f"no delivery {delivery_id}")
        return delivery
