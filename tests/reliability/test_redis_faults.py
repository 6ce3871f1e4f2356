"""Redis faults: a crash under load, connections cut under the stream poller and the scheduler.

Every Redis here is a real ``redis-server``. The crash test runs one with an
append-only file fsynced on every write (``appendfsync always``), kills it
with SIGKILL in the middle of a load of auth requests and stream commands,
and starts it again on the same data: what the service acknowledged before
the crash must be there, whole, and be delivered exactly once, counted by
Message-ID at a real SMTP server.

Proved elsewhere, not repeated here: a Redis stopped (SIGTERM) or frozen
(SIGSTOP) under a single request answers 503 with nothing partial
(tests/integration/test_intake_api.py), and every client connection of a
running poller dropped at once (tests/integration/test_stream_poller.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from mailcore.composition import (
    build_delivery_store,
    build_provider,
    build_scheduler,
    build_stream_poller,
)
from mailcore.config import Settings
from mailcore.contracts.auth import LoginCodeDeliveryRequest
from mailcore.domain.clock import SystemClock
from mailcore.domain.ids import UlidGenerator
from mailcore.services.auth_intake import AuthIntake
from mailcore.services.scheduler import SchedulerReport
from mailcore.services.stream_intake import PollReport
from mailcore.store.keys import RedisKeys
from tests.support.api_events import body_of
from tests.support.commands import STREAM, command, publish
from tests.support.counting_smtp import CountingSmtpServer
from tests.support.faults import (
    SchedulerObserver,
    blocked_clients,
    eventually,
    kill_clients,
    load_intake_handler,
    login_code_event,
    message_id,
    producer_client,
    running,
    smtp_environment,
)
from tests.support.pipeline import Pipeline
from tests.support.polling import RecordingObserver, last_entry_id
from tests.support.redis_server import RedisServer
from tests.support.store_invariants import count_deliveries, find_partial_state, text_keys

pytestmark = pytest.mark.integration

KEYS = RedisKeys()


@dataclass
class Load:
    """What the callers were told: acknowledged, refused (503) or anything else."""

    acknowledged: dict[str, str] = field(default_factory=dict)  # Idempotency-Key -> delivery
    refused: list[str] = field(default_factory=list)
    unexpected: list[int] = field(default_factory=list)
    published: list[str] = field(default_factory=list)  # delivery ids of acknowledged XADDs
    unpublished: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def counts(self) -> tuple[int, int, int, int]:
        with self.lock:
            return (
                len(self.acknowledged),
                len(self.refused),
                len(self.published),
                len(self.unpublished),
            )


def test_a_redis_crash_under_load_loses_no_acknowledged_delivery_and_sends_each_once(
    monkeypatch: pytest.MonkeyPatch,
    durable_redis: RedisServer,
    counting_smtp: CountingSmtpServer,
    aws: Any,
    attempt_queue_url: str,
) -> None:
    # Given the intake handler and a stream poller on a durable Redis
    #       (the intake without its fast path, so what the crash left behind can
    #       be inspected before any worker touches it; the soak runs the fast path)
    environment = smtp_environment(
        durable_redis.addr,
        counting_smtp.addr,
        MAIL_REDIS_OPERATION_TIMEOUT="500ms",
        MAIL_STREAM_BLOCK_TIMEOUT="100ms",
    )
    api = load_intake_handler(monkeypatch, environment)
    poller = build_stream_poller(Settings.from_environ(environment), RecordingObserver())
    producer = producer_client(durable_redis.addr)
    load = Load()
    stop_load = threading.Event()

    def send_load() -> None:
        number = 0
        while not stop_load.is_set():
            number += 1
            key = f"crash-{number:05d}"
            answer = api(login_code_event(key))
            fields = command(number)
            try:
                publish(producer, fields)
                published = True
            except redis.RedisError:
                published = False
            with load.lock:
                if answer["statusCode"] == 200:
                    load.acknowledged[key] = body_of(answer)["delivery_id"]
                elif answer["statusCode"] == 503:
                    load.refused.append(key)
                else:
                    load.unexpected.append(answer["statusCode"])
                if published:
                    load.published.append(fields["delivery_id"])
                else:
                    load.unpublished.append(fields)
            stop_load.wait(0.01)

    loader = threading.Thread(target=send_load, name="load")
    with running("stream-poller", poller.run):
        loader.start()
        try:
            eventually(
                lambda: load.counts()[0] >= 20 and load.counts()[2] >= 20, 60, "the load to run"
            )

            # When Redis is killed (SIGKILL) in the middle of it
            with load.lock:
                acknowledged_before = dict(load.acknowledged)
                published_before = list(load.published)
            durable_redis.kill()
            # Then the intake answers 503 (and producers' XADDs fail) while it is down
            eventually(lambda: load.counts()[1] >= 3 and load.counts()[3] >= 3, 30, "503s")

            # When it is started again on its append-only file and the load goes on
            durable_redis.start()
            resumed_at = load.counts()[0]
            eventually(lambda: load.counts()[0] >= resumed_at + 10, 60, "the intake to recover")
        finally:
            stop_load.set()
            loader.join(timeout=60)

        # And the callers retry what was refused, with the same keys and fields
        for key in load.refused:
            answer = api(login_code_event(key))
            assert answer["statusCode"] == 200, answer
            load.acknowledged[key] = body_of(answer)["delivery_id"]
        for fields in load.unpublished:
            publish(producer, fields)
            load.published.append(fields["delivery_id"])
        client = durable_redis.client()
        target = last_entry_id(client)
        eventually(
            lambda: client.get(KEYS.stream_offset(STREAM)) == target, 60, "the stream to drain"
        )

    # Then every answer was 200 or 503, never anything else
    assert load.unexpected == []
    # And Redis holds only whole acceptances: one per acknowledged request or command
    assert find_partial_state(client) == []
    expected = set(load.acknowledged.values()) | set(load.published)
    assert len(set(load.acknowledged.values())) == len(load.acknowledged)
    assert count_deliveries(client) == len(expected)
    stored = {key.rpartition(":")[2] for key in text_keys(client, KEYS.delivery("") + "*")}
    assert stored == expected
    # And in particular everything acknowledged before the crash survived it
    assert set(acknowledged_before.values()) <= stored
    assert set(published_before) <= stored

    # When the scheduler and the workers deliver the backlog
    settings = Settings.from_environ({**environment, "MAIL_ATTEMPT_QUEUE_URL": attempt_queue_url})
    pipeline = Pipeline(settings, aws, build_provider(settings))

    def all_settled() -> bool:
        pipeline.tick()
        pipeline.work()
        return client.zcard(KEYS.index_status("sent")) == len(expected)

    eventually(all_settled, 120, "every delivery to be sent", every=0.05)

    # Then each one reached the SMTP server exactly once (counted by Message-ID)
    received = counting_smtp.snapshot()
    assert {message_id(delivery_id) for delivery_id in expected} == set(received)
    assert set(received.values()) == {1}
    assert sum(received.values()) == len(expected)


def deliveries_reach(client: redis.Redis, count: int) -> Callable[[], bool]:
    return lambda: count_deliveries(client) == count


def test_the_stream_poller_survives_its_blocking_read_being_cut_and_a_redis_crash(
    durable_redis: RedisServer,
) -> None:
    # Given a poller waiting in XREAD BLOCK on an empty stream
    settings = Settings.from_environ(
        {
            "MAIL_REDIS_ADDR": durable_redis.addr,
            "MAIL_STREAM_BLOCK_TIMEOUT": "2s",
            "MAIL_REDIS_OPERATION_TIMEOUT": "500ms",
        }
    )
    observer = RecordingObserver()
    poller = build_stream_poller(settings, observer)
    client = durable_redis.client()
    with running("stream-poller", poller.run) as polling:
        for number in (1, 2, 3):
            # When Redis cuts exactly the connection blocked in XREAD
            blocked = eventually(
                lambda: blocked_clients(client, "xread"), 15, "the poller to block in XREAD"
            )
            kill_clients(client, blocked)
            publish(client, command(number))
            # Then the poller reads again from its offset and accepts what comes next
            eventually(deliveries_reach(client, number), 15, f"command {number}")

        # When Redis itself crashes while the poller is blocked, and comes back
        eventually(lambda: blocked_clients(client, "xread"), 15, "the poller to block again")
        durable_redis.kill()
        publish_after = command(4)
        durable_redis.start()
        client = durable_redis.client()
        publish(client, publish_after)
        # Then the poller carries on from the stored offset
        eventually(deliveries_reach(client, 4), 30, "command 4 after the crash")
        reports: list[PollReport] = polling.stop()

    # And it never lost its lease nor gave up: one run, every command accepted once
    assert [r.stopped_because for r in reports] == ["time is up"]
    assert reports[0].accepted == 4
    assert reports[0].duplicates == 0
    assert len(observer.store_errors) >= 1  # the crash was noticed, and waited out
    assert client.get(KEYS.stream_offset(STREAM)) == last_entry_id(client)
    assert find_partial_state(client) == []


def test_the_scheduler_loop_survives_cut_connections_and_a_redis_crash(
    durable_redis: RedisServer, aws: Any, attempt_queue_url: str
) -> None:
    # Given the scheduler looping every 50 ms, and an intake without its fast path
    environment = smtp_environment(
        durable_redis.addr,
        "127.0.0.1:2525",
        MAIL_ATTEMPT_QUEUE_URL=attempt_queue_url,
        MAIL_SCHEDULER_POLL_INTERVAL="50ms",
        MAIL_REDIS_OPERATION_TIMEOUT="500ms",
    )
    settings = Settings.from_environ(environment)
    observer = SchedulerObserver()
    scheduler = build_scheduler(settings, observer, sqs_client=aws)
    client = durable_redis.client()
    clock = SystemClock()
    intake = AuthIntake(
        build_delivery_store(settings, clock), clock, UlidGenerator(clock), settings.smtp_mode
    )
    accepted: list[str] = []

    def accept(count: int) -> None:
        for _ in range(count):
            request = LoginCodeDeliveryRequest(email="ada@example.com", code="1234", locale="en")
            key = f"scheduler-{len(accepted):03d}"
            accepted.append(intake.accept_login_code(request, key).delivery_id)

    def all_claimed() -> bool:
        return client.zcard(KEYS.claims()) == len(accepted)

    with running("scheduler", scheduler.run) as scheduling:
        accept(5)
        eventually(all_claimed, 15, "the first deliveries to be dispatched")

        # When every connection it has is cut, three times over, while it loops
        for _ in range(3):
            client.client_kill_filter(_type="normal", skipme=True)
            accept(5)
            # Then it reconnects and dispatches what became due
            eventually(all_claimed, 15, "deliveries after a cut to be dispatched")

        # When Redis crashes between two polls and comes back on its AOF
        durable_redis.kill()
        eventually(lambda: observer.store_errors, 15, "the scheduler to notice the crash")
        durable_redis.start()
        client = durable_redis.client()
        accept(5)
        # Then the same run carries on and dispatches again
        eventually(all_claimed, 30, "deliveries after the crash to be dispatched")
        reports: list[SchedulerReport] = scheduling.stop()

    # And it kept its lease the whole time, in one run
    assert [r.stopped_because for r in reports] == ["time is up"]
    assert reports[0].store_errors >= 1
    # And each delivery went to the queue exactly once
    bodies: list[str] = []
    while batch := aws.receive_message(QueueUrl=attempt_queue_url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        bodies += [message["Body"] for message in batch]
    dispatched = [json.loads(body)["delivery_id"] for body in bodies]
    assert sorted(dispatched) == sorted(accepted)
    assert reports[0].claimed == len(accepted) == 25
