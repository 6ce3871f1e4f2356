"""The stream poller against a real redis-server: commands in, deliveries or records out."""

from __future__ import annotations

import base64
import importlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from mailcore.composition import MAX_STEP_GROWTH, build_stream_poller
from mailcore.config import Settings
from mailcore.contracts.stream import CommandLimits
from mailcore.domain.clock import SystemClock
from mailcore.domain.model import PayloadMode, Source
from mailcore.domain.states import DeliveryStatus
from mailcore.ports import DeliveryQueries, EntryVerdict, StreamEntry, stream_id
from mailcore.services.stream_intake import (
    MAX_CALL_ENTRIES,
    PollReport,
    StreamIntake,
    StreamPoller,
)
from mailcore.store.client import build_redis_client
from mailcore.store.command_stream import RedisCommandStream
from mailcore.store.keys import partition_of
from mailcore.store.partitions import PartitionedDeliveryStore
from mailcore.store.redis_store import RedisDeliveryStore
from tests.support.commands import (
    LOGO_BYTES,
    PDF_BYTES,
    STREAM,
    StreamFields,
    command,
    publish,
    rendered_payload,
    template_payload,
)
from tests.support.crashing_poller import DIED_AFTER_ACCEPTING, DIED_BETWEEN_READ_AND_ACCEPT
from tests.support.lambda_context import FakeLambdaContext
from tests.support.lambda_runner import invoke_in_fresh_process
from tests.support.partitions import CONTROL, drop_client_connections, home_keys, total
from tests.support.polling import RecordingObserver, for_seconds, last_entry_id, until_drained
from tests.support.redis_backend import RedisBackend
from tests.support.store_invariants import count_deliveries, find_partial_state, text_keys

REPO_ROOT = Path(__file__).resolve().parents[2]
MakePoller = Callable[..., tuple[StreamPoller, RecordingObserver]]
# Every partition's keys; the command stream (the producer's, untagged) is not among them.
SERVICE_KEYS = "mail:{p*}:*"


@pytest.fixture
def make_poller(redis_server: RedisBackend, redis_client: redis.Redis) -> MakePoller:
    """A poller wired exactly as the Lambda wires it, with a short block timeout."""

    def make(**environment: str) -> tuple[StreamPoller, RecordingObserver]:
        settings = Settings.from_environ(
            {
                **redis_server.environ(),
                "MAIL_STREAM_BLOCK_TIMEOUT": "100ms",
                **environment,
            }
        )
        observer = RecordingObserver()
        return build_stream_poller(settings, observer), observer

    return make


def drain(poller: StreamPoller, client: redis.Redis) -> PollReport:
    return poller.run(until_drained(client))


def stored_offset(client: redis.Redis) -> str | None:
    return cast(str | None, client.get(CONTROL.stream_offset(STREAM)))


def malformed_record(client: redis.Redis, entry_id: str) -> dict[str, str]:
    return cast(dict[str, str], client.hgetall(CONTROL.malformed_command(entry_id)))


def test_a_rendered_command_becomes_a_queued_delivery(
    make_poller: MakePoller,
    redis_client: redis.Redis,
    queries: DeliveryQueries,
) -> None:
    # Given a rendered command with a full envelope and two attachments on the stream
    entry_id = publish(redis_client, command(1))
    poller, observer = make_poller()

    # When the poller runs
    report = drain(poller, redis_client)

    # Then the delivery is stored queued, whole, with its first attempt scheduled
    assert (report.accepted, report.malformed, report.duplicates) == (1, 0, 0)
    delivery = queries.delivery("notif-000001")
    assert delivery is not None
    assert delivery.status is DeliveryStatus.QUEUED
    assert delivery.source is Source.NOTIFICATION
    assert delivery.payload_mode is PayloadMode.RENDERED
    assert delivery.envelope.to == ("ada@example.com",)
    assert delivery.envelope.cc == ("bob@example.com",)
    assert delivery.envelope.bcc == ("audit@example.com",)
    assert delivery.envelope.reply_to == ("support@example.com",)
    assert delivery.content is not None
    assert delivery.content.subject == "Your invoice #42"
    assert delivery.content.html_body is not None
    assert [base64.b64decode(a.content_base64) for a in delivery.attachments] == [
        PDF_BYTES,
        LOGO_BYTES,
    ]
    assert delivery.attachments[1].inline
    assert delivery.attachments[1].content_id == "logo@example.com"
    assert (delivery.request_id, delivery.trace_id) == ("req-1", "trace-1")
    home = home_keys(redis_client, "notif-000001")
    assert redis_client.zscore(home.attempt_schedule(), "notif-000001") is not None
    for address in ["ada@example.com", "bob@example.com", "audit@example.com"]:
        assert redis_client.zscore(home.index_recipient(address), "notif-000001") is not None
    assert find_partial_state(redis_client) == []
    # And the offset moved past the entry, which the observer saw accepted
    assert stored_offset(redis_client) == entry_id
    handled = observer.by_entry()[entry_id]
    assert (handled.verdict, handled.delivery_id) == (EntryVerdict.CREATED, "notif-000001")


