"""The operator_api Lambda handler against real Redis: filters, pages, resend, redaction."""

from __future__ import annotations

import importlib
import itertools
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import pytest
import redis

from mailcore.config import Settings
from mailcore.domain.model import Attempt, Delivery, Envelope, PayloadMode, Source
from mailcore.domain.states import AttemptStatus, DeliveryStatus, ProviderOutcome
from mailcore.providers.stub import StubProvider
from mailcore.store.keys import RedisKeys
from mailcore.store.redis_store import RedisDeliveryStore
from tests.support.api_events import api_event, body_of, header
from tests.support.fakes import SMTP_MODE_ENV
from tests.support.faults import eventually
from tests.support.lambda_context import FakeLambdaContext
from tests.support.partitions import CONTROL, home_keys
from tests.support.pipeline import Pipeline
from tests.support.redis_backend import RedisBackend

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE = "/api/v1/internal"
T0 = 1_795_338_900_000
Invoke = Callable[[dict[str, Any]], dict[str, Any]]


@pytest.fixture
def api(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisBackend, redis_client: redis.Redis
) -> Invoke:
    for name in Settings.variable_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in redis_server.environ().items():
        monkeypatch.setenv(name, value)
    module: ModuleType = importlib.reload(importlib.import_module("operator_api"))

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = module.handler(event, FakeLambdaContext())
        return answer

    return invoke


def seeded(
    number: int,
    *,
    status: DeliveryStatus = DeliveryStatus.SENT,
    source: Source = Source.NOTIFICATION,
    to: str = "ada@example.com",
    template_id: str | None = "order.shipped",
    key: str | None = None,
    created_at_ms: int | None = None,
    variables: dict[str, Any] | None = None,
    secret_variables: frozenset[str] = frozenset(),
) -> Delivery:
    created = T0 + number * 1000 if created_at_ms is None else created_at_ms
    return Delivery(
        delivery_id=f"d-{number:04d}",
        source=source,
        status=status,
        payload_mode=PayloadMode.TEMPLATE,
        envelope=Envelope(to=(to,)),
        idempotency_key=key or f"key-{number}",
        created_at_ms=created,
        updated_at_ms=created,
        template_id=template_id,
        locale="en",
        variables=variables or {"order": str(number)},
        secret_variables=secret_variables,
        attempt_count=1,
    )


def store_all(store: RedisDeliveryStore, deliveries: list[Delivery]) -> None:
    for delivery in deliveries:
        first = Attempt(delivery.delivery_id, 1, AttemptStatus.SCHEDULED, delivery.created_at_ms, 0)
        queued = delivery.status is DeliveryStatus.QUEUED
        store.accept(
            delivery, first if queued else None, fingerprint=delivery.delivery_id, outcome="sent"
        )


def list_ids(api: Invoke, **query: str) -> tuple[list[str], str | None]:
    answer = api(api_event("GET", f"{BASE}/deliveries", query=query or None))
    assert answer["statusCode"] == 200, answer["body"]
    page = body_of(answer)
    return [item["delivery_id"] for item in page["items"]], page["next_cursor"]


def walk(api: Invoke, limit: int, **query: str) -> list[str]:
    ids, cursor = list_ids(api, limit=str(limit), **query)
    while cursor:
        more, cursor = list_ids(api, limit=str(limit), cursor=cursor, **query)
        ids += more
    return ids


MIXED = [
    seeded(1, status=DeliveryStatus.SENT, to="ada@example.com"),
    seeded(2, status=DeliveryStatus.FAILED, to="bob@example.com"),
    seeded(3, status=DeliveryStatus.SENT, to="Bob@Example.com", template_id="invoice"),
    seeded(4, status=DeliveryStatus.QUEUED, source=Source.AUTHSESSION, template_id="auth.x"),
    seeded(5, status=DeliveryStatus.DEAD_LETTER, to="ada@example.com", key="shared"),
    seeded(6, status=DeliveryStatus.SENT, source=Source.AUTHSESSION, key="shared"),
    seeded(7, status=DeliveryStatus.SUPPRESSED, to="ada@example.com", template_id="invoice"),
    seeded(8, status=DeliveryStatus.SENT, to="ada@example.com", template_id="invoice"),
]
FILTERS: dict[str, tuple[str, Callable[[Delivery], bool]]] = {
    "recipient": ("ada@example.com", lambda d: d.envelope.to[0].lower() == "ada@example.com"),
    "status": ("sent", lambda d: d.status == "sent"),
    "source": ("notification", lambda d: d.source == "notification"),
    "template_id": ("invoice", lambda d: d.template_id == "invoice"),
    "idempotency_key": ("shared", lambda d: d.idempotency_key == "shared"),
}
COMBINATIONS = [
    combo for size in (1, 2, 3) for combo in itertools.combinations(sorted(FILTERS), size)
]


