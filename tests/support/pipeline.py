"""The delivery pipeline wired as in production, on a clock the test moves.

Redis is real, the attempt queue is SQS (moto), the provider is whatever the
test hands in (the stub, or SMTP to a real server on a local port). ``tick``
is one scheduler poll; ``work`` is one attempt-worker batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from mailcore.composition import (
    build_attempt_stores,
    build_claimed_attempt_steps,
    build_delivery_store,
    build_dispatcher,
    load_catalog,
    sender_of,
)
from mailcore.config import Settings
from mailcore.contracts.attempt_message import decode_claim
from mailcore.contracts.auth import LoginCodeDeliveryRequest
from mailcore.domain.clock import SystemClock
from mailcore.domain.ids import UlidGenerator
from mailcore.ports import MailProvider
from mailcore.services.attempts import AttemptExecutor, AttemptReport
from mailcore.services.auth_intake import AuthIntake
from mailcore.services.dispatch import Dispatcher, DispatchResult
from mailcore.store.attempt_store import RedisAttemptStore
from mailcore.store.client import build_redis_client
from tests.support.fakes import FixedClock
from tests.support.partitions import home_keys, partition_number


@dataclass
class Pipeline:
    settings: Settings
    sqs: Any
    provider: MailProvider
    # Starts at the real time (deliveries accepted by other parts of the test
    # carry real timestamps), then moves only when the test says so.
    clock: FixedClock = field(default_factory=lambda: FixedClock(SystemClock().now_ms()))

    def __post_init__(self) -> None:
        assert self.settings.attempt_queue_url
        self.queue_url: str = self.settings.attempt_queue_url
        # One client for every partition's store, and for the test's own lookups.
        self.client: redis.Redis = build_redis_client(self.settings)
        self.stores: list[RedisAttemptStore] = build_attempt_stores(self.settings, self.client)
        dispatcher = build_dispatcher(
            self.settings, self.clock, sqs_client=self.sqs, stores=self.stores
        )
        assert dispatcher is not None
        self.dispatcher: Dispatcher = dispatcher
        self.executor = AttemptExecutor(
            build_claimed_attempt_steps(self.settings),
            load_catalog(self.settings),
            self.provider,
            sender_of(self.settings),
            self.clock,
        )
        self.recoveries: list[tuple[str, str]] = []

    def store_for(self, delivery_id: str) -> RedisAttemptStore:
        """The attempt store of the partition holding this delivery."""
        return self.stores[partition_number(home_keys(self.client, delivery_id))]

    def accept_login_code(
        self,
        *,
        email: str = "ada@example.com",
        locale: str = "en",
        key: str = "k-1",
        code: str = "482913",
    ) -> str:
        """The auth intake with its fast path, on this pipeline's clock."""
        intake = AuthIntake(
            build_delivery_store(self.settings, self.clock),
            self.clock,
            UlidGenerator(self.clock),
            self.settings.smtp_mode,
            dispatcher=self.dispatcher,
        )
        request = LoginCodeDeliveryRequest(email=email, code=code, locale=locale)
        accepted = intake.accept_login_code(request, key)
        assert accepted.dispatched
        return accepted.delivery_id

    def advance(self, milliseconds: int) -> None:
        self.clock.now += milliseconds

    def tick(self) -> DispatchResult:
        """One scheduler poll: recover expired claims, then dispatch what is due."""
        for store in self.stores:
            self.recoveries += store.recover_expired(self.clock.now_ms())
        return self.dispatcher.dispatch_due(100)

    def queued_messages(self) -> list[dict[str, Any]]:
        reply = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0
        )
        return list(reply.get("Messages", []))

    def work(self) -> list[AttemptReport]:
        """One worker batch: every queued message executed, then deleted."""
        reports: list[AttemptReport] = []
        while True:
            reply = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
            messages = reply.get("Messages", [])
            if not messages:
                break
            for message in messages:
                reports.append(self.executor.execute(decode_claim(message["Body"])))
                self.sqs.delete_message(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
        self.executor.close()
        return reports

    def run_ladder(self, rounds: int) -> list[AttemptReport]:
        """Work, then wait out each retry delay and work again, ``rounds`` times."""
        reports = self.work()
        for step in self.settings.retry_schedule[:rounds]:
            self.advance(int(step.total_seconds() * 1000))
            self.tick()
            reports += self.work()
        return reports
