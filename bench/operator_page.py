"""Benchmark: one filtered operator page with N stored deliveries (default 1,000,000).

    python bench/operator_page.py [--deliveries N] [--pages P] [--redis host:port] [--json PATH]

Starts its own redis-server on a free port (unless --redis is given), stores
N deliveries with the same records and index entries acceptance writes
(pipelined directly, which is much faster than N script calls and leaves the
same keys), then times P pages of 50 for several filters through the
operator's query code (``RedisQueries``), and prints p50/p99 per filter and
Redis memory per delivery.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._support import add_common_arguments, percentile, redis_server, write_json
from mailcore.domain.model import Delivery, Envelope, PayloadMode, Source
from mailcore.domain.states import DeliveryStatus
from mailcore.ports import DeliveryFilters
from mailcore.store.codec import delivery_to_fields
from mailcore.store.keys import RedisKeys
from mailcore.store.queries import RedisQueries

KEYS = RedisKeys()
STATUSES = (
    [DeliveryStatus.SENT] * 90 + [DeliveryStatus.FAILED] * 6 + [DeliveryStatus.DEAD_LETTER] * 4
)
TEMPLATES = ["auth.login_code", "order.shipped", "account.password_reset", "invoice.ready"]
T0 = 1_795_338_900_000


def delivery(number: int, rng: random.Random) -> Delivery:
    template = rng.choice(TEMPLATES)
    source = Source.AUTHSESSION if template == "auth.login_code" else Source.NOTIFICATION
    created = T0 + number * 7  # about 140 deliveries a second, over the whole range
    return Delivery(
        delivery_id=f"dlv-{number:09d}",
        source=source,
        status=rng.choice(STATUSES),
        payload_mode=PayloadMode.TEMPLATE,
        envelope=Envelope(to=(f"user{rng.randrange(200_000)}@example.com",)),
        idempotency_key=f"key-{number}",
        created_at_ms=created,
        updated_at_ms=created,
        template_id=template,
        locale="en",
        variables={"code": "000000"} if source is Source.AUTHSESSION else {"order": str(number)},
        secret_variables=frozenset({"code"}) if source is Source.AUTHSESSION else frozenset(),
        attempt_count=1,
    )


def load(client: redis.Redis, count: int) -> float:
    rng = random.Random(7)
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for number in range(count):
        d = delivery(number, rng)
        fields: dict[Any, Any] = delivery_to_fields(d)
        pipe.hset(KEYS.delivery(d.delivery_id), mapping=fields)
        for index in (
            KEYS.index_created_at(),
            KEYS.index_status(d.status),
            KEYS.index_source(d.source),
            KEYS.index_recipient(d.envelope.to[0]),
            KEYS.index_template(d.template_id or ""),
            KEYS.index_idempotency(d.source, d.idempotency_key),
        ):
            pipe.zadd(index, {d.delivery_id: d.created_at_ms})
        if number % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--pages", type=int, default=200)
    add_common_arguments(parser)
    arguments = parser.parse_args()

    with redis_server(arguments.redis) as client:
        client.flushall()
        baseline = int(client.info("memory")["used_memory"])
        seconds = load(client, arguments.deliveries)
        used = int(client.info("memory")["used_memory"]) - baseline
        print(
            f"stored {arguments.deliveries:,} deliveries in {seconds:.1f}s "
            f"({used / arguments.deliveries:,.0f} bytes of Redis memory each, with indexes)"
        )
        figures: dict[str, Any] = {
            "deliveries": arguments.deliveries,
            "pages": arguments.pages,
            "load_seconds": round(seconds, 1),
            "memory_bytes_per_delivery": round(used / arguments.deliveries),
            "filters": {},
        }
        queries = RedisQueries(client)
        rng = random.Random(11)
        cases: dict[str, Callable[[], DeliveryFilters]] = {
            "status=sent": lambda: DeliveryFilters(status="sent"),
            "status=dead_letter": lambda: DeliveryFilters(status="dead_letter"),
            "template_id + status=failed": lambda: DeliveryFilters(
                template_id="order.shipped", status="failed"
            ),
            "recipient": lambda: DeliveryFilters(
                recipient=f"user{rng.randrange(200_000)}@example.com"
            ),
            "source + status, page 2": lambda: DeliveryFilters(
                source="notification", status="sent"
            ),
        }
        print(f"{'filter':32} {'p50 ms':>8} {'p99 ms':>8} {'items':>6}")
        for name, make in cases.items():
            timings: list[float] = []
            items = 0
            for _ in range(arguments.pages):
                filters = make()
                cursor = None
                if name.endswith("page 2"):
                    cursor = queries.deliveries(filters, 50, None).next_cursor
                started = time.perf_counter()
                page = queries.deliveries(filters, 50, cursor)
                timings.append((time.perf_counter() - started) * 1000)
                items = max(items, len(page.items))
            p50, p99 = statistics.median(timings), percentile(timings, 0.99)
            print(f"{name:32} {p50:8.2f} {p99:8.2f} {items:6d}")
            figures["filters"][name] = {
                "p50_ms": round(p50, 3),
                "p99_ms": round(p99, 3),
                "items": items,
            }
        figures["worst_p99_ms"] = max(f["p99_ms"] for f in figures["filters"].values())
        write_json(arguments.json, figures)


if __name__ == "__main__":
    main()