def test_a_template_command_becomes_a_queued_delivery(
    make_poller: MakePoller,
    redis_client: redis.Redis,
    queries: DeliveryQueries,
) -> None:
    publish(redis_client, command(2, mode="template"))
    poller, observer = make_poller()

    drain(poller, redis_client)

    delivery = queries.delivery("notif-000002")
    assert delivery is not None
    assert delivery.payload_mode is PayloadMode.TEMPLATE
    assert (delivery.template_id, delivery.locale) == ("account.password_reset", "de-AT")
    assert delivery.variables == {
        "name": "Ada",
        "reset_token": "tok-SECRET-7781",
        "expires_minutes": 30,
    }
    assert delivery.secret_variables == {"reset_token"}
    assert delivery.content is None
    index = home_keys(redis_client, "notif-000002").index_template("account.password_reset")
    assert redis_client.zscore(index, "notif-000002") is not None
    assert observer.handled[0].template_id == "account.password_reset"
    assert find_partial_state(redis_client) == []


def test_an_identical_duplicate_only_moves_the_offset(
    make_poller: MakePoller, redis_client: redis.Redis
) -> None:
    # Given a command accepted once
    publish(redis_client, command(3))
    poller, _ = make_poller()
    drain(poller, redis_client)
    before = {key: redis_client.dump(key) for key in text_keys(redis_client, SERVICE_KEYS)}

    # When the producer publishes it again, with new tracing ids
    again = publish(redis_client, command(3, request_id="req-retry", trace_id="trace-retry"))
    poller, observer = make_poller()
    report = drain(poller, redis_client)

    # Then it is a no-op: only the offset (and the trim marks written with it) changed
    assert (report.accepted, report.duplicates, report.malformed) == (0, 1, 0)
    after = {key: redis_client.dump(key) for key in text_keys(redis_client, SERVICE_KEYS)}
    offset_keys = {CONTROL.stream_offset(STREAM), CONTROL.stream_trim_marks(STREAM)}
    assert {k: v for k, v in after.items() if k not in offset_keys} == {
        k: v for k, v in before.items() if k not in offset_keys
    }
    assert stored_offset(redis_client) == again
    assert observer.handled[0].verdict is EntryVerdict.DUPLICATE


def test_a_mismatched_duplicate_is_recorded_malformed_and_changes_nothing_else(
    make_poller: MakePoller,
    redis_client: redis.Redis,
    queries: DeliveryQueries,
) -> None:
    publish(redis_client, command(4))
    conflicting = publish(
        redis_client, command(4, payload=rendered_payload(subject="A different subject"))
    )
    poller, _ = make_poller()

    report = drain(poller, redis_client)

    assert (report.accepted, report.malformed) == (1, 1)
    record = malformed_record(redis_client, conflicting)
    assert record["failure_code"] == "idempotency_conflict"
    assert record["stream_entry_id"] == conflicting
    original = queries.delivery("notif-000004")
    assert original is not None
    assert original.content is not None
    assert original.content.subject == "Your invoice #42"
    assert count_deliveries(redis_client) == 1