@pytest.mark.parametrize("names", COMBINATIONS, ids=["+".join(c) for c in COMBINATIONS])
def test_every_filter_alone_and_combined_returns_exactly_the_matches_newest_first(
    api: Invoke, store: RedisDeliveryStore, names: tuple[str, ...]
) -> None:
    # Given deliveries differing in every filtered attribute
    store_all(store, MIXED)

    # When the operator lists with these filters
    query = {name: FILTERS[name][0] for name in names}
    ids = walk(api, 2, **query)

    # Then exactly the matching deliveries come back, newest first
    expected = [
        d.delivery_id
        for d in sorted(MIXED, key=lambda d: d.created_at_ms, reverse=True)
        if all(FILTERS[name][1](d) for name in names)
    ]
    assert ids == expected


def test_no_filter_lists_everything_newest_first(api: Invoke, store: RedisDeliveryStore) -> None:
    store_all(store, MIXED)
    assert walk(api, 3) == [d.delivery_id for d in reversed(MIXED)]


def test_pages_never_skip_or_repeat_while_new_deliveries_arrive(
    api: Invoke, store: RedisDeliveryStore
) -> None:
    # Given 25 deliveries, several sharing a creation millisecond
    existing = [seeded(n, created_at_ms=T0 + (n // 3) * 1000) for n in range(25)]
    store_all(store, existing)

    # When an operator pages through while new deliveries keep arriving
    seen: list[str] = []
    ids, cursor = list_ids(api, limit="4")
    seen += ids
    arriving = itertools.count(100)
    while cursor:
        store_all(store, [seeded(next(arriving), created_at_ms=T0 + 10**6)])
        ids, cursor = list_ids(api, limit="4", cursor=cursor)
        seen += ids

    # Then every delivery that existed appears once, in order, and the newcomers
    # (newer than the first page) do not sneak into later pages
    expected = [
        d.delivery_id
        for d in sorted(existing, key=lambda d: (d.created_at_ms, d.delivery_id), reverse=True)
    ]
    assert seen == expected


def test_a_page_over_a_rare_filter_stays_bounded_and_resumes(
    api: Invoke, settings: Settings, store: RedisDeliveryStore
) -> None:
    # Given two large indexes (about 200 members each, in every partition) that
    # share only two deliveries
    rare = {194, 388}
    many = [
        seeded(
            n,
            status=DeliveryStatus.SENT if n % 2 == 0 else DeliveryStatus.FAILED,
            template_id="bulk" if n % 2 == 1 or n in rare else "other",
        )
        for n in range(1, 400 * settings.redis_partitions)
    ]
    store_all(store, many)

    # When listing sent deliveries of that template, two per page
    pages: list[list[str]] = []
    ids, cursor = list_ids(api, limit="2", status="sent", template_id="bulk")
    pages.append(ids)
    while cursor:
        ids, cursor = list_ids(api, limit="2", status="sent", template_id="bulk", cursor=cursor)
        pages.append(ids)

    # Then both are found, newest first, and pages came back short rather than
    # scanning the whole index at once (at most 20 candidates per requested item,
    # in each partition)
    assert [item for page in pages for item in page] == ["d-0388", "d-0194"]
    assert len(pages) >= 200 // (2 * 20)
    assert any(len(page) < 2 for page in pages[:-1])


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ({"cursor": "not-a-cursor"}, "cursor is not valid"),
        ({"cursor": "MTIz"}, "cursor is not valid"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "delivered"}, "status"),
        ({"source": "sms"}, "source"),
    ],
)
def test_bad_list_parameters_are_a_400(api: Invoke, query: dict[str, str], fragment: str) -> None:
    answer = api(api_event("GET", f"{BASE}/deliveries", query=query))
    assert answer["statusCode"] == 400
    assert body_of(answer)["error"]["code"] == "invalid_request"
    assert fragment in body_of(answer)["error"]["message"]


