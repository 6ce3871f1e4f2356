"""Process faults: workers and pollers killed mid-invocation, SQS redelivery, racing workers.

A worker here is the ``attempt_worker`` handler cold-started in a process of
its own with the SQS event Lambda would hand it, and killed with SIGKILL
the way Lambda ends an environment that ran out of time or memory. Where it
dies is chosen exactly, never by a sleep: the SMTP server holds the message
after its data arrived (``stall_next_data``), or Redis holds the worker's next
script (``CLIENT PAUSE … WRITE``) and ``CLIENT LIST`` shows it waiting there.

The scheduler's side runs on the Pipeline harness (its clock moves past the
claim deadline instead of the test waiting 40 s for it). What the far end
received is counted by Message-ID (stable across a delivery's attempts) at a
real SMTP server.

Stream pollers are killed the same way, wherever they happen to be in a
backlog. Proved elsewhere, not repeated here: a poller process that dies
exactly between reading a batch and accepting it loses and doubles nothing,
and a worker that comes back after its claim was recovered cannot record an
outcome (tests/integration/test_stream_poller.py, test_delivery_pipeline.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from mailcore.composition import build_provider, build_stream_poller, load_catalog, sender_of
from mailcore.config import Settings
from mailcore.contracts.attempt_message import decode_claim
from mailcore.domain.clock import SystemClock
from mailcore.ports import ClaimedAttempt, StartResult, stream_id
from mailcore.services.attempts import AttemptExecutor, AttemptReport
from mailcore.store.attempt_store import RedisAttemptStore
from mailcore.store.client import build_redis_client
from mailcore.store.keys import RedisKeys
from scripts.local_stack.attempt_queue import failed_message_ids, sqs_event
from tests.support.commands import STREAM, StreamFields, command
from tests.support.counting_smtp import CountingSmtpServer
from tests.support.faults import (
    REPO_ROOT,
    WorkerProcess,
    blocked_clients,
    eventually,
    freeze_writes,
    message_id,
    smtp_environment,
    thaw_writes,
)
from tests.support.lambda_runner import invoke_in_fresh_process
from tests.support.pipeline import Pipeline
from tests.support.polling import RecordingObserver, last_entry_id, until_drained
from tests.support.redis_server import RedisServer
from tests.support.store_invariants import count_deliveries, find_partial_state

pytestmark = pytest.mark.integration

KEYS = RedisKeys()
REGION = "eu-west-1"
SIGKILLED = -9


@pytest.fixture
def worker_environment(
    redis_server: RedisServer, redis_client: redis.Redis, counting_smtp: CountingSmtpServer
) -> dict[str, str]:
    """A worker's settings: SMTP to the counting server, patient with a paused Redis."""
    return smtp_environment(
        redis_server.addr,
        counting_smtp.addr,
        MAIL_SMTP_TIMEOUT="10s",
        MAIL_RETRY_SCHEDULE="1s,1s,1s",
        MAIL_REDIS_OPERATION_TIMEOUT="30s",
    )


@pytest.fixture
def pipeline(worker_environment: dict[str, str], aws: Any, attempt_queue_url: str) -> Pipeline:
    """Intake fast path, scheduler and in-process workers, on the worker's settings."""
    settings = Settings.from_environ(
        {**worker_environment, "MAIL_ATTEMPT_QUEUE_URL": attempt_queue_url}
    )
    return Pipeline(settings, aws, build_provider(settings))


def receive(pipeline: Pipeline, visibility_s: int, count: int = 1) -> list[Any]:
    """Take ``count`` messages off the queue as the event source mapping does."""

    def batch() -> list[Any]:
        reply = pipeline.sqs.receive_message(
            QueueUrl=pipeline.queue_url,
            MaxNumberOfMessages=count,
            VisibilityTimeout=visibility_s,
            MessageSystemAttributeNames=["All"],
        )
        return list(reply.get("Messages", []))

    messages = eventually(batch, 30, "a message on the attempt queue", every=0.1)
    assert len(messages) == count
    return messages


