"""Backpressure and recovery under a burst, against real Redis and moto SQS.

Claims in flight are bounded (MAIL_MAX_CLAIMS_IN_FLIGHT): the scheduler and
the stream poller's fast path claim only below the bound, the rest waits in
the schedule; the auth intake's fast path ignores it. Expired claims are all
taken back in one recovery, however many there are.

With several partitions each keeps its own claims set and claims up to its
share of the bound (the shares add up to it): a poll then claims up to the
bound, never past it, and claims and schedule are counted over every partition.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import redis

from mailcore.composition import (
    SCHEDULER_LEASE,
    build_attempt_stores,
    build_delivery_store,
    build_dispatcher,
    build_stream_poller,
)
from mailcore.config import Settings
from mailcore.contracts.auth import LoginCodeDeliveryRequest
from mailcore.domain.clock import SystemClock
from mailcore.domain.ids import UlidGenerator
from mailcore.errors import StoreUnavailable
from mailcore.ports import ScheduleStats
from mailcore.providers.stub import StubProvider
from mailcore.services.attempts import AttemptReport
from mailcore.services.auth_intake import AuthIntake
from mailcore.services.scheduler import Scheduler
from mailcore.store.client import build_redis_client
from mailcore.store.keys import RedisKeys
from mailcore.store.lease import RedisLease
from tests.support.commands import STREAM, command, publish
from tests.support.fakes import SMTP_MODE_ENV
from tests.support.partitions import (
    CONTROL,
    EVERY_PARTITION,
    by_partition,
    delivery_record,
    home_keys,
    total,
)
from tests.support.pipeline import Pipeline
from tests.support.polling import RecordingObserver, until_drained
from tests.support.redis_backend import RedisBackend

pytestmark = pytest.mark.integration

BOUND = 10
MakePipeline = Callable[..., Pipeline]


@pytest.fixture
def bounded_settings(redis_server: RedisBackend, attempt_queue_url: str) -> Settings:
    return Settings.from_environ(
        {
            **redis_server.environ(),
            "MAIL_ATTEMPT_QUEUE_URL": attempt_queue_url,
            "MAIL_STREAM_BLOCK_TIMEOUT": "100ms",
            "MAIL_MAX_CLAIMS_IN_FLIGHT": str(BOUND),
            **SMTP_MODE_ENV,
        }
    )


@pytest.fixture
def make_pipeline(bounded_settings: Settings, aws: Any, redis_client: redis.Redis) -> MakePipeline:
    def make(provider: StubProvider | None = None) -> Pipeline:
        return Pipeline(bounded_settings, aws, provider or StubProvider())

    return make


def accept_without_fast_path(pipeline: Pipeline, count: int) -> list[str]:
    """``count`` login codes accepted and due, none dispatched (as if the fast path failed)."""
    intake = AuthIntake(
        build_delivery_store(pipeline.settings, pipeline.clock),
        pipeline.clock,
        UlidGenerator(pipeline.clock),
        pipeline.settings.smtp_mode,
    )
    request = LoginCodeDeliveryRequest(email="ada@example.com", code="482913", locale="en")
    return [
        intake.accept_login_code(request, f"burst-{number:05d}").delivery_id
        for number in range(count)
    ]


def publish_burst(client: redis.Redis, count: int) -> list[str]:
    for number in range(count):
        publish(client, command(number))
    return [f"notif-{number:06d}" for number in range(count)]


def run_stream_poller(pipeline: Pipeline, client: redis.Redis) -> None:
    """One stream_poller invocation until the stream is consumed, fast path included."""
    poller = build_stream_poller(pipeline.settings, RecordingObserver(), sqs_client=pipeline.sqs)
    poller.run(until_drained(client, STREAM))
    # The poller accepted on the real clock; the pipeline's catches up with it.
    pipeline.clock.now = SystemClock().now_ms()


def queued_delivery_ids(pipeline: Pipeline) -> list[str]:
    """Every message on the attempt queue (received, hidden for the rest of the test)."""
    found: list[str] = []
    while batch := pipeline.sqs.receive_message(
        QueueUrl=pipeline.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600
    ).get("Messages", []):
        found += [json.loads(message["Body"])["delivery_id"] for message in batch]
    return found


def claims(client: redis.Redis) -> int:
    """Claims in flight, over every partition."""
    return total(client, RedisKeys.claims)


def scheduled(client: redis.Redis) -> int:
    """Deliveries waiting in the schedule, over every partition."""
    return total(client, RedisKeys.attempt_schedule)


def up_to_the_bound(settings: Settings, claimed: int) -> bool:
    """Exactly the bound with one partition; with several, each claims up to its share."""
    if settings.redis_partitions == 1:
        return claimed == BOUND
    return 0 < claimed <= BOUND


def drain(pipeline: Pipeline, rounds: int = 50) -> list[AttemptReport]:
    """Workers and scheduler polls take turns until nothing is queued, claimed or due."""
    reports: list[AttemptReport] = []
    client = pipeline.client
    for _ in range(rounds):
        reports += pipeline.work()
        pipeline.tick()
        if not claims(client) and not scheduled(client):
            return reports
    raise AssertionError("the pipeline did not drain")


def sent_once_each(provider: StubProvider, client: redis.Redis, delivery_ids: list[str]) -> None:
    message_ids = Counter(str(message["Message-ID"]) for _, _, message in provider.sent)
    assert len(provider.sent) == len(delivery_ids)
    assert set(message_ids.values()) == {1}
    for delivery_id in delivery_ids:
        record = delivery_record(client, delivery_id)
        assert (record["status"], record["attempt_count"]) == ("sent", "1"), delivery_id


def test_the_scheduler_never_claims_past_the_bound(
    make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    # Given 30 login codes due and none dispatched, and a bound of 10 claims in flight
    provider = StubProvider()
    pipeline = make_pipeline(provider)
    delivery_ids = accept_without_fast_path(pipeline, 30)

    # When the scheduler polls three times while no worker has finished anything
    polls = [pipeline.tick() for _ in range(3)]

    # Then it claimed up to the bound and no further: the rest waits, due, in the schedule
    first = polls[0].claimed
    assert up_to_the_bound(pipeline.settings, first)
    assert [poll.claimed for poll in polls] == [first, 0, 0]
    assert claims(redis_client) == first
    assert scheduled(redis_client) == 30 - first
    # And every partition holding some of them claimed its part
    assert {n for n, keys in enumerate(EVERY_PARTITION) if redis_client.zcard(keys.claims())} == (
        set(by_partition(redis_client, delivery_ids))
    )
    # And once workers finish what was queued, the next poll claims up to the bound again
    assert len(pipeline.work()) == first
    assert up_to_the_bound(pipeline.settings, pipeline.tick().claimed)
    # And in the end every one is sent exactly once, with no stale message skipped
    reports = pipeline.work() + drain(pipeline)
    assert [r.skipped for r in reports if r.skipped] == []
    sent_once_each(provider, redis_client, delivery_ids)


def test_the_stream_fast_path_stops_at_the_bound_and_the_scheduler_claims_the_rest(
    make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    # Given a burst of 25 stream commands and a bound of 10 claims in flight
    provider = StubProvider()
    pipeline = make_pipeline(provider)
    delivery_ids = publish_burst(redis_client, 25)

    # When the stream poller accepts them, with its fast path
    run_stream_poller(pipeline, redis_client)

    # Then the fast path dispatched up to 10 and left the rest due in the schedule,
    # as if it never ran
    dispatched = claims(redis_client)
    assert up_to_the_bound(pipeline.settings, dispatched)
    assert len(pipeline.queued_messages()) == dispatched
    waiting = [
        d
        for d in delivery_ids
        if redis_client.zscore(home_keys(redis_client, d).attempt_schedule(), d)
    ]
    assert len(waiting) == 25 - dispatched
    for delivery_id in waiting:
        record = delivery_record(redis_client, delivery_id)
        assert record["status"] == "queued"
        assert not {"claim_token", "claim_deadline_ms", "claims_without_start"} & set(record)
        keys = home_keys(redis_client, delivery_id)
        attempt = redis_client.hget(keys.attempt(delivery_id, 1), "status")
        assert attempt == "scheduled"
    # And the scheduler claims nothing more until workers make room
    assert pipeline.tick().claimed == 0

    # When workers and the scheduler take turns
    reports = drain(pipeline)

    # Then all 25 are sent exactly once: nothing lost, nothing doubled, nothing skipped
    assert len(reports) == 25
    assert [r.skipped for r in reports if r.skipped] == []
    sent_once_each(provider, redis_client, delivery_ids)
    assert pipeline.queued_messages() == []


def test_the_auth_fast_path_ignores_the_bound(
    make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    # Given a stream burst that filled the claims in flight up to the bound
    pipeline = make_pipeline()
    publish_burst(redis_client, 25)
    run_stream_poller(pipeline, redis_client)
    in_flight = claims(redis_client)
    assert up_to_the_bound(pipeline.settings, in_flight)

    # When a login code is accepted
    delivery_id = pipeline.accept_login_code()  # asserts that its fast path dispatched it

    # Then it is claimed and queued at once, past the bound (past its partition's share)
    keys = home_keys(redis_client, delivery_id)
    assert redis_client.zscore(keys.claims(), delivery_id) is not None
    assert claims(redis_client) == in_flight + 1
    assert delivery_id in queued_delivery_ids(pipeline)
    # And the bounded dispatchers still claim nothing until workers bring it below the bound
    assert pipeline.tick().claimed == 0
    assert scheduled(redis_client) == 25 - in_flight


class RecordingSchedulerObserver:
    def __init__(self) -> None:
        self.recoveries: list[tuple[str, str]] = []

    def recovered(self, recoveries: list[tuple[str, str]]) -> None:
        self.recoveries += recoveries

    def schedule_stats(self, stats: ScheduleStats) -> None:
        pass

    def store_unavailable(self, error: StoreUnavailable) -> None:
        raise AssertionError(f"Redis failed: {error}")


def test_one_scheduler_run_takes_back_a_thousand_expired_claims(
    make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    # Given 1,000 first attempts claimed (unbounded) whose messages never reached a worker
    pipeline = make_pipeline()
    delivery_ids = accept_without_fast_path(pipeline, 1_000)
    now = pipeline.clock.now_ms()
    claimed = [
        claim
        for partition, ids in by_partition(redis_client, delivery_ids).items()
        for claim in pipeline.stores[partition].claim(ids, now, now + 45_000)
    ]
    assert len(claimed) == 1_000

    # When their deadline has passed and one scheduler run starts
    pipeline.advance(45_001)
    client = build_redis_client(pipeline.settings)
    observer = RecordingSchedulerObserver()
    slept = threading.Event()
    scheduler = Scheduler(
        pipeline.stores,
        pipeline.dispatcher,
        RedisLease(client, CONTROL.lease(SCHEDULER_LEASE), timedelta(seconds=11)),
        observer,
        pipeline.clock,
        poll_interval_ms=250,
        claims_per_poll=40,
        sleep=lambda _: slept.set(),  # the run ends at its first pause
    )
    report = scheduler.run(lambda: 0 if slept.is_set() else 60_000)

    # Then every expired claim was taken back in that run, each due again without a rung used
    assert report.recovered == 1_000
    assert sorted(d for d, _ in observer.recoveries) == sorted(delivery_ids)
    assert {what for _, what in observer.recoveries} == {"rescheduled"}
    now = pipeline.clock.now_ms()
    assert sum(redis_client.zcount(keys.claims(), "-inf", now - 1) for keys in EVERY_PARTITION) == 0
    # And the same run dispatched them again, up to the bound
    assert up_to_the_bound(pipeline.settings, report.claimed)
    assert claims(redis_client) == report.claimed
    assert scheduled(redis_client) == 1_000 - report.claimed


def test_dispatchers_racing_at_the_bound_never_go_past_it(
    bounded_settings: Settings, aws: Any, redis_client: redis.Redis
) -> None:
    # Given 200 due deliveries spread over the partitions, 4 claims already in
    # flight (none past a partition's share), and eight dispatchers, each with its
    # own connection, about to claim 24 candidates each at once
    clock = SystemClock()
    now = clock.now_ms()
    partitions = bounded_settings.redis_partitions
    delivery_ids = [f"d-{number:03d}" for number in range(200)]
    home = {d: number % partitions for number, d in enumerate(delivery_ids)}
    for delivery_id in delivery_ids:
        keys = RedisKeys.of_partition(home[delivery_id])
        redis_client.hset(
            keys.delivery(delivery_id), mapping={"status": "queued", "attempt_count": "1"}
        )
        redis_client.zadd(keys.attempt_schedule(), {delivery_id: now})
    stores = build_attempt_stores(bounded_settings)
    for delivery_id in delivery_ids[:4]:
        assert len(stores[home[delivery_id]].claim([delivery_id], now, now + 45_000)) == 1
    dispatchers = [
        build_dispatcher(bounded_settings, clock, build_redis_client(bounded_settings), aws)
        for _ in range(8)
    ]
    start = threading.Barrier(len(dispatchers))
    claimed: list[int] = []

    def race(index: int) -> None:
        dispatcher = dispatchers[index]
        assert dispatcher is not None
        candidates = delivery_ids[4 + 24 * index : 4 + 24 * (index + 1)]
        start.wait()
        claimed.append(
            sum(
                dispatcher.dispatch(
                    [d for d in candidates if home[d] == partition], partition=partition
                ).claimed
                for partition in range(partitions)
            )
        )

    # When they all dispatch at the same moment
    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(dispatchers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    # Then together they claimed exactly the room left under the bound
    assert len(claimed) == len(dispatchers)
    assert sum(claimed) == BOUND - 4
    assert claims(redis_client) == BOUND
    assert scheduled(redis_client) == 200 - BOUND