def resend(api: Invoke, delivery_id: str, key: str | None = "resend-1") -> dict[str, Any]:
    return api(
        api_event(
            "POST",
            f"{BASE}/deliveries/{{delivery_id}}/resend",
            path_parameters={"delivery_id": delivery_id},
            headers={"Idempotency-Key": key} if key else None,
        )
    )


@pytest.mark.parametrize(
    "status",
    [
        DeliveryStatus.SENT,
        DeliveryStatus.SUPPRESSED,
        DeliveryStatus.FAILED,
        DeliveryStatus.DEAD_LETTER,
    ],
)
def test_a_settled_delivery_is_resent_as_a_linked_clone_and_the_parent_is_untouched(
    api: Invoke, store: RedisDeliveryStore, redis_client: redis.Redis, status: DeliveryStatus
) -> None:
    # Given a settled delivery
    parent = seeded(1, status=status)
    store_all(store, [parent])
    parent_key = home_keys(redis_client, parent.delivery_id).delivery(parent.delivery_id)
    before = redis_client.dump(parent_key)

    # When an operator resends it
    answer = resend(api, parent.delivery_id)

    # Then a new queued delivery links back to it, with a first attempt due
    assert answer["statusCode"] == 201
    clone = body_of(answer)
    assert clone["parent_delivery_id"] == parent.delivery_id
    assert clone["source"] == "operator_resend"
    assert clone["status"] == "queued"
    assert clone["delivery_id"] != parent.delivery_id
    assert (clone["template_id"], clone["to"]) == (parent.template_id, list(parent.envelope.to))
    clone_keys = home_keys(redis_client, clone["delivery_id"])
    assert redis_client.zscore(clone_keys.attempt_schedule(), clone["delivery_id"]) is not None
    # And the parent did not change by a byte
    assert redis_client.dump(parent_key) == before


@pytest.mark.parametrize("status", [DeliveryStatus.QUEUED, DeliveryStatus.SENDING])
def test_a_delivery_still_in_flight_cannot_be_resent(
    api: Invoke, store: RedisDeliveryStore, status: DeliveryStatus
) -> None:
    store_all(store, [seeded(1, status=status)])

    answer = resend(api, "d-0001")

    assert answer["statusCode"] == 409
    assert body_of(answer)["error"]["code"] == "not_resendable"
    assert status in body_of(answer)["error"]["message"]


def test_a_replayed_resend_returns_the_same_clone(api: Invoke, store: RedisDeliveryStore) -> None:
    store_all(store, [seeded(1), seeded(2)])
    first = resend(api, "d-0001", "resend-abc")

    again = resend(api, "d-0001", "resend-abc")
    other_parent = resend(api, "d-0002", "resend-abc")

    assert again["statusCode"] == 200
    assert header(again, "Idempotent-Replayed") == "true"
    assert body_of(again)["delivery_id"] == body_of(first)["delivery_id"]
    assert other_parent["statusCode"] == 409
    assert body_of(other_parent)["error"]["code"] == "idempotency_conflict"


def test_a_resend_needs_an_idempotency_key(api: Invoke, store: RedisDeliveryStore) -> None:
    store_all(store, [seeded(1)])
    answer = resend(api, "d-0001", key=None)
    assert answer["statusCode"] == 400
    assert "Idempotency-Key" in body_of(answer)["error"]["message"]


@pytest.mark.parametrize(
    ("method", "resource", "parameters"),
    [
        ("GET", f"{BASE}/deliveries/{{delivery_id}}", {"delivery_id": "nope"}),
        ("GET", f"{BASE}/deliveries/{{delivery_id}}/attempts", {"delivery_id": "nope"}),
        ("GET", f"{BASE}/malformed-commands/{{stream_entry_id}}", {"stream_entry_id": "1-0"}),
    ],
)
def test_unknown_ids_are_a_404(
    api: Invoke, method: str, resource: str, parameters: dict[str, str]
) -> None:
    answer = api(api_event(method, resource, path_parameters=parameters))
    assert answer["statusCode"] == 404
    assert body_of(answer)["error"]["code"] == "not_found"