def test_a_delivery_id_used_by_another_command_is_recorded_malformed(
    make_poller: MakePoller, redis_client: redis.Redis
) -> None:
    publish(redis_client, command(5))
    clash = publish(redis_client, command(5, idempotency_key="notification:other-intent"))
    poller, _ = make_poller()

    drain(poller, redis_client)

    assert malformed_record(redis_client, clash)["failure_code"] == "delivery_id_conflict"
    assert count_deliveries(redis_client) == 1
    assert find_partial_state(redis_client) == []


def _key_in_another_partition(settings: Settings, key: str) -> str:
    """An idempotency key whose partition differs from ``key``'s (when there are several)."""
    partitions = settings.redis_partitions
    home = partition_of("notification", key, partitions)
    return next(
        other
        for other in (f"notification:elsewhere-{n}" for n in range(1000))
        if partitions == 1 or partition_of("notification", other, partitions) != home
    )


@pytest.mark.parametrize("same_batch", [True, False], ids=["same batch", "later batch"])
def test_a_delivery_id_taken_in_another_partition_is_recorded_malformed(
    make_poller: MakePoller, redis_client: redis.Redis, settings: Settings, same_batch: bool
) -> None:
    # Given a command, and a second one with its delivery id whose
    # idempotency key lands in another partition
    poller, _ = make_poller()
    first = command(5)
    publish(redis_client, first)
    if not same_batch:
        drain(poller, redis_client)
    other_key = _key_in_another_partition(settings, first["idempotency_key"])
    clash = publish(redis_client, command(5, idempotency_key=other_key))

    # When the poller accepts them
    drain(poller, redis_client)

    # Then the id stays unique across partitions: the second is a malformed record
    assert malformed_record(redis_client, clash)["failure_code"] == "delivery_id_conflict"
    assert count_deliveries(redis_client) == 1
    assert find_partial_state(redis_client) == []


def _without(field: str) -> dict[str, str]:
    fields = command(10)
    del fields[field]
    return fields


BAD_ENTRIES: list[tuple[str, dict[str, Any], str]] = [
    ("missing field", _without("idempotency_key"), "missing_field"),
    ("bad json", command(10, payload_json='{"to": ["ada@example.com"],'), "invalid_json"),
    ("wrong source", command(10, source="authsession"), "unsupported_source"),
    (
        "bad address",
        command(10, payload=rendered_payload(cc=["not an address"])),
        "invalid_recipient",
    ),
    (
        "too many recipients",
        command(10, payload=rendered_payload(bcc=[f"user{i}@example.com" for i in range(60)])),
        "too_many_recipients",
    ),
    (
        "subject with a newline",
        command(10, payload=rendered_payload(subject="Hi\r\nBcc: victim@example.org")),
        "invalid_subject",
    ),
    (
        "bad base64",
        command(
            10,
            payload=rendered_payload(
                attachments=[
                    {"filename": "a.pdf", "content_type": "application/pdf", "content_base64": "%%"}
                ]
            ),
        ),
        "invalid_attachment",
    ),
    (
        "oversized attachments",
        command(
            10,
            payload=rendered_payload(
                attachments=[
                    {
                        "filename": "big.bin",
                        "content_type": "application/octet-stream",
                        "content_base64": base64.b64encode(b"x" * 4096).decode(),
                    }
                ]
            ),
        ),
        "attachments_too_large",
    ),
    ("unknown payload_mode", command(10, payload_mode="markdown"), "unsupported_payload_mode"),
    ("unknown field", command(10, priority="high"), "unknown_field"),
    (
        "unknown payload field",
        command(10, payload=rendered_payload(importance="high")),
        "unknown_field",
    ),
    ("invalid UTF-8", {**command(10), "payload_json": b"\xff\xfe{}"}, "invalid_encoding"),
    ("payload not an object", command(10, payload_json="[1, 2]"), "invalid_payload"),
    ("bad requested_at_ms", command(10, requested_at_ms="yesterday"), "invalid_field"),
    (
        "template without template_id",
        command(10, mode="template", payload={"to": ["ada@example.com"], "locale": "en"}),
        "invalid_payload",
    ),
    (
        "inline attachment without content id",
        command(
            10,
            payload=rendered_payload(
                attachments=[
                    {
                        "filename": "logo.png",
                        "content_type": "image/png",
                        "content_base64": "aGk=",
                        "inline": True,
                    }
                ]
            ),
        ),
        "invalid_attachment",
    ),
]


