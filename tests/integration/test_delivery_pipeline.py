"""Claim, dispatch, attempt, retry, dead-letter and recover, against real Redis and moto SQS."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from mailcore.composition import (
    build_delivery_store,
    build_operator_service,
    build_stream_poller,
)
from mailcore.config import Settings
from mailcore.contracts.attempt_message import decode_claim
from mailcore.contracts.auth import LoginCodeDeliveryRequest
from mailcore.domain.ids import UlidGenerator
from mailcore.domain.states import AttemptStatus, DeliveryStatus, ProviderOutcome
from mailcore.ports import ClaimedAttempt, SendResult, StartVerdict
from mailcore.providers.stub import StubProvider
from mailcore.services.auth_intake import AuthIntake
from mailcore.services.dispatch import Dispatcher
from mailcore.store.keys import RedisKeys
from mailcore.store.redis_store import RedisDeliveryStore
from tests.support.commands import STREAM, command, publish, template_payload
from tests.support.fakes import SMTP_MODE_ENV
from tests.support.partitions import CONTROL, delivery_record, home_keys, total
from tests.support.pipeline import Pipeline
from tests.support.polling import RecordingObserver, until_drained
from tests.support.redis_backend import RedisBackend
from tests.support.redis_server import RedisServer

MINUTE = 60_000
MakePipeline = Callable[..., Pipeline]


@pytest.fixture
def pipeline_settings(redis_server: RedisBackend, attempt_queue_url: str) -> Settings:
    return Settings.from_environ(
        {
            **redis_server.environ(),
            "MAIL_ATTEMPT_QUEUE_URL": attempt_queue_url,
            "MAIL_STREAM_BLOCK_TIMEOUT": "100ms",
            **SMTP_MODE_ENV,
        }
    )


@pytest.fixture
def make_pipeline(pipeline_settings: Settings, aws: Any, redis_client: redis.Redis) -> MakePipeline:
    def make(provider: StubProvider | None = None) -> Pipeline:
        return Pipeline(pipeline_settings, aws, provider or StubProvider())

    return make


def accept_login_code(
    pipeline: Pipeline, *, email: str = "ada@example.com", locale: str = "en", key: str = "k-1"
) -> str:
    return pipeline.accept_login_code(email=email, locale=locale, key=key)


def delivery(client: redis.Redis, delivery_id: str) -> dict[str, str]:
    return delivery_record(client, delivery_id)


def attempt(client: redis.Redis, delivery_id: str, number: int) -> dict[str, str]:
    key = home_keys(client, delivery_id).attempt(delivery_id, number)
    return cast(dict[str, str], client.hgetall(key))


def test_the_first_attempt_goes_to_a_worker_at_acceptance(
    make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    # Given the auth intake in smtp mode with the attempt queue
    pipeline = make_pipeline()

    # When a login code is accepted
    delivery_id = accept_login_code(pipeline)

    # Then its first attempt is already on the queue, claimed, without a scheduler tick
    messages = pipeline.queued_messages()
    assert [json.loads(m["Body"])["delivery_id"] for m in messages] == [delivery_id]
    keys = home_keys(redis_client, delivery_id)
    assert redis_client.zscore(keys.attempt_schedule(), delivery_id) is None
    assert redis_client.zscore(keys.claims(), delivery_id) is not None
    # And one worker batch sends it
    reports = pipeline.work()
    assert [r.status for r in reports] == ["sent"]
    assert delivery(redis_client, delivery_id)["status"] == "sent"
    assert attempt(redis_client, delivery_id, 1)["status"] == "provider_accepted"
    assert total(redis_client, RedisKeys.claims) == 0


def test_transient_failures_follow_the_ladder_to_success(
    make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    # Given a provider that fails twice, temporarily
    provider = StubProvider([ProviderOutcome.TRANSIENT_FAILURE, ProviderOutcome.TRANSIENT_FAILURE])
    pipeline = make_pipeline(provider)
    accepted_at = pipeline.clock.now
    delivery_id = accept_login_code(pipeline)
    keys = home_keys(redis_client, delivery_id)

    # When the first attempt fails, the retry is due one minute later, not before
    pipeline.work()
    assert delivery(redis_client, delivery_id)["status"] == "queued"
    assert redis_client.zscore(keys.attempt_schedule(), delivery_id) == accepted_at + MINUTE
    pipeline.advance(MINUTE - 1)
    assert pipeline.tick().claimed == 0
    pipeline.advance(1)
    assert pipeline.tick().claimed == 1
    pipeline.work()
    # And the third is due five minutes after the second failure
    assert redis_client.zscore(keys.attempt_schedule(), delivery_id) == accepted_at + 6 * MINUTE
    pipeline.advance(5 * MINUTE)
    pipeline.tick()
    pipeline.work()

    # Then the delivery is sent on the third attempt, with the whole history kept
    record = delivery(redis_client, delivery_id)
    assert record["status"] == "sent"
    assert record["attempt_count"] == "3"
    history = [attempt(redis_client, delivery_id, n) for n in (1, 2, 3)]
    assert [a["status"] for a in history] == [
        "provider_rejected",
        "provider_rejected",
        "provider_accepted",
    ]
    assert [a["outcome"] for a in history] == [
        "transient_failure",
        "transient_failure",
        "accepted",
    ]
    assert redis_client.pttl(keys.delivery(delivery_id)) > 0
    assert redis_client.pttl(keys.attempt(delivery_id, 1)) > 0
    assert len(provider.sent) == 3


def test_an_exhausted_ladder_ends_in_a_dead_letter_with_its_entry(
    make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    provider = StubProvider([ProviderOutcome.TRANSIENT_FAILURE] * 10)
    pipeline = make_pipeline(provider)
    delivery_id = accept_login_code(pipeline)

    pipeline.run_ladder(rounds=3)

    record = delivery(redis_client, delivery_id)
    assert record["status"] == "dead_letter"
    assert record["attempt_count"] == "4"
    keys = home_keys(redis_client, delivery_id)
    entry = cast(dict[str, str], redis_client.hgetall(keys.dead_letter(delivery_id)))
    assert entry["attempts"] == "4"
    assert entry["last_outcome"] == "transient_failure"
    assert redis_client.zscore(keys.index_dead_letters(), delivery_id) is not None
    assert redis_client.zscore(keys.index_status("dead_letter"), delivery_id) is not None
    assert redis_client.zscore(keys.index_status("queued"), delivery_id) is None
    assert total(redis_client, RedisKeys.attempt_schedule) == 0
    assert len(provider.sent) == 4


def test_a_permanent_failure_ends_failed_without_retry(
    make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    pipeline = make_pipeline(StubProvider([ProviderOutcome.PERMANENT_FAILURE]))
    delivery_id = accept_login_code(pipeline)

    pipeline.work()

    assert delivery(redis_client, delivery_id)["status"] == "failed"
    assert attempt(redis_client, delivery_id, 1)["outcome"] == "permanent_failure"
    assert total(redis_client, RedisKeys.attempt_schedule) == 0


def test_suppression_settles_the_delivery_and_is_not_a_failure(
    make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    pipeline = make_pipeline()
    delivery_id = accept_login_code(pipeline, email="stub-suppress@example.com")

    reports = pipeline.work()

    assert reports[0].outcome == "suppressed"
    assert delivery(redis_client, delivery_id)["status"] == "suppressed"
    keys = home_keys(redis_client, delivery_id)
    assert redis_client.zscore(keys.index_status("suppressed"), delivery_id) is not None


@pytest.mark.parametrize(
    ("requested", "resolved", "fallback"),
    [("ru", "ru", "0"), ("DE", "de", "0"), ("de-AT", "de", "1"), ("pt-BR", "en", "1")],
)
def test_the_locale_used_and_any_fallback_are_recorded(
    make_pipeline: MakePipeline,
    redis_client: redis.Redis,
    requested: str,
    resolved: str,
    fallback: str,
) -> None:
    pipeline = make_pipeline()
    delivery_id = accept_login_code(pipeline, locale=requested)

    reports = pipeline.work()

    record = delivery(redis_client, delivery_id)
    assert (record["resolved_locale"], record["locale_fallback_used"]) == (resolved, fallback)
    assert reports[0].locale_fallback_used is (fallback == "1")


def test_a_template_that_cannot_render_fails_the_delivery_and_sends_nothing(
    make_pipeline: MakePipeline, redis_client: redis.Redis, store: RedisDeliveryStore
) -> None:
    # Given a stream-accepted template delivery missing a required variable
    provider = StubProvider()
    pipeline = make_pipeline(provider)
    payload = template_payload(variables={"name": "Ada"}, secret_variables=[])
    publish(redis_client, command(7, mode="template", payload=payload))
    poller = build_stream_poller(pipeline.settings, RecordingObserver(), sqs_client=pipeline.sqs)
    poller.run(until_drained(redis_client, STREAM))

    # When a worker takes it
    reports = pipeline.work()

    # Then it fails for good, naming the missing variables, and nothing was sent
    assert reports[0].outcome == "render_failed"
    record = delivery(redis_client, "notif-000007")
    assert record["status"] == "failed"
    assert record["failure_code"] == "render_failed"
    assert "reset_token" in record["last_summary"]
    # And the attempt says what happened: no provider was contacted
    first = attempt(redis_client, "notif-000007", 1)
    assert (first["status"], first["failure_code"]) == ("render_failed", "render_failed")
    assert reports[0].attempt_status == "render_failed"
    assert provider.sent == []


def test_a_template_deliverys_subject_is_shown_to_operators_once_rendered(
    make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    # Given a stream-accepted template delivery (password reset, asked for in de-AT)
    pipeline = make_pipeline()
    publish(redis_client, command(8, mode="template", payload=template_payload()))
    poller = build_stream_poller(pipeline.settings, RecordingObserver(), sqs_client=pipeline.sqs)
    poller.run(until_drained(redis_client, STREAM))
    operator = build_operator_service(pipeline.settings)
    assert operator.get_delivery("notif-000008").subject is None  # not rendered yet

    # When a worker renders and sends it
    pipeline.work()

    # Then an operator reads the subject it was sent with, in the language it was rendered in
    shown = operator.get_delivery("notif-000008")
    assert (shown.status, shown.resolved_locale) == ("sent", "de")
    assert shown.subject == "Passwort zurücksetzen"


@pytest.mark.parametrize(
    ("subject_template", "sent_subject"),
    [
        ("Your code is {{ code }}", "Your code is 775533"),
        # Transformed: the value itself is not in the subject, yet it gives the code away.
        ("Your code, backwards: {{ code | reverse }}", "Your code, backwards: 335577"),
    ],
)
def test_a_rendered_subject_that_uses_a_secret_variable_is_never_kept(
    pipeline_settings: Settings,
    redis_client: redis.Redis,
    aws: Any,
    tmp_path: Path,
    subject_template: str,
    sent_subject: str,
) -> None:
    # Given a catalog whose subject shows a variable, and a delivery marking it secret
    template = tmp_path / "catalog" / "account.code" / "en"
    template.mkdir(parents=True)
    (template / "subject.tmpl").write_text(subject_template + "\n")
    (template / "text.tmpl").write_text("Hello {{ name }}, your code is {{ code }}.\n")
    settings = pipeline_settings.model_copy(update={"template_dir": str(tmp_path / "catalog")})
    provider = StubProvider()
    pipeline = Pipeline(settings, aws, provider)
    payload = template_payload(
        template_id="account.code",
        locale="en",
        variables={"name": "Ada", "code": "775533"},
        secret_variables=["code"],
    )
    publish(redis_client, command(9, mode="template", payload=payload))
    poller = build_stream_poller(settings, RecordingObserver(), sqs_client=pipeline.sqs)
    poller.run(until_drained(redis_client, STREAM))

    # When a worker renders and sends it
    pipeline.work()

    # Then the mail had its subject, but neither the store nor an operator read keeps it
    assert len(provider.sent) == 1
    assert provider.sent[0][2]["Subject"] == sent_subject
    shown = build_operator_service(settings).get_delivery("notif-000009")
    assert shown.status == "sent"
    assert shown.subject is None
    assert "rendered_subject" not in delivery(redis_client, "notif-000009")


def test_a_worker_that_dies_mid_attempt_is_recovered_and_its_late_completion_refused(
    make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    # Given a worker that started attempt 1 and then died (no outcome recorded)
    provider = StubProvider()
    pipeline = make_pipeline(provider)
    delivery_id = accept_login_code(pipeline)
    message = pipeline.queued_messages()[0]
    dead_claim = decode_claim(message["Body"])
    store = pipeline.store_for(delivery_id)
    started = store.start(dead_claim, pipeline.clock.now_ms(), rendered=True)
    assert started.verdict is StartVerdict.STARTED
    assert delivery(redis_client, delivery_id)["status"] == "sending"

    # When its claim expires (SMTP timeout + 30 s) and the scheduler recovers it
    pipeline.advance(45_001)
    pipeline.tick()

    # Then attempt 1 timed out and attempt 2 waits one rung of the ladder
    assert pipeline.recoveries == [(delivery_id, "retry")]
    assert attempt(redis_client, delivery_id, 1)["status"] == "timed_out"
    assert attempt(redis_client, delivery_id, 2)["status"] == "scheduled"
    assert delivery(redis_client, delivery_id)["status"] == "queued"
    # And the dead worker, coming back late, cannot record an outcome
    late = store.complete(
        dead_claim,
        pipeline.clock.now_ms(),
        outcome=ProviderOutcome.ACCEPTED,
        attempt_status=AttemptStatus.PROVIDER_ACCEPTED,
        summary="250 ok",
        duration_ms=5,
    )
    assert (late.completed, late.reason) == (False, "claim_not_held")
    # Nor can SQS's redelivery of its message start anything
    assert pipeline.executor.execute(dead_claim).skipped == "claim_not_held"
    # And attempt 2 delivers it
    pipeline.advance(MINUTE)
    pipeline.tick()
    pipeline.work()
    assert delivery(redis_client, delivery_id)["status"] == "sent"
    assert attempt(redis_client, delivery_id, 2)["status"] == "provider_accepted"


def test_a_claim_whose_message_was_lost_is_due_again_without_using_a_retry(
    make_pipeline: MakePipeline, redis_client: redis.Redis, aws: Any
) -> None:
    # Given a claimed first attempt whose SQS message never reached a worker
    pipeline = make_pipeline()
    delivery_id = accept_login_code(pipeline)
    aws.purge_queue(QueueUrl=pipeline.queue_url)

    # When the claim expires and the scheduler recovers it
    pipeline.advance(45_001)
    pipeline.tick()

    # Then the same attempt is dispatched again at once, and sent
    assert pipeline.recoveries == [(delivery_id, "rescheduled")]
    pipeline.tick()
    pipeline.work()
    record = delivery(redis_client, delivery_id)
    assert (record["status"], record["attempt_count"]) == ("sent", "1")


def test_claims_the_queue_refuses_are_released_for_the_next_poll(
    pipeline_settings: Settings, aws: Any, redis_client: redis.Redis
) -> None:
    # Given a queue that refuses everything
    class RefusingQueue:
        def send(self, claims: Any) -> list[ClaimedAttempt]:
            return list(claims)

    pipeline = Pipeline(pipeline_settings, aws, StubProvider())
    refusing = Dispatcher(
        pipeline.stores, RefusingQueue(), pipeline.clock, pipeline_settings.claim_timeout
    )
    intake = AuthIntake(
        build_delivery_store(pipeline_settings, pipeline.clock),
        pipeline.clock,
        UlidGenerator(pipeline.clock),
        pipeline_settings.smtp_mode,
        dispatcher=refusing,
    )

    # When a login code is accepted
    accepted = intake.accept_login_code(
        LoginCodeDeliveryRequest(email="ada@example.com", code="482913", locale="en"), "k-1"
    )

    # Then the fast path failed but the attempt is due again right away, unclaimed
    assert not accepted.dispatched
    assert total(redis_client, RedisKeys.claims) == 0
    keys = home_keys(redis_client, accepted.delivery_id)
    assert redis_client.zscore(keys.attempt_schedule(), accepted.delivery_id) is not None
    # And the next scheduler poll with a working queue sends it
    pipeline.tick()
    pipeline.work()
    assert delivery(redis_client, accepted.delivery_id)["status"] == "sent"


def test_a_duplicate_sqs_message_sends_once(
    make_pipeline: MakePipeline, redis_client: redis.Redis, aws: Any
) -> None:
    # Given the claim's message delivered twice by SQS
    provider = StubProvider()
    pipeline = make_pipeline(provider)
    delivery_id = accept_login_code(pipeline)
    body = pipeline.queued_messages()[0]["Body"]
    aws.send_message(QueueUrl=pipeline.queue_url, MessageBody=body)

    # When workers take both
    reports = pipeline.work()

    # Then one sent it and the other skipped it (the claim is spent by then)
    assert sorted(str(r.skipped) for r in reports) == ["None", "claim_not_held"]
    assert len(provider.sent) == 1
    assert delivery(redis_client, delivery_id)["status"] == "sent"


def test_two_schedulers_never_claim_the_same_delivery(
    make_pipeline: MakePipeline, redis_client: redis.Redis, store: RedisDeliveryStore
) -> None:
    # Given 30 due deliveries of one partition and two schedulers reading the same candidates
    pipeline = make_pipeline()
    now = pipeline.clock.now_ms()
    for number in range(30):
        redis_client.zadd(CONTROL.attempt_schedule(), {f"d-{number}": now})
        redis_client.hset(
            CONTROL.delivery(f"d-{number}"), mapping={"status": "queued", "attempt_count": "1"}
        )
    partition = pipeline.stores[0]
    candidates = partition.due_delivery_ids(now, 100)

    # When both claim them
    first = partition.claim(candidates, now, now + 45_000)
    second = partition.claim(candidates, now, now + 45_000)

    # Then every delivery was claimed exactly once
    assert len(first) == 30
    assert second == []


def test_the_scripts_refuse_a_move_the_transition_table_forbids(
    make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    # Given an attempt in progress whose delivery was (wrongly) marked sent meanwhile
    pipeline = make_pipeline()
    delivery_id = accept_login_code(pipeline)
    claim = decode_claim(pipeline.queued_messages()[0]["Body"])
    store = pipeline.store_for(delivery_id)
    store.start(claim, pipeline.clock.now_ms(), rendered=True)
    redis_client.hset(home_keys(redis_client, delivery_id).delivery(delivery_id), "status", "sent")

    # When the worker records a transient failure (sent -> queued is not a move)
    result = store.complete(
        claim,
        pipeline.clock.now_ms(),
        outcome=ProviderOutcome.TRANSIENT_FAILURE,
        attempt_status=AttemptStatus.PROVIDER_REJECTED,
        summary="451 later",
        duration_ms=3,
    )

    # Then the script refuses and changes nothing
    assert (result.completed, result.reason) == (False, "forbidden_transition")
    assert attempt(redis_client, delivery_id, 1)["status"] == "in_progress"
    assert total(redis_client, RedisKeys.attempt_schedule) == 0


def test_schedule_gauges_report_depth_and_the_oldest_due_age(
    make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    pipeline = make_pipeline()
    now = pipeline.clock.now_ms()
    redis_client.zadd(CONTROL.attempt_schedule(), {"a": now - 5000, "b": now + 60_000})

    stats = pipeline.stores[0].stats(now)

    assert (stats.depth, stats.oldest_due_age_ms, stats.claimed) == (2, 5000, 0)


def test_delivery_status_indexes_follow_every_move(
    make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    pipeline = make_pipeline(StubProvider([ProviderOutcome.TRANSIENT_FAILURE]))
    delivery_id = accept_login_code(pipeline)

    keys = home_keys(redis_client, delivery_id)
    pipeline.work()
    in_queue = {
        status: redis_client.zscore(keys.index_status(status), delivery_id) is not None
        for status in DeliveryStatus
    }
    pipeline.advance(MINUTE)
    pipeline.tick()
    pipeline.work()
    settled = {
        status: redis_client.zscore(keys.index_status(status), delivery_id) is not None
        for status in DeliveryStatus
    }

    assert [s for s, present in in_queue.items() if present] == [DeliveryStatus.QUEUED]
    assert [s for s, present in settled.items() if present] == [DeliveryStatus.SENT]


def test_an_attempt_that_keeps_dying_before_it_starts_is_ended_by_the_ladder(
    make_pipeline: MakePipeline, redis_client: redis.Redis, aws: Any
) -> None:
    # Given a delivery whose claimed attempt never starts (every message is lost)
    pipeline = make_pipeline()
    delivery_id = accept_login_code(pipeline)

    # When that happens five times in a row
    for _ in range(5):
        for message in pipeline.queued_messages():
            aws.delete_message(QueueUrl=pipeline.queue_url, ReceiptHandle=message["ReceiptHandle"])
        pipeline.advance(45_001)
        pipeline.tick()
    outcomes = [what for _, what in pipeline.recoveries]

    # Then the first four are re-queued at once, and the fifth counts as a timed-out attempt
    assert outcomes == ["rescheduled"] * 4 + ["retry"]
    first = attempt(redis_client, delivery_id, 1)
    assert (first["status"], first["outcome"]) == ("timed_out", "transient_failure")
    assert "never started" in first["summary"]
    assert attempt(redis_client, delivery_id, 2)["status"] == "scheduled"
    assert delivery(redis_client, delivery_id)["status"] == "queued"


def test_starting_a_send_gives_it_a_full_claim_period(
    make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    # Given a claim whose worker only gets to it 40 s later (a long batch before it)
    pipeline = make_pipeline()
    delivery_id = accept_login_code(pipeline)
    claim = decode_claim(pipeline.queued_messages()[0]["Body"])
    store = pipeline.store_for(delivery_id)
    pipeline.advance(40_000)
    assert store.start(claim, pipeline.clock.now_ms(), rendered=True).verdict is (
        StartVerdict.STARTED
    )

    # When the original deadline passes while it is still sending
    pipeline.advance(10_000)
    pipeline.tick()

    # Then recovery leaves it alone, and the worker can still record its outcome
    assert pipeline.recoveries == []
    done = store.complete(
        claim,
        pipeline.clock.now_ms(),
        outcome=ProviderOutcome.ACCEPTED,
        attempt_status=AttemptStatus.PROVIDER_ACCEPTED,
        summary="250 ok",
        duration_ms=9000,
    )
    assert done.completed
    assert delivery(redis_client, delivery_id)["status"] == "sent"


class RedisGoesAwayAfterTheSend(StubProvider):
    """The server accepts, then Redis freezes for a while before the outcome is recorded."""

    def __init__(self, server: RedisServer, outage_s: float) -> None:
        super().__init__()
        self._server = server
        self._outage_s = outage_s

    def send(
        self,
        message: EmailMessage,
        *,
        envelope_from: str,
        recipients: Sequence[str],
        secrets: Sequence[str] = (),
    ) -> SendResult:
        result = super().send(
            message, envelope_from=envelope_from, recipients=recipients, secrets=secrets
        )
        self._server.pause()
        threading.Timer(self._outage_s, self._server.resume).start()
        return result


@pytest.mark.standalone_redis("pauses the redis-server process")
def test_an_outcome_is_recorded_through_a_short_store_outage_after_the_send(
    pipeline_settings: Settings, aws: Any, redis_client: redis.Redis, redis_server: RedisServer
) -> None:
    # Given a login code on its way to a worker, and a provider after whose
    # answer Redis stops answering for about a second
    provider = RedisGoesAwayAfterTheSend(redis_server, outage_s=1.0)
    pipeline = Pipeline(pipeline_settings, aws, provider)
    delivery_id = accept_login_code(pipeline)

    # When the worker sends it
    reports = pipeline.work()

    # Then the outcome is recorded once Redis is back, rather than lost to a
    # recovery that would send the message a second time
    assert [r.status for r in reports] == ["sent"], reports
    assert reports[0].completion_refused is None
    assert len(provider.sent) == 1
    assert delivery(redis_client, delivery_id)["status"] == "sent"
    assert attempt(redis_client, delivery_id, 1)["status"] == "provider_accepted"
    assert total(redis_client, RedisKeys.claims) == 0


def test_recording_an_outcome_again_with_the_same_claim_answers_completed_and_changes_nothing(
    make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    # Given an attempt whose outcome was recorded, but whose worker never heard the answer
    pipeline = make_pipeline()
    delivery_id = accept_login_code(pipeline)
    claim = decode_claim(pipeline.queued_messages()[0]["Body"])
    store = pipeline.store_for(delivery_id)
    assert store.start(claim, pipeline.clock.now_ms(), rendered=True).verdict is (
        StartVerdict.STARTED
    )

    def record() -> Any:
        return store.complete(
            claim,
            pipeline.clock.now_ms(),
            outcome=ProviderOutcome.TRANSIENT_FAILURE,
            attempt_status=AttemptStatus.TRANSPORT_FAILED,
            summary="451 try later",
            duration_ms=5,
        )

    first = record()
    before = {key: redis_client.dump(key) for key in redis_client.keys("*")}

    # When the worker records the same outcome again with the same claim
    again = record()

    # Then it hears that the outcome is recorded, and nothing moved: no second retry
    assert (first.completed, first.status) == (True, "queued")
    assert (again.completed, again.status) == (True, "queued")
    assert {key: redis_client.dump(key) for key in redis_client.keys("*")} == before
    assert not redis_client.exists(home_keys(redis_client, delivery_id).attempt(delivery_id, 3))


def test_a_delivery_whose_headers_would_be_unsafe_fails_without_sending(
    make_pipeline: MakePipeline, redis_client: redis.Redis
) -> None:
    # Given a queued delivery whose stored recipient carries a line break
    # (written past the intake's validation, as a corrupted record would be)
    provider = StubProvider()
    pipeline = make_pipeline(provider)
    delivery_id = accept_login_code(pipeline)
    redis_client.hset(
        home_keys(redis_client, delivery_id).delivery(delivery_id),
        "to",
        json.dumps(["ada@example.com\r\nBcc: eve@example.com"]),
    )

    # When a worker takes its attempt
    reports = pipeline.work()

    # Then the delivery fails like a render failure: nothing sent, no retry, no crash
    assert [(r.outcome, r.status) for r in reports] == [("render_failed", "failed")]
    assert provider.sent == []
    assert delivery(redis_client, delivery_id)["status"] == "failed"
    assert attempt(redis_client, delivery_id, 1)["status"] == "render_failed"
    assert "eve@example.com" not in json.dumps(attempt(redis_client, delivery_id, 1))