def test_resending_an_unknown_delivery_is_a_404(api: Invoke) -> None:
    answer = resend(api, "nope")
    assert answer["statusCode"] == 404


def test_operator_reads_never_show_secret_variables(api: Invoke, store: RedisDeliveryStore) -> None:
    # Given a login code and a generic mail with a secret token
    login = replace(
        seeded(1, source=Source.AUTHSESSION, template_id="auth.login_code"),
        variables={"code": "739251"},
        secret_variables=frozenset({"code"}),
    )
    reset = seeded(
        2,
        variables={"name": "Ada", "reset_token": "tok-SECRET-7781"},
        secret_variables=frozenset({"reset_token"}),
    )
    store_all(store, [login, reset])

    # When the operator reads them every way there is
    answers = [
        api(api_event("GET", f"{BASE}/deliveries")),
        api(
            api_event(
                "GET",
                f"{BASE}/deliveries/{{delivery_id}}",
                path_parameters={"delivery_id": "d-0001"},
            )
        ),
        api(
            api_event(
                "GET",
                f"{BASE}/deliveries/{{delivery_id}}",
                path_parameters={"delivery_id": "d-0002"},
            )
        ),
        resend(api, "d-0001", "r-1"),
        resend(api, "d-0002", "r-2"),
    ]

    # Then the secrets are redacted, everything else is shown
    everything = "".join(answer["body"] for answer in answers)
    assert "739251" not in everything
    assert "tok-SECRET-7781" not in everything
    shown = body_of(answers[2])
    assert shown["variables"] == {"name": "Ada", "reset_token": "[redacted]"}
    assert shown["secret_variables"] == ["reset_token"]
    assert body_of(answers[1])["variables"] == {"code": "[redacted]"}


def test_the_sample_operator_events_are_answered(api: Invoke, store: RedisDeliveryStore) -> None:
    store_all(store, [seeded(1, status=DeliveryStatus.DEAD_LETTER)])
    listing = json.loads((REPO_ROOT / "events" / "operator_api_list_deliveries.json").read_text())
    resend_event = json.loads((REPO_ROOT / "events" / "operator_api_resend.json").read_text())

    listed = api(listing)
    refused = api(resend_event)  # its delivery id does not exist here

    assert listed["statusCode"] == 200
    assert [item["delivery_id"] for item in body_of(listed)["items"]] == ["d-0001"]
    assert refused["statusCode"] == 404


def test_attempts_come_oldest_first_with_redacted_summaries(
    api: Invoke, store: RedisDeliveryStore, redis_client: redis.Redis
) -> None:
    store_all(store, [seeded(1, status=DeliveryStatus.QUEUED)])
    keys = home_keys(redis_client, "d-0001")
    redis_client.hset(keys.delivery("d-0001"), "attempt_count", "2")
    redis_client.hset(
        keys.attempt("d-0001", 1),
        mapping={"status": "provider_rejected", "outcome": "transient_failure", "summary": "451"},
    )
    redis_client.hset(
        keys.attempt("d-0001", 2),
        mapping={
            "delivery_id": "d-0001",
            "attempt_no": "2",
            "status": "scheduled",
            "scheduled_for_ms": str(T0 + 60_000),
            "created_at_ms": str(T0),
        },
    )

    answer = api(
        api_event(
            "GET",
            f"{BASE}/deliveries/{{delivery_id}}/attempts",
            path_parameters={"delivery_id": "d-0001"},
        )
    )

    items = body_of(answer)["items"]
    assert [(a["attempt_no"], a["status"]) for a in items] == [
        (1, "provider_rejected"),
        (2, "scheduled"),
    ]
    assert items[0]["outcome"] == "transient_failure"


def attempts_of(api: Invoke, delivery_id: str) -> dict[str, Any]:
    return api(
        api_event(
            "GET",
            f"{BASE}/deliveries/{{delivery_id}}/attempts",
            path_parameters={"delivery_id": delivery_id},
        )
    )


