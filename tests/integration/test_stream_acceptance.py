"""Stream acceptance against a real redis-server: conflicts, lean calls, connections.

A batch goes to ``accept_batch.lua`` without the malformed-record blocks of
its deliveries (building their redacted raw fields is the costliest part of
an entry); the script writes nothing and asks for them when one conflicts.
With partitions, each partition's step only reports its conflicts, and only
those entries' records are built, for the last step in partition 0.
"""

from __future__ import annotations

import json
from typing import cast

import pytest
import redis

import mailcore.services.stream_intake as stream_intake_module
from mailcore.contracts.stream import CommandLimits, RawFields, redacted_raw_fields
from mailcore.ports import EntryVerdict, StreamEntry
from mailcore.services.stream_intake import StreamIntake
from mailcore.store.partitions import PartitionedDeliveryStore
from mailcore.store.redis_store import RedisDeliveryStore
from tests.support.commands import STREAM, command, template_payload
from tests.support.fakes import FixedClock
from tests.support.partitions import CONTROL, drop_client_connections
from tests.support.store_invariants import count_deliveries, find_partial_state

Store = RedisDeliveryStore | PartitionedDeliveryStore
SECRET = "tok-SECRET-7781"  # a secret template variable of template_payload()


def entry(number: int, entry_id: str | None = None, **overrides: object) -> StreamEntry:
    fields = command(number, mode="template", **overrides)  # type: ignore[arg-type]
    return StreamEntry(
        entry_id or f"1-{number}",
        tuple((name.encode(), value.encode()) for name, value in fields.items()),
    )


def changed(number: int, entry_id: str) -> StreamEntry:
    """Command ``number`` again, same keys, different content (with a file)."""
    payload = template_payload(
        variables={"name": "Eve", "reset_token": SECRET, "expires_minutes": 5},
        attachments=[
            {"filename": "a.pdf", "content_type": "application/pdf", "content_base64": "QUJD" * 9}
        ],
    )
    return entry(number, entry_id, payload=payload)


@pytest.fixture
def redactions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts how many entries' raw fields were redacted (built for a malformed record)."""
    count = [0]

    def counting(raw: RawFields) -> dict[str, str]:
        count[0] += 1
        return redacted_raw_fields(raw)

    monkeypatch.setattr(stream_intake_module, "redacted_raw_fields", counting)
    return count


def intake(store: Store) -> StreamIntake:
    return StreamIntake(store, FixedClock(), STREAM, CommandLimits())


def record_of(client: redis.Redis, entry_id: str) -> dict[str, str]:
    return cast(dict[str, str], client.hgetall(CONTROL.malformed_command(entry_id)))


def test_entries_without_a_conflict_never_have_their_raw_fields_built(
    store: Store, redis_client: redis.Redis, redactions: list[int]
) -> None:
    result = intake(store).accept("0-0", [entry(n) for n in range(1, 6)])

    assert [h.verdict for h in result.handled] == [EntryVerdict.CREATED] * 5
    assert redactions[0] == 0
    assert count_deliveries(redis_client) == 5
    assert find_partial_state(redis_client) == []
    assert redis_client.get(CONTROL.stream_offset(STREAM)) == "1-5"


def test_a_conflict_with_a_stored_command_is_recorded_with_its_raw_fields_redacted(
    store: Store, redis_client: redis.Redis, redactions: list[int]
) -> None:
    # Given command 1 accepted earlier
    intake(store).accept("0-0", [entry(1)])

    # When a batch brings a new command and command 1's key with other content
    result = intake(store).accept("1-1", [entry(2, "2-1"), changed(1, "2-2")])

    # Then the new one is created once, the other is an operator-visible record
    assert [(h.verdict, h.failure_code) for h in result.handled] == [
        (EntryVerdict.CREATED, None),
        (EntryVerdict.MALFORMED, "idempotency_conflict"),
    ]
    assert redactions[0] > 0  # built only once the script asked for them
    record = record_of(redis_client, "2-2")
    assert record["failure_code"] == "idempotency_conflict"
    assert record["failure_message"] == ("idempotency_key was already used for a different command")
    assert record["stream_entry_id"] == "2-2"
    raw = json.loads(record["raw_fields"])
    assert raw["delivery_id"] == "notif-000001"
    assert SECRET not in record["raw_fields"]
    assert "QUJDQUJD" not in record["raw_fields"]
    assert '"reset_token":"[redacted]"' in raw["payload_json"]
    assert redis_client.zscore(CONTROL.index_malformed(), "2-2") is not None
    assert not redis_client.exists(CONTROL.malformed_command("2-1"))
    assert count_deliveries(redis_client) == 2
    assert find_partial_state(redis_client) == []
    assert redis_client.get(CONTROL.stream_offset(STREAM)) == "2-2"