@pytest.mark.parametrize(
    ("entry", "failure_code"),
    [(entry, code) for _, entry, code in BAD_ENTRIES],
    ids=[name for name, _, _ in BAD_ENTRIES],
)
def test_a_bad_entry_becomes_a_malformed_record_and_the_poller_moves_on(
    make_poller: MakePoller,
    redis_client: redis.Redis,
    entry: dict[str, Any],
    failure_code: str,
    queries: DeliveryQueries,
) -> None:
    # Given a bad entry followed by a good one
    bad = publish(redis_client, entry)
    publish(redis_client, command(11))
    poller, observer = make_poller(MAIL_MAX_ATTACHMENT_BYTES="1024")

    # When the poller runs
    report = drain(poller, redis_client)

    # Then the bad one is an operator-visible record with the right failure code
    record = malformed_record(redis_client, bad)
    assert record["failure_code"] == failure_code
    assert record["failure_message"]
    assert record["stream"] == STREAM
    assert json.loads(record["raw_fields"])
    assert redis_client.zscore(CONTROL.index_malformed(), bad) is not None
    assert observer.by_entry()[bad].failure_code == failure_code
    # And the good one behind it is accepted
    assert (report.accepted, report.malformed) == (1, 1)
    assert queries.delivery("notif-000011") is not None
    assert count_deliveries(redis_client) == 1
    assert stored_offset(redis_client) == last_entry_id(redis_client)


def test_malformed_records_truncate_raw_fields_and_hide_variables_and_file_bytes(
    make_poller: MakePoller, redis_client: redis.Redis
) -> None:
    # Given a template command whose secret variable is valid but whose locale is not,
    # with an attachment and a very long field
    payload = template_payload(
        locale="not a locale",
        attachments=[
            {"filename": "a.pdf", "content_type": "application/pdf", "content_base64": "QUJD" * 9}
        ],
    )
    bad = publish(redis_client, command(12, mode="template", payload=payload, trace_id="t" * 5000))
    poller, _ = make_poller()

    drain(poller, redis_client)

    record = malformed_record(redis_client, bad)
    assert record["failure_code"] == "invalid_field"  # the over-long trace_id is seen first
    raw = json.loads(record["raw_fields"])
    assert len(raw["trace_id"]) < 1100
    assert "tok-SECRET-7781" not in record["raw_fields"]
    assert "QUJDQUJD" not in record["raw_fields"]
    assert '"reset_token":"[redacted]"' in raw["payload_json"]
    assert 0 < redis_client.pttl(CONTROL.malformed_command(bad)) <= 2160 * 3_600_000


def test_a_poller_killed_between_reading_and_accepting_loses_and_doubles_nothing(
    make_poller: MakePoller, redis_server: RedisBackend, redis_client: redis.Redis
) -> None:
    # Given 250 commands, of which the first 100 were accepted by an earlier run
    for number in range(100):
        publish(redis_client, command(number))
    make_poller()[0].run(until_drained(redis_client))
    offset_before = stored_offset(redis_client)
    for number in range(100, 250):
        publish(redis_client, command(number))

    # When a poller process reads the next batch and dies before accepting it
    died = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.crashing_poller",
            json.dumps(redis_server.environ()),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert died.returncode == DIED_BETWEEN_READ_AND_ACCEPT, died.stderr
    # Then nothing it read was accepted and the offset did not move
    assert stored_offset(redis_client) == offset_before
    assert count_deliveries(redis_client) == 100

    # When the next poller runs, once the dead one's lease has expired
    time.sleep(1.2)
    poller, observer = make_poller()
    report = drain(poller, redis_client)

    # Then it resumes from the stored offset: every command accepted exactly once
    assert report.lease_acquired
    assert report.accepted == 150
    assert report.duplicates == 0
    assert count_deliveries(redis_client) == 250
    assert len({entry.delivery_id for entry in observer.handled}) == 150
    assert find_partial_state(redis_client) == []