def test_attempts_stay_readable_after_their_delivery_expires(
    api: Invoke,
    aws: Any,
    attempt_queue_url: str,
    redis_server: RedisBackend,
    redis_client: redis.Redis,
) -> None:
    # Given a delivery sent on its second attempt by the real worker, on a
    # deployment that keeps settled deliveries 300 ms and attempts 90 days
    settings = Settings.from_environ(
        {
            **redis_server.environ(),
            **SMTP_MODE_ENV,
            "MAIL_ATTEMPT_QUEUE_URL": attempt_queue_url,
            "MAIL_DELIVERY_TTL": "300ms",
            "MAIL_ATTEMPT_TTL": "2160h",
        }
    )
    pipeline = Pipeline(settings, aws, StubProvider([ProviderOutcome.TRANSIENT_FAILURE]))
    delivery_id = pipeline.accept_login_code()
    pipeline.run_ladder(1)
    keys = home_keys(redis_client, delivery_id)

    # When the delivery has expired
    eventually(lambda: not redis_client.exists(keys.delivery(delivery_id)), 5, "the expiry")
    assert (
        api(
            api_event(
                "GET",
                f"{BASE}/deliveries/{{delivery_id}}",
                path_parameters={"delivery_id": delivery_id},
            )
        )["statusCode"]
        == 404
    )

    # Then its attempts are still answered, oldest first
    answer = attempts_of(api, delivery_id)
    assert answer["statusCode"] == 200, answer["body"]
    assert [(a["attempt_no"], a["status"]) for a in body_of(answer)["items"]] == [
        (1, "provider_rejected"),
        (2, "provider_accepted"),
    ]

    # And when the older attempt has expired too, the newer one still is
    redis_client.delete(keys.attempt(delivery_id, 1))
    items = body_of(attempts_of(api, delivery_id))["items"]
    assert [(a["attempt_no"], a["status"]) for a in items] == [(2, "provider_accepted")]

    # And once none is left, the id is unknown
    redis_client.delete(keys.attempt(delivery_id, 2))
    answer = attempts_of(api, delivery_id)
    assert answer["statusCode"] == 404
    assert body_of(answer)["error"]["code"] == "not_found"


def test_malformed_commands_and_dead_letters_are_listed_newest_first(
    api: Invoke, settings: Settings, redis_client: redis.Redis
) -> None:
    # Given three malformed commands (kept in partition 0) and three dead letters,
    # one in each partition there is (all in partition 0 with one)
    for number in range(3):
        entry = f"{T0 + number}-0"
        redis_client.hset(
            CONTROL.malformed_command(entry),
            mapping={
                "stream_entry_id": entry,
                "stream": "mail:delivery_commands",
                "failure_code": "invalid_json",
                "failure_message": "payload_json is not valid JSON",
                "raw_fields": json.dumps({"payload_json": "{"}),
                "recorded_at_ms": str(T0 + number),
            },
        )
        redis_client.zadd(CONTROL.index_malformed(), {entry: T0 + number})
        keys = RedisKeys.of_partition(number % settings.redis_partitions)
        redis_client.hset(
            keys.dead_letter(f"dl-{number}"),
            mapping={
                "delivery_id": f"dl-{number}",
                "attempts": "4",
                "last_outcome": "transient_failure",
                "last_summary": "451 later",
                "dead_lettered_at_ms": str(T0 + number),
            },
        )
        redis_client.zadd(keys.index_dead_letters(), {f"dl-{number}": T0 + number})

    # When the operator lists them and reads one malformed command
    malformed = body_of(api(api_event("GET", f"{BASE}/malformed-commands", query={"limit": "2"})))
    one = body_of(
        api(
            api_event(
                "GET",
                f"{BASE}/malformed-commands/{{stream_entry_id}}",
                path_parameters={"stream_entry_id": f"{T0}-0"},
            )
        )
    )
    dead = body_of(api(api_event("GET", f"{BASE}/dead-letters")))

    # Then both lists come newest first, merged over the partitions
    assert [m["stream_entry_id"] for m in malformed["items"]] == [f"{T0 + 2}-0", f"{T0 + 1}-0"]
    assert malformed["next_cursor"]
    assert one["raw_fields"] == {"payload_json": "{"}
    assert [d["delivery_id"] for d in dead["items"]] == ["dl-2", "dl-1", "dl-0"]
    assert dead["items"][0]["delivery"] is None  # expired or never stored here


