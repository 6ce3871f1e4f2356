"""Benchmark: scale figures of the Redis store.

    python bench/scale.py [--scheduled N] [--claims R] [--login-codes M]
                          [--redis host:port] [--json PATH]

(a) Claiming: fills ``mail:{p0}:attempt_schedule`` with N scheduled
    deliveries (default 1,000,000; due times spread evenly over the hour before
    and the hour after now, so about half are due), each with a minimal queued
    delivery hash (status, attempt_count, created_at_ms), pipelined. Then times
    R rounds (default 200) of what the scheduler does per poll: read 100 due
    ids (``RedisAttemptStore.due_delivery_ids``) and claim them
    (``RedisAttemptStore.claim``). Each round claims fresh due deliveries.
    Prints p50/p99 ms per round.

(b) Memory: on an empty Redis, accepts M login codes (default 20,000) through
    ``AuthIntake`` in smtp mode without a dispatcher, the real acceptance
    script (delivery hash, first attempt, schedule entry, indexes, idempotency
    record), and prints Redis ``used_memory`` after minus before, divided by M.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._support import (
    add_common_arguments,
    address_of,
    percentile,
    redis_server,
    write_json,
)
from mailcore.composition import build_attempt_store, build_auth_intake
from mailcore.config import Settings
from mailcore.contracts.auth import LoginCodeDeliveryRequest
from mailcore.store.keys import RedisKeys

KEYS = RedisKeys()
CLAIM_BATCH = 100
HOUR_MS = 3_600_000


def settings_for(client: redis.Redis) -> Settings:
    return Settings.from_environ(
        {
            "MAIL_REDIS_ADDR": address_of(client),
            "MAIL_SMTP_MODE": "smtp",
            "MAIL_SMTP_ADDR": "127.0.0.1:2525",
            "MAIL_SMTP_FROM_EMAIL": "noreply@example.com",
        }
    )


def fill_schedule(client: redis.Redis, count: int, now_ms: int) -> float:
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    members: dict[str, int] = {}
    step = 2 * HOUR_MS / count
    for number in range(count):
        delivery_id = f"dlv-{number:09d}"
        due = now_ms - HOUR_MS + int(number * step)
        members[delivery_id] = due
        mapping: Any = {"status": "queued", "attempt_count": 1, "created_at_ms": due}
        pipe.hset(KEYS.delivery(delivery_id), mapping=mapping)
        if len(members) == 1000:
            pipe.zadd(KEYS.attempt_schedule(), members)
            members = {}
            pipe.execute()
    if members:
        pipe.zadd(KEYS.attempt_schedule(), members)
    pipe.execute()
    return time.perf_counter() - started


def measure_claims(client: redis.Redis, scheduled: int, rounds: int) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    seconds = fill_schedule(client, scheduled, now_ms)
    print(f"scheduled {scheduled:,} deliveries in {seconds:.1f}s")
    store = build_attempt_store(settings_for(client), client)
    store.claim(store.due_delivery_ids(now_ms, CLAIM_BATCH), now_ms, now_ms + 45_000)  # warm-up
    timings: list[float] = []
    claimed = 0
    for _ in range(rounds):
        now = int(time.time() * 1000)
        started = time.perf_counter()
        due = store.due_delivery_ids(now, CLAIM_BATCH)
        claims = store.claim(due, now, now + 45_000)
        timings.append((time.perf_counter() - started) * 1000)
        claimed += len(claims)
    p50, p99 = statistics.median(timings), percentile(timings, 0.99)
    print(
        f"claim {CLAIM_BATCH} of {scheduled:,} scheduled: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
        f"({rounds} rounds, {claimed:,} claimed)"
    )
    return {
        "scheduled": scheduled,
        "rounds": rounds,
        "claimed": claimed,
        "p50_ms": round(p50, 3),
        "p99_ms": round(p99, 3),
    }


def measure_memory(client: redis.Redis, count: int) -> dict[str, Any]:
    client.flushall()
    intake = build_auth_intake(settings_for(client))
    requests = [
        LoginCodeDeliveryRequest(
            email=f"user{number}@example.com", code=f"{number % 1_000_000:06d}", locale="de-AT"
        )
        for number in range(count + 1)
    ]
    intake.accept_login_code(requests[0], "bench-warmup")  # loads the script: not counted
    before = int(client.info("memory")["used_memory"])
    for number in range(1, count + 1):
        intake.accept_login_code(requests[number], f"bench-login-{number:07d}")
    after = int(client.info("memory")["used_memory"])
    per = (after - before) / count
    print(f"Redis memory per login-code delivery: {per:,.0f} bytes ({count:,} accepted)")
    return {"deliveries": count, "bytes_per_delivery": round(per)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduled", type=int, default=1_000_000)
    parser.add_argument("--claims", type=int, default=200, help="rounds of claim 100")
    parser.add_argument("--login-codes", type=int, default=20_000)
    add_common_arguments(parser)
    arguments = parser.parse_args()

    with redis_server(arguments.redis) as client:
        client.flushall()
        claims = measure_claims(client, arguments.scheduled, arguments.claims)
        memory = measure_memory(client, arguments.login_codes)
    write_json(arguments.json, {"claim": claims, "memory": memory})


if __name__ == "__main__":
    main()
