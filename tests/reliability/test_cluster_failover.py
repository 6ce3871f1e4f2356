"""A primary of the Redis Cluster fails over to its replica while mail is being accepted.

The service runs in cluster mode over four partitions on a local three-primary
cluster (one replica each). Login codes arrive through the auth intake and
generic commands through the stream while the primary that owns partition 0
(where the stream offset lives, with a share of the deliveries) hands over to
its replica. Clients retry what was refused, as callers of a 503 do. Nothing
acknowledged may be lost, nothing may be accepted twice, and afterwards every
delivery goes out exactly once from the promoted primary.

The failover is the coordinated kind (``CLUSTER FAILOVER``: the replica takes
over once it has every write), as ElastiCache performs for maintenance and
scaling. A primary that crashes loses what it acknowledged but had not yet
replicated; Redis replication is asynchronous and ElastiCache has no ``WAIT``,
which ``docs/scaling.md`` says.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from mailcore.composition import (
    build_attempt_stores,
    build_auth_intake,
    build_claimed_attempt_steps,
    build_queries,
    build_stream_poller,
    load_catalog,
    sender_of,
)
from mailcore.config import Settings
from mailcore.contracts.auth import LoginCodeDeliveryRequest
from mailcore.domain.clock import SystemClock
from mailcore.errors import StoreUnavailable
from mailcore.providers.stub import StubProvider
from mailcore.services.attempts import AttemptExecutor
from mailcore.store.keys import RedisKeys
from tests.support.commands import command, publish
from tests.support.partitions import CONTROL, total
from tests.support.polling import RecordingObserver, for_seconds, until_drained
from tests.support.redis_backend import ClusterBackend
from tests.support.store_invariants import count_deliveries, find_partial_state

pytestmark = pytest.mark.integration

LOAD_SECONDS = 3.0
FAILOVER_AFTER_SECONDS = 1.0
PAUSE_S = 0.005  # each caller sends about 150 a second


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[ClusterBackend]:
    cluster = ClusterBackend(tmp_path / "cluster")
    cluster.start()
    yield cluster
    cluster.stop()


class _AuthCaller:
    """The Auth service: one login code after another, each retried on a 503 until accepted."""

    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self.intake = build_auth_intake(settings)
        self.stop = stop
        self.acknowledged: dict[str, str] = {}  # idempotency key -> delivery id
        self.refusals = 0

    def run(self) -> None:
        number = 0
        while not self.stop.is_set():
            key = f"login-{number}"
            request = LoginCodeDeliveryRequest(
                email=f"user{number}@example.com", code="482913", locale="en"
            )
            while True:
                try:
                    accepted = self.intake.accept_login_code(request, key)
                except StoreUnavailable:
                    self.refusals += 1
                    time.sleep(0.02)
                    continue
                self.acknowledged[key] = accepted.delivery_id
                break
            number += 1
            time.sleep(PAUSE_S)


class _Producer:
    """The Notification service: XADD after XADD; only acknowledged entries count."""

    def __init__(self, client: redis.Redis, stop: threading.Event) -> None:
        self.client = client
        self.stop = stop
        self.published: list[str] = []  # delivery ids of acknowledged entries
        self.refusals = 0

    def run(self) -> None:
        number = 0
        while not self.stop.is_set():
            fields = command(number)
            try:
                publish(self.client, fields)
            except redis.RedisError:
                self.refusals += 1
                time.sleep(0.02)
                continue
            self.published.append(fields["delivery_id"])
            number += 1
            time.sleep(PAUSE_S)


def test_a_primary_failing_over_under_load_loses_and_doubles_nothing(
    backend: ClusterBackend,
) -> None:
    # Given the service in cluster mode over four partitions, under load from
    # the auth intake and the command stream, with a stream poller running
    settings = Settings.from_environ(
        {
            **backend.environ(),
            "MAIL_SMTP_MODE": "smtp",
            "MAIL_SMTP_ADDR": "127.0.0.1:2525",
            "MAIL_SMTP_FROM_EMAIL": "noreply@mail.example.com",
            "MAIL_STREAM_BLOCK_TIMEOUT": "100ms",
            "MAIL_REDIS_OPERATION_TIMEOUT": "500ms",
        }
    )
    assert settings.redis_partitions == 4
    client = backend.client()
    stop = threading.Event()
    caller = _AuthCaller(settings, stop)
    producer = _Producer(backend.client(), stop)
    observer = RecordingObserver()
    poller = build_stream_poller(settings, observer)
    threads = [
        threading.Thread(target=caller.run),
        threading.Thread(target=producer.run),
        threading.Thread(target=lambda: poller.run(for_seconds(LOAD_SECONDS + 1))),
    ]
    for thread in threads:
        thread.start()

    # When the primary owning partition 0 (the stream offset and a share of
    # the deliveries) fails over to its replica in the middle of it
    time.sleep(FAILOVER_AFTER_SECONDS)
    old_primary = backend.cluster.master_of_key(CONTROL.stream_offset("x"))
    new_primary = backend.cluster.failover(old_primary)
    time.sleep(LOAD_SECONDS - FAILOVER_AFTER_SECONDS)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    # ... and a poller run reads whatever the first one had not
    build_stream_poller(settings, RecordingObserver()).run(until_drained(client))

    # Then the replica is the primary now, and load went on through the switch
    assert new_primary != old_primary
    assert backend.cluster.master_of_key(CONTROL.stream_offset("x")) == new_primary
    assert len(caller.acknowledged) > 50
    assert len(producer.published) > 50

    # And every acknowledged login code and stream command is a delivery, findable by id
    queries = build_queries(settings, client)
    acknowledged = [*caller.acknowledged.values(), *producer.published]
    missing = [d for d in acknowledged if queries.delivery(d) is None]
    assert missing == []
    # And nothing was accepted twice or left half-written, and no entry was refused
    assert count_deliveries(client) == len(acknowledged)
    assert find_partial_state(client) == []
    assert total(client, lambda keys: keys.index_malformed()) == 0
    assert len(set(acknowledged)) == len(acknowledged)

    # When the workers send everything due (claimed partition by partition)
    provider = StubProvider()
    executor = AttemptExecutor(
        build_claimed_attempt_steps(settings, client),
        load_catalog(settings),
        provider,
        sender_of(settings),
        SystemClock(),
    )
    now = SystemClock().now_ms()
    for store in build_attempt_stores(settings, client):
        due = store.due_delivery_ids(now + 1, 100_000)
        for claim in store.claim(due, now, now + 60_000):
            executor.execute(claim)

    # Then every delivery went out exactly once, and each is recorded sent
    sent = Counter(cast(str, message["Message-ID"]) for _, _, message in provider.sent)
    assert len(sent) == len(acknowledged)
    assert set(sent.values()) == {1}
    statuses = Counter(
        cast(str, client.hget(RedisKeys.of_partition(p).delivery(d), "status"))
        for d in acknowledged
        for p in range(settings.redis_partitions)
        if client.exists(RedisKeys.of_partition(p).delivery(d))
    )
    assert statuses == Counter({"sent": len(acknowledged)})


def test_a_cluster_that_goes_away_is_an_outage_not_an_error(backend: ClusterBackend) -> None:
    # Given the auth intake in cluster mode, having accepted a login code
    settings = Settings.from_environ({**backend.environ(), "MAIL_REDIS_OPERATION_TIMEOUT": "200ms"})
    intake = build_auth_intake(settings)
    request = LoginCodeDeliveryRequest(email="ada@example.com", code="482913", locale="en")
    intake.accept_login_code(request, "before")

    # When every node of the cluster stops
    backend.stop()

    # Then the next request is refused as the store being unavailable (a 503
    # the caller retries), not an unexpected error (a 500)
    with pytest.raises(StoreUnavailable):
        intake.accept_login_code(request, "after")