def event_of(pipeline: Pipeline, messages: Sequence[Any]) -> dict[str, Any]:
    arn = pipeline.sqs.get_queue_attributes(
        QueueUrl=pipeline.queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    return sqs_event(messages, arn, REGION)


def visible_messages(pipeline: Pipeline) -> int:
    attributes = pipeline.sqs.get_queue_attributes(
        QueueUrl=pipeline.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def record(client: redis.Redis, key: str) -> dict[str, str]:
    return cast(dict[str, str], client.hgetall(key))


def statuses(client: redis.Redis, delivery_id: str) -> tuple[str, list[str]]:
    """The delivery's status and its attempts' statuses, oldest first."""
    delivery = record(client, KEYS.delivery(delivery_id))
    attempts = [
        record(client, KEYS.attempt(delivery_id, number))["status"]
        for number in range(1, int(delivery["attempt_count"]) + 1)
    ]
    return delivery["status"], attempts


def recover_and_retry(
    pipeline: Pipeline, client: redis.Redis, delivery_id: str
) -> list[AttemptReport]:
    """Once the claim's deadline has passed the scheduler recovers it, and one rung later
    dispatches the retry; then the workers take what is queued."""
    deadline = client.zscore(KEYS.claims(), delivery_id)
    assert deadline is not None
    pipeline.clock.now = max(pipeline.clock.now, int(deadline) + 1)
    pipeline.tick()
    pipeline.advance(1_000)
    pipeline.tick()
    # The dead worker's message is visible again too (its visibility timeout was 1 s)
    eventually(lambda: visible_messages(pipeline) == 2, 30, "both messages to be visible")
    return pipeline.work()


def test_a_worker_killed_mid_send_is_recovered_by_the_scheduler_and_sent_once(
    pipeline: Pipeline,
    worker_environment: dict[str, str],
    counting_smtp: CountingSmtpServer,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    # Given a login code whose first attempt a worker process took off the queue,
    #       and an SMTP server that holds the message once its data has arrived
    delivery_id = pipeline.accept_login_code(key="killed-mid-send")
    held = counting_smtp.stall_next_data()
    worker = WorkerProcess(
        tmp_path, worker_environment, event_of(pipeline, receive(pipeline, visibility_s=1))
    )
    try:
        assert held.arrived.wait(60), worker.log()

        # When the worker is killed (SIGKILL) before the server's final answer
        assert worker.kill() == SIGKILLED
    finally:
        worker.stop_if_running()
    eventually(held.abandoned.is_set, 10, "the server to see the client go")

    # Then the server never accepted it, and nothing was recorded: still sending
    mid = message_id(delivery_id)
    assert (counting_smtp.data_seen[mid], counting_smtp.count(mid)) == (1, 0)
    assert statuses(redis_client, delivery_id) == ("sending", ["in_progress"])
    assert redis_client.zscore(KEYS.claims(), delivery_id) is not None

    # When the claim deadline passes, the scheduler recovers it and retries
    reports = recover_and_retry(pipeline, redis_client, delivery_id)

    # Then attempt 1 is timed out (the outcome was unknown) and attempt 2 sent it
    assert pipeline.recoveries == [(delivery_id, "retry")]
    assert statuses(redis_client, delivery_id) == ("sent", ["timed_out", "provider_accepted"])
    # And SQS's redelivery of the dead worker's message was skipped, not sent
    assert sorted((r.attempt_no, str(r.skipped), str(r.status)) for r in reports) == [
        (1, "claim_not_held", "None"),
        (2, "None", "sent"),
    ]
    # And the server accepted the message exactly once: a kill before the
    # server's final answer leaves no duplicate behind
    assert counting_smtp.count(mid) == 1
    assert sum(counting_smtp.snapshot().values()) == 1


def test_a_worker_killed_after_the_server_accepted_causes_the_one_allowed_duplicate(
    pipeline: Pipeline,
    worker_environment: dict[str, str],
    counting_smtp: CountingSmtpServer,
    redis_client: redis.Redis,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    # Given a worker process sending a login code, and Redis holding every
    #       write from the moment the SMTP server answers 250
    delivery_id = pipeline.accept_login_code(key="killed-after-250")
    server_side = redis_server.client()
    counting_smtp.before_next_accept(lambda: freeze_writes(server_side))
    worker = WorkerProcess(
        tmp_path, worker_environment, event_of(pipeline, receive(pipeline, visibility_s=1))
    )
    try:
        # When the worker is killed while its completion waits on Redis
        eventually(
            lambda: blocked_clients(redis_client, "evalsha"),
            60,
            "the worker's completion to wait on Redis",
        )
        assert worker.kill() == SIGKILLED
    finally:
        worker.stop_if_running()
        thaw_writes(redis_client)

    # Then the server has the message, but the outcome was never recorded
    mid = message_id(delivery_id)
    assert counting_smtp.count(mid) == 1
    assert statuses(redis_client, delivery_id) == ("sending", ["in_progress"])

    # When the scheduler recovers the claim and the retry is sent
    recover_and_retry(pipeline, redis_client, delivery_id)

    # Then the server has accepted the same Message-ID twice: the one duplicate
    # DESIGN §4.3 allows (a worker that dies after the server accepted and before
    # the outcome was recorded), recognisable downstream by its Message-ID
    assert counting_smtp.count(mid) == 2
    assert set(counting_smtp.snapshot()) == {mid}
    # And the attempt history says attempt 1's outcome is unknown, not failed
    assert statuses(redis_client, delivery_id) == ("sent", ["timed_out", "provider_accepted"])
    first = record(redis_client, KEYS.attempt(delivery_id, 1))
    assert "claim expired" in first["summary"]


def test_sqs_redelivers_the_message_of_a_worker_that_died_and_it_is_sent_once(
    pipeline: Pipeline,
    worker_environment: dict[str, str],
    counting_smtp: CountingSmtpServer,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    # Given a worker process that received a claim (visibility timeout 1 s)
    #       and is about to start the attempt, held there by Redis
    delivery_id = pipeline.accept_login_code(key="redelivered")
    messages = receive(pipeline, visibility_s=1)
    freeze_writes(redis_client)
    worker = WorkerProcess(tmp_path / "first", worker_environment, event_of(pipeline, messages))
    try:
        eventually(
            lambda: blocked_clients(redis_client, "evalsha"),
            60,
            "the worker's start to wait on Redis",
        )
        # When it is killed before it started anything
        assert worker.kill() == SIGKILLED
    finally:
        worker.stop_if_running()
        thaw_writes(redis_client)

    # Then nothing was sent and the attempt still waits under its live claim
    mid = message_id(delivery_id)
    assert counting_smtp.data_seen[mid] == 0
    assert statuses(redis_client, delivery_id) == ("queued", ["scheduled"])
    assert redis_client.zscore(KEYS.claims(), delivery_id) is not None

    # When SQS makes the message visible again and a fresh worker takes it
    redelivered = receive(pipeline, visibility_s=60)
    assert redelivered[0]["MessageId"] == messages[0]["MessageId"]
    assert redelivered[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    (tmp_path / "second").mkdir()
    answers, output = invoke_in_fresh_process(
        "attempt_worker", tmp_path / "second", worker_environment, [event_of(pipeline, redelivered)]
    )
    assert failed_message_ids(answers[0], [redelivered[0]["MessageId"]]) == set(), output
    pipeline.sqs.delete_message(
        QueueUrl=pipeline.queue_url, ReceiptHandle=redelivered[0]["ReceiptHandle"]
    )

    # Then it is sent exactly once, as attempt 1, with no retry used
    assert statuses(redis_client, delivery_id) == ("sent", ["provider_accepted"])
    assert counting_smtp.count(mid) == 1
    assert sum(counting_smtp.snapshot().values()) == 1


class RacingAttemptStore(RedisAttemptStore):
    """The production store, except that ``start`` first waits for the rival worker."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            build_redis_client(settings),
            delivery_ttl=settings.delivery_ttl,
            attempt_ttl=settings.attempt_ttl,
            retry_schedule=settings.retry_schedule,
            claim_timeout=settings.claim_timeout,
        )
        self.barrier = threading.Barrier(2)

    def start(
        self,
        claim: ClaimedAttempt,
        now_ms: int,
        *,
        rendered: bool,
        locale_fallback_used: bool | None = None,
        resolved_locale: str | None = None,
        failure_summary: str = "",
        rendered_subject: str | None = None,
    ) -> StartResult:
        self.barrier.wait(timeout=30)
        return super().start(
            claim,
            now_ms,
            rendered=rendered,
            locale_fallback_used=locale_fallback_used,
            resolved_locale=resolved_locale,
            failure_summary=failure_summary,
            rendered_subject=rendered_subject,
        )


def test_two_workers_racing_for_one_claim_send_it_once(
    pipeline: Pipeline, counting_smtp: CountingSmtpServer, redis_client: redis.Redis
) -> None:
    # Given ten claimed login codes, each message handed to two workers at once
    #       (SQS delivers at least once), both past their early checks before
    #       either starts the attempt
    settings = pipeline.settings
    delivery_ids = [pipeline.accept_login_code(key=f"race-{n}") for n in range(10)]
    messages = [m for _ in range(10) for m in receive(pipeline, visibility_s=60)]
    workers: list[tuple[RacingAttemptStore, AttemptExecutor]] = []
    for _ in range(2):
        store = RacingAttemptStore(settings)
        executor = AttemptExecutor(
            store,
            load_catalog(settings),
            build_provider(settings),
            sender_of(settings),
            SystemClock(),
        )
        workers.append((store, executor))
    reports: list[list[AttemptReport]] = []
    for message in messages:
        claim = decode_claim(message["Body"])
        pair: list[AttemptReport] = []
        barrier = threading.Barrier(2)
        for store, _ in workers:
            store.barrier = barrier

        # When both execute the same claim at the same moment
        threads = [
            threading.Thread(target=lambda e=executor, c=claim, p=pair: p.append(e.execute(c)))
            for _, executor in workers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        reports.append(pair)
    for _, executor in workers:
        executor.close()

    # Then for each claim exactly one worker sent it and the other was refused
    for pair in reports:
        assert sorted((str(r.status), str(r.skipped)) for r in pair) == [
            ("None", "attempt_already_started"),
            ("sent", "None"),
        ]
    # And the server accepted each message exactly once
    assert counting_smtp.snapshot() == {message_id(d): 1 for d in delivery_ids}
    for delivery_id in delivery_ids:
        assert statuses(redis_client, delivery_id) == ("sent", ["provider_accepted"])


def at_least(count: Callable[[], int], threshold: int) -> bool:
    return count() >= threshold


def test_a_stream_poller_killed_at_any_moment_loses_and_doubles_nothing(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    # Given 1,500 commands on the stream
    pipe = redis_client.pipeline(transaction=False)
    for number in range(1500):
        pipe.xadd(STREAM, cast(StreamFields, command(number)))
    published = [str(entry_id) for entry_id in pipe.execute()]

    def accepted() -> int:
        return redis_client.zcard(KEYS.index_created_at())

    # When poller processes that trim after every batch, keeping no handled
    #      entry, are killed (SIGKILL) wherever they happen to be, three times,
    #      each once it has accepted some more
    environ = json.dumps({"MAIL_REDIS_ADDR": redis_server.addr, "MAIL_STREAM_RETENTION": "0"})
    for threshold in (300, 750, 1200):
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.killable_poller", environ],
            cwd=REPO_ROOT,
        )
        try:
            eventually(partial(at_least, accepted, threshold), 60, f"{threshold} accepted")
            os.kill(process.pid, signal.SIGKILL)
            assert process.wait(timeout=30) == SIGKILLED
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        # Then each time, every entry after the stored offset is still on the stream
        offset = cast(str, redis_client.get(KEYS.stream_offset(STREAM)))
        unhandled = [e for e in published if stream_id(e) > stream_id(offset)]
        left = cast(list[tuple[str, Any]], redis_client.xrange(STREAM, f"({offset}", "+"))
        assert [entry_id for entry_id, _ in left] == unhandled
        # And handled ones were trimmed, in whole storage nodes
        assert redis_client.xlen(STREAM) <= len(unhandled) + 100 + 10
    accepted_before = accepted()
    assert accepted_before < 1500

    # And the next poller runs once the last one's lease has run out
    eventually(lambda: not redis_client.exists(KEYS.lease("stream_poller")), 10, "the lease")
    settings = Settings.from_environ(
        {"MAIL_REDIS_ADDR": redis_server.addr, "MAIL_STREAM_BLOCK_TIMEOUT": "100ms"}
    )
    report = build_stream_poller(settings, RecordingObserver()).run(until_drained(redis_client))

    # Then it takes up exactly where the killed ones stopped: nothing lost, nothing doubled
    assert report.lease_acquired
    assert (report.accepted, report.duplicates, report.malformed) == (1500 - accepted_before, 0, 0)
    assert accepted() == count_deliveries(redis_client) == 1500
    assert redis_client.get(KEYS.stream_offset(STREAM)) == last_entry_id(redis_client)
    assert find_partial_state(redis_client) == []