def test_two_pollers_started_together_do_not_both_consume(
    make_poller: MakePoller, redis_client: redis.Redis
) -> None:
    # Given 2,000 commands and two pollers started at the same instant
    for number in range(2000):
        publish(redis_client, command(number))
    pollers = [make_poller(), make_poller()]
    start = threading.Barrier(2)
    reports: list[PollReport] = []

    def run(poller: StreamPoller) -> None:
        start.wait()
        reports.append(poller.run(until_drained(redis_client)))

    threads = [threading.Thread(target=run, args=(poller,)) for poller, _ in pollers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    # Then exactly one took the lease and consumed; the other stopped at once
    assert sorted(report.lease_acquired for report in reports) == [False, True]
    idle = next(report for report in reports if not report.lease_acquired)
    assert idle.stopped_because == "another poller holds the lease"
    assert idle.batches == 0
    assert sum(report.accepted for report in reports) == 2000
    handled = [entry for _, observer in pollers for entry in observer.handled]
    assert len(handled) == 2000
    assert count_deliveries(redis_client) == 2000


def test_two_intakes_racing_on_one_offset_write_once(
    redis_client: redis.Redis, store: RedisDeliveryStore | PartitionedDeliveryStore
) -> None:
    # Given two pollers that both read the same batch from the same offset
    #       (as if the lease had expired under a stalled one)
    for number in range(5):
        publish(redis_client, command(number))
    raw = cast(list[tuple[str, dict[str, str]]], redis_client.xrange(STREAM))
    entries = [
        StreamEntry(entry_id, tuple((k.encode(), v.encode()) for k, v in fields.items()))
        for entry_id, fields in raw
    ]
    first = StreamIntake(store, SystemClock(), STREAM, CommandLimits())
    second = StreamIntake(store, SystemClock(), STREAM, CommandLimits())

    # When both accept it
    won = first.accept("0-0", entries)
    written = {key: redis_client.dump(key) for key in text_keys(redis_client, SERVICE_KEYS)}
    lost = second.accept("0-0", entries)

    # Then the second writes nothing and learns where the offset is
    #      (with partitions its per-partition steps find only duplicates,
    #      and the offset step in partition 0 refuses the stale offset)
    assert len(won.handled) == 5
    assert lost.offset_moved
    assert lost.handled == ()
    assert lost.offset == entries[-1].entry_id
    assert {key: redis_client.dump(key) for key in text_keys(redis_client, SERVICE_KEYS)} == (
        written
    )
    assert count_deliveries(redis_client) == 5


def test_ten_thousand_entries_are_all_accepted_in_one_run(
    make_poller: MakePoller, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 10,000 commands of both modes on the stream
    pipe = redis_client.pipeline(transaction=False)
    for number in range(10_000):
        mode = "template" if number % 2 else "rendered"
        pipe.xadd(STREAM, cast(StreamFields, command(number, mode=mode)))
    pipe.execute()
    poller, _ = make_poller()

    # When one poller run drains it
    started = time.perf_counter()
    report = drain(poller, redis_client)
    elapsed = time.perf_counter() - started

    # Then every one is accepted, exactly once
    assert report.accepted == 10_000
    assert (report.duplicates, report.malformed) == (0, 0)
    assert count_deliveries(redis_client) == 10_000
    assert total(redis_client, lambda keys: keys.attempt_schedule()) == 10_000
    with capsys.disabled():
        print(
            f"\n[stream intake] 10,000 commands in {elapsed:.2f}s: "
            f"{10_000 / elapsed:,.0f} commands/s in {report.batches} batches"
        )


def test_the_poller_survives_its_connections_being_dropped(
    make_poller: MakePoller, redis_client: redis.Redis
) -> None:
    # Given a poller running in the background
    poller, _ = make_poller()
    reports: list[PollReport] = []
    runner = threading.Thread(target=lambda: reports.append(poller.run(for_seconds(3))))
    runner.start()
    publish(redis_client, command(1))
    deadline = time.monotonic() + 5
    while count_deliveries(redis_client) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)

    # When Redis drops every client connection mid-run
    drop_client_connections(redis_client)
    publish(redis_client, command(2))

    # Then the poller reconnects and accepts what comes next
    runner.join(timeout=15)
    assert reports
    assert reports[0].accepted == 2
    assert count_deliveries(redis_client) == 2
    assert reports[0].stopped_because == "time is up"


def test_the_handler_consumes_when_invoked_with_the_sample_scheduled_event(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisBackend, redis_client: redis.Redis
) -> None:
    # Given commands on the stream and the handler cold-started against this Redis
    for number in range(3):
        publish(redis_client, command(number))
    for name in Settings.variable_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in redis_server.environ().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MAIL_STREAM_BLOCK_TIMEOUT", "100ms")
    module = importlib.reload(importlib.import_module("stream_poller"))
    event = json.loads((REPO_ROOT / "events" / "stream_poller_scheduled.json").read_text())

    # When EventBridge's tick arrives with 4 s left (the poller keeps a 3 s reserve)
    context = FakeLambdaContext(timeout_ms=4000)
    answer = module.handler(event, context)

    # Then it consumed everything and stopped before its time ran out
    assert answer["lease_acquired"] is True
    assert answer["accepted"] == 3
    assert answer["stopped_because"] == "time is up"
    assert context.get_remaining_time_in_millis() > 2000
    assert count_deliveries(redis_client) == 3


def test_the_handler_logs_each_entry_and_counts_outcomes_without_secrets(
    redis_server: RedisBackend, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given a template command with a secret variable, a duplicate and a bad entry
    accepted = publish(redis_client, command(1, mode="template"))
    publish(redis_client, command(1, mode="template"))
    bad = publish(redis_client, command(2, mode="template", payload=template_payload(locale="?")))
    # And one reusing the first one's idempotency key, and one naming no delivery
    conflict = publish(redis_client, command(3, idempotency_key="notification:intent-1"))
    nameless = publish(
        redis_client, {k: v for k, v in command(4).items() if k not in {"delivery_id", "source"}}
    )

    # When the handler runs in its own process, as in Lambda
    answers, printed = invoke_in_fresh_process(
        "stream_poller",
        tmp_path,
        {**redis_server.environ(), "MAIL_STREAM_BLOCK_TIMEOUT": "100ms"},
        [json.loads((REPO_ROOT / "events" / "stream_poller_scheduled.json").read_text())],
        timeout_ms=3600,
    )

    # Then its answer sums the run up
    assert answers[0]["accepted"] == 1
    assert (answers[0]["duplicates"], answers[0]["malformed"]) == (1, 3)
    # And each entry has a JSON log line with its identifiers
    lines = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    logged = {line.get("stream_entry_id"): line for line in lines if "stream_entry_id" in line}
    assert logged[accepted]["delivery_id"] == "notif-000001"
    assert logged[accepted]["source"] == "notification"
    assert logged[accepted]["template_id"] == "account.password_reset"
    assert logged[bad]["failure_code"] == "invalid_payload"
    # And a malformed entry's line names the delivery and source it gave, if any
    assert (logged[bad]["delivery_id"], logged[bad]["source"]) == ("notif-000002", "notification")
    assert logged[conflict]["failure_code"] == "idempotency_conflict"
    assert (logged[conflict]["delivery_id"], logged[conflict]["source"]) == (
        "notif-000003",
        "notification",
    )
    assert logged[nameless]["failure_code"] == "missing_field"
    assert "delivery_id" not in logged[nameless]
    assert "source" not in logged[nameless]
    # And the outcomes are counted as EMF metrics
    metrics = {
        name: value
        for line in lines
        if "_aws" in line
        for name, value in line.items()
        if name not in {"_aws", "service"}
    }
    assert metrics["GenericDeliveriesAccepted"] == [1.0]
    assert metrics["DuplicateCommands"] == [1.0]
    assert metrics["MalformedCommands"] == [3.0]
    # And no secret variable's value is anywhere in the output
    assert "tok-SECRET-7781" not in printed


# -- trimming the stream (MAIL_STREAM_RETENTION) ----------------------------------------------

# The most entries a trim may keep beyond the retention: the marks are one per
# atomic step (up to 20 entries, 160 over several partitions), and `XTRIM
# MINID ~` removes whole storage nodes only (up to 100 entries each).
TRIM_SLACK = MAX_CALL_ENTRIES * MAX_STEP_GROWTH + 100


def stream_ids(client: redis.Redis, after: str = "-") -> list[str]:
    start = "-" if after == "-" else f"({after}"
    entries = cast(list[tuple[str, Any]], client.xrange(STREAM, start, "+"))
    return [entry_id for entry_id, _ in entries]


def test_handled_entries_beyond_the_retention_are_trimmed_and_the_newest_kept(
    make_poller: MakePoller, redis_client: redis.Redis
) -> None:
    # Given 600 commands on the stream, and a poller keeping the last 50 it handled
    published = [publish(redis_client, command(number)) for number in range(600)]
    poller, _ = make_poller(MAIL_STREAM_RETENTION="50")

    # When it has handled them all
    report = drain(poller, redis_client)

    # Then the stream holds the newest entries: at least 50, and not many more
    assert report.accepted == 600
    kept = stream_ids(redis_client)
    assert 50 <= len(kept) <= 50 + TRIM_SLACK
    assert kept == published[-len(kept) :]
    assert report.trimmed == 600 - len(kept)
    # And the marks it trims by do not pile up
    assert redis_client.zcard(CONTROL.stream_trim_marks(STREAM)) <= 50 // 20 + 2


def test_the_default_retention_keeps_a_small_stream_whole(
    make_poller: MakePoller, redis_client: redis.Redis
) -> None:
    published = [publish(redis_client, command(number)) for number in range(300)]
    poller, _ = make_poller()

    report = drain(poller, redis_client)

    assert (report.accepted, report.trimmed) == (300, 0)
    assert stream_ids(redis_client) == published


@pytest.mark.parametrize(
    ("where", "status"),
    [("before-accept", DIED_BETWEEN_READ_AND_ACCEPT), ("after-accept", DIED_AFTER_ACCEPTING)],
)
def test_a_poller_that_dies_mid_batch_never_trims_an_entry_it_has_not_handled(
    make_poller: MakePoller,
    redis_server: RedisBackend,
    redis_client: redis.Redis,
    where: str,
    status: int,
) -> None:
    keep_none = {"MAIL_STREAM_RETENTION": "0"}
    # Given 100 commands handled and trimmed by a poller that keeps none, and 150 more
    for number in range(100):
        publish(redis_client, command(number))
    drain(make_poller(**keep_none)[0], redis_client)
    published = [publish(redis_client, command(number)) for number in range(100, 250)]

    # When a poller process that trims as it goes dies in the middle of a batch
    died = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.crashing_poller",
            json.dumps({**redis_server.environ(), **keep_none}),
            where,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert died.returncode == status, died.stderr

    # Then every entry after the stored offset is still on the stream, whatever
    # had been accepted (after-accept over partitions: deliveries, no offset)
    offset = stored_offset(redis_client)
    assert offset is not None
    unhandled = [entry_id for entry_id in published if stream_id(entry_id) > stream_id(offset)]
    assert unhandled
    assert stream_ids(redis_client, after=offset) == unhandled

    # When the next poller runs, once the dead one's lease has expired
    time.sleep(1.2)
    report = drain(make_poller(**keep_none)[0], redis_client)

    # Then every command is a delivery exactly once, and the handled ones are trimmed
    assert report.accepted + report.duplicates == len(unhandled)
    assert count_deliveries(redis_client) == 250
    assert find_partial_state(redis_client) == []
    assert len(stream_ids(redis_client)) <= TRIM_SLACK


def test_trimming_through_an_entry_never_deletes_one_after_it(
    redis_server: RedisBackend, redis_client: redis.Redis
) -> None:
    # Given 1,000 commands on the stream
    pipe = redis_client.pipeline(transaction=False)
    for number in range(1000):
        pipe.xadd(STREAM, cast(StreamFields, command(number)))
    published = [str(entry_id) for entry_id in pipe.execute()]
    settings = Settings.from_environ(redis_server.environ())
    stream = RedisCommandStream(build_redis_client(settings, decode_responses=False), STREAM)

    # When it is trimmed through ever later entries, at most 50 entries a call
    for point in [published[10], published[499], published[998]]:
        while stream.trim_through(point, limit=50) > 0:
            kept = stream_ids(redis_client)
            # Then each call deletes only the oldest, never one after the point
            assert kept == published[-len(kept) :]
            assert len(kept) >= 1000 - published.index(point) - 1

    # And at the end little more than the last entry is left (whole nodes go)
    assert 1 <= redis_client.xlen(STREAM) <= 100