# -- a producer's delivery ids, percent-encoded in the path ------------------------------

GO_ID = "email:1775240000000-0:user/42"


def as_api_gateway_sends(
    method: str, resource: str, delivery_id: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """The event of a request for ``delivery_id``, percent-encoded as a client must send it.

    API Gateway (REST) passes the path as it came, still encoded, and the path
    parameter decoded; Powertools routes on the path.
    """
    encoded = {"delivery_id": quote(delivery_id, safe="")}
    event = api_event(method, resource, path_parameters=encoded, headers=headers)
    event["pathParameters"] = {"delivery_id": delivery_id}
    return event


@pytest.mark.parametrize(
    "delivery_id", [GO_ID, "email:{p1}:}{", "a%41b", "semi;colon,comma", "~" * 256]
)
def test_a_delivery_with_any_visible_ascii_id_is_read_through_its_encoded_path(
    api: Invoke, store: RedisDeliveryStore, delivery_id: str
) -> None:
    # Given a settled delivery whose id a producer chose
    store_all(store, [replace(seeded(1), delivery_id=delivery_id)])

    # When an operator reads it, its attempts, and resends it, the id percent-encoded
    one = api(as_api_gateway_sends("GET", f"{BASE}/deliveries/{{delivery_id}}", delivery_id))
    attempts = api(
        as_api_gateway_sends("GET", f"{BASE}/deliveries/{{delivery_id}}/attempts", delivery_id)
    )
    resent = api(
        as_api_gateway_sends(
            "POST",
            f"{BASE}/deliveries/{{delivery_id}}/resend",
            delivery_id,
            headers={"Idempotency-Key": "resend-1"},
        )
    )

    # Then each finds that delivery
    assert one["statusCode"] == 200, one["body"]
    assert body_of(one)["delivery_id"] == delivery_id
    assert attempts["statusCode"] == 200, attempts["body"]
    assert resent["statusCode"] == 201, resent["body"]
    assert body_of(resent)["parent_delivery_id"] == delivery_id


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            "two%20words",
            "delivery_id: must be 1 to 256 visible ASCII characters "
            "(no spaces or control characters)",
        ),
        (
            "%C3%A9",
            "delivery_id: must be 1 to 256 visible ASCII characters "
            "(no spaces or control characters)",
        ),
        (
            "x" * 257,
            "delivery_id: must be 1 to 256 visible ASCII characters "
            "(no spaces or control characters)",
        ),
    ],
)
def test_an_id_that_no_delivery_can_have_is_a_400_said_in_words(
    api: Invoke, raw: str, message: str
) -> None:
    answer = api(
        api_event("GET", f"{BASE}/deliveries/{{delivery_id}}", path_parameters={"delivery_id": raw})
    )
    assert answer["statusCode"] == 400
    assert body_of(answer)["error"] == {"code": "invalid_request", "message": message}


def test_a_malformed_stream_entry_id_is_a_400_said_in_words(api: Invoke) -> None:
    answer = api(
        api_event(
            "GET",
            f"{BASE}/malformed-commands/{{stream_entry_id}}",
            path_parameters={"stream_entry_id": "yesterday"},
        )
    )
    assert answer["statusCode"] == 400
    assert body_of(answer)["error"]["message"] == (
        "stream_entry_id: must be a stream entry id such as 1730000000000-0"
    )


def test_a_bad_resend_idempotency_key_is_a_400_said_in_words(
    api: Invoke, store: RedisDeliveryStore
) -> None:
    store_all(store, [seeded(1)])
    answer = resend(api, "d-0001", key="two words")
    assert answer["statusCode"] == 400
    assert body_of(answer)["error"]["message"] == (
        "header Idempotency-Key must be 1 to 128 visible ASCII characters "
        "(no spaces or control characters)"
    )