def test_conflicts_within_one_batch_are_decided_in_stream_order(
    store: Store, redis_client: redis.Redis
) -> None:
    batch = [
        entry(1, "1-1"),
        entry(1, "1-2", request_id="retry"),  # the same command again
        changed(1, "1-3"),  # its key, other content
        entry(1, "1-4", idempotency_key="another-intent"),  # its delivery id, another key
        entry(2, "1-5"),
        entry(3, "1-6", payload_json="{"),  # refused by the decoder
    ]

    result = intake(store).accept("0-0", batch)

    assert [(h.verdict, h.failure_code, h.delivery_id) for h in result.handled] == [
        (EntryVerdict.CREATED, None, "notif-000001"),
        (EntryVerdict.DUPLICATE, None, "notif-000001"),
        # a refused entry keeps the delivery id it named (for the log line)
        (EntryVerdict.MALFORMED, "idempotency_conflict", "notif-000001"),
        (EntryVerdict.MALFORMED, "delivery_id_conflict", "notif-000001"),
        (EntryVerdict.CREATED, None, "notif-000002"),
        (EntryVerdict.MALFORMED, "invalid_json", "notif-000003"),
    ]
    assert record_of(redis_client, "1-6")["failure_code"] == "invalid_json"
    assert record_of(redis_client, "1-4")["failure_message"] == (
        "delivery_id already belongs to another delivery"
    )
    assert SECRET not in record_of(redis_client, "1-3")["raw_fields"]
    assert count_deliveries(redis_client) == 2
    assert find_partial_state(redis_client) == []


def test_the_stream_script_is_reloaded_after_the_server_forgets_it(
    store: Store, redis_client: redis.Redis
) -> None:
    redis_client.script_flush()

    result = intake(store).accept("0-0", [entry(1), entry(2)])

    assert [h.verdict for h in result.handled] == [EntryVerdict.CREATED] * 2
    assert find_partial_state(redis_client) == []


def test_a_pooled_connection_the_server_closed_is_replaced(
    store: Store, redis_client: redis.Redis
) -> None:
    intake(store).accept("0-0", [entry(1)])
    # The server drops the store's idle connection (restart, idle timeout)
    drop_client_connections(redis_client)

    result = intake(store).accept("1-1", [entry(2, "2-1")])

    assert [h.verdict for h in result.handled] == [EntryVerdict.CREATED]
    assert count_deliveries(redis_client) == 2


# -- trim marks: written with the offset, read back as the trim point ---------------------


def marks(client: redis.Redis) -> list[tuple[str, float]]:
    key = CONTROL.stream_trim_marks(STREAM)
    return cast(list[tuple[str, float]], client.zrange(key, 0, -1, withscores=True))


def test_each_step_marks_its_offset_with_the_entries_handled_so_far(
    store: Store, redis_client: redis.Redis
) -> None:
    # Given steps of at most 4 entries
    steps = StreamIntake(store, FixedClock(), STREAM, CommandLimits(), max_call_entries=4)

    # When 10 entries are accepted (one malformed), then 2 more
    batch = [entry(n) for n in range(1, 10)] + [entry(10, requested_at_ms="soon")]
    steps.accept("0-0", batch)
    steps.accept("1-10", [entry(11), entry(12)])

    # Then every step left a mark: where the offset moved, and how many entries it is in
    assert marks(redis_client) == [("1-4", 4), ("1-8", 8), ("1-10", 10), ("1-12", 12)]


def test_a_step_refused_for_a_moved_offset_marks_nothing(
    store: Store, redis_client: redis.Redis
) -> None:
    intake(store).accept("0-0", [entry(1), entry(2)])

    # When a stale poller sends a step expecting an older offset
    stale = intake(store).accept("0-0", [entry(3)])

    # Then it writes nothing, marks included
    assert stale.offset_moved
    assert marks(redis_client) == [("1-2", 2)]


@pytest.mark.parametrize(
    ("retention", "point", "marks_left"),
    [
        (0, "1-12", ["1-12"]),
        (3, "1-8", ["1-8", "1-12"]),
        (4, "1-8", ["1-8", "1-12"]),
        (5, "1-4", ["1-4", "1-8", "1-12"]),
        (12, None, ["1-4", "1-8", "1-12"]),
    ],
)
def test_the_trim_point_keeps_the_retention_and_forgets_older_marks(
    store: Store,
    redis_client: redis.Redis,
    retention: int,
    point: str | None,
    marks_left: list[str],
) -> None:
    # Given three steps of 4 entries handled
    steps = StreamIntake(store, FixedClock(), STREAM, CommandLimits(), max_call_entries=4)
    steps.accept("0-0", [entry(n) for n in range(1, 13)])

    # When the poller asks where it may trim, keeping `retention` handled entries
    found = store.stream_trim_point(STREAM, retention)

    # Then it is the newest mark at least that far behind, and older marks are gone
    assert found == point
    assert [member for member, _ in marks(redis_client)] == marks_left


def test_the_trim_point_never_passes_the_stored_offset(
    store: Store, redis_client: redis.Redis
) -> None:
    # Given entries handled up to 1-6, and then the offset set back by hand to 1-3
    intake(store).accept("0-0", [entry(n) for n in range(1, 7)])
    redis_client.set(CONTROL.stream_offset(STREAM), "1-3")

    # Then the poller may trim up to the offset, not to the mark beyond it
    assert store.stream_trim_point(STREAM, 0) == "1-3"
