"""Load and soak: mixed auth and stream intake at a fixed rate, with random faults injected.

For ``SOAK_SECONDS`` (6 in ``make test``; ``make soak`` runs 300) a driver
sends ``SOAK_RATE`` new deliveries a second, alternately a login-code request
through the intake_api handler and a command ``XADD``-ed to the stream, and
retries what was refused as a caller would (same ``Idempotency-Key``, same
stream fields). Meanwhile the stream poller, the scheduler and two attempt
workers run on threads against a real redis-server (append-only file,
``appendfsync always``), moto's SQS and a real SMTP server, and a fault
injector does one of these every 0.6 to 1.5 s (first one of each kind, 0.3
to 1 s apart, so that even a short soak has all three):

- **client kill**: ``CLIENT KILL TYPE normal``, every service connection cut;
- **Redis restart**: SIGKILL, down 0.1 to 0.6 s, then started again on its
  append-only file;
- **SMTP burst**: the next 3 to 8 messages answered ``451 4.3.0``.

The mix: about 8 % of recipients are refused ``550`` (→ ``failed``), 6 %
answered ``451`` every time (→ ``dead_letter`` when the ladder is spent), 5 %
of template commands miss a variable (→ ``failed``, render), 5 % of stream
entries are not commands at all (→ malformed records, not deliveries).

Then the driver stops and the pipeline drains. A claim whose worker lost its
outcome to a fault waits for the claim deadline (SMTP timeout + 30 s); the
drain moves the scheduler's and workers' clock past it when nothing else
moves and no worker is executing, instead of waiting 35 s.

At the end, per delivery the driver was told about (and no other):

- it is in exactly one status index, and that status is terminal, so
  accepted = sent + failed + suppressed + dead_letter (``suppressed`` is 0: in
  smtp mode only the stub provider suppresses);
- refused recipients ended ``failed``, always-refused ones ``dead_letter``,
  unrenderable ones ``failed``; the rest ``sent`` (or ``dead_letter`` if bursts
  ate its whole ladder);
- the SMTP server accepted each ``sent`` one at least once; more than once
  only for an attempt whose worker could not record its outcome (the one
  duplicate DESIGN §4.3 allows), and never for a failed or dead-lettered one
  otherwise.

Retention here is short (deliveries and attempts 2 s, idempotency records
5 s), so once it has passed and the cleanup handler has run, Redis holds no
key of the service but the stream offset, its trim marks and the partition count
(and the stream, which the poller trims: ``MAIL_STREAM_RETENTION=0`` here),
and ``used_memory`` is back within ``MEMORY_TOLERANCE`` (64 KiB) of
the baseline taken before the first request, once the stopped functions'
idle connections are closed and Redis's per-command statistics reset (Redis 7
keeps a latency histogram per command name it has run). Cleanup runs only
then: run during the soak, it would remove the index members of expired
deliveries, the very evidence the per-delivery check reads.

The figures are printed (and written as JSON to ``SOAK_REPORT``, if set);
docs/reliability.md keeps those of the last long run.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from mailcore.aws.sqs_queue import SqsAttemptQueue
from mailcore.composition import (
    SCHEDULER_LEASE,
    build_attempt_store,
    build_provider,
    build_stream_poller,
    load_catalog,
    sender_of,
)
from mailcore.config import Settings
from mailcore.contracts.attempt_message import decode_claim
from mailcore.domain.clock import SystemClock
from mailcore.errors import StoreUnavailable
from mailcore.services.attempts import AttemptExecutor, AttemptReport
from mailcore.services.dispatch import Dispatcher
from mailcore.services.scheduler import Scheduler
from mailcore.store.client import build_redis_client
from mailcore.store.keys import RedisKeys
from mailcore.store.lease import RedisLease
from tests.support.api_events import body_of
from tests.support.commands import STREAM, command, publish, rendered_payload, template_payload
from tests.support.counting_smtp import CountingSmtpServer
from tests.support.faults import (
    REPO_ROOT,
    Invoke,
    SchedulerObserver,
    eventually,
    load_handler,
    login_code_event,
    message_id,
    producer_client,
    running,
    smtp_environment,
)
from tests.support.polling import RecordingObserver, last_entry_id
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "6"))
SOAK_RATE = float(os.environ.get("SOAK_RATE", "20"))  # new deliveries per second
SOAK_SEED = int(os.environ.get("SOAK_SEED", "0")) or random.SystemRandom().randrange(1, 1 << 30)
FAULT_EVERY_S = (0.6, 1.5)
FIRST_FAULTS_S = (0.3, 1.0)  # one of each kind first, so even a short soak has all three
DRAIN_LIMIT_S = 90 + SOAK_SECONDS / 2
# Bytes above the baseline allowed after cleanup: the service's Lua scripts, cached (~22 KB).
MEMORY_TOLERANCE = 64 * 1024
KEYS = RedisKeys()
TERMINAL = ("sent", "failed", "suppressed", "dead_letter")
LIVE = ("accepted", "queued", "rendered", "sending")
FAULTS = ("client kill", "Redis restart", "SMTP burst")


class ShiftableClock:
    """The scheduler's and the workers' clock: real time, plus what the drain skipped."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def now_ms(self) -> int:
        return SystemClock().now_ms() + self.offset_ms


class Activity:
    """Counts workers inside ``execute``; the drain moves the clock only when none is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executing = 0

    @contextmanager
    def executing(self) -> Iterator[None]:
        with self._lock:
            self._executing += 1
        try:
            yield
        finally:
            with self._lock:
                self._executing -= 1

    @contextmanager
    def idle(self) -> Iterator[bool]:
        """Holds workers off while the caller acts; yields whether none was executing."""
        with self._lock:
            yield self._executing == 0


@dataclass
class Ledger:
    """What callers and workers were told; the truth is then read from Redis and SMTP."""

    expected: dict[str, str] = field(default_factory=dict)  # delivery id -> kind
    auth_pending: dict[str, str] = field(default_factory=dict)  # refused key -> email
    stream_pending: list[tuple[dict[str, str], str]] = field(default_factory=list)
    answers: Counter[int] = field(default_factory=Counter)
    auth_accepted: int = 0
    stream_accepted: int = 0
    malformed_published: int = 0
    xadd_failures: int = 0
    # Attempts whose worker could not record the outcome: the only way a duplicate may arise.
    uncertain: Counter[str] = field(default_factory=Counter)
    worker_store_errors: int = 0
    completions_refused: int = 0
    attempts_reported: int = 0
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pending(self) -> int:
        with self.lock:
            return len(self.auth_pending) + len(self.stream_pending)


@dataclass
class Figures:
    seconds: float
    rate_target: float
    rate_achieved: float = 0.0
    seed: int = 0
    accepted: int = 0
    auth: int = 0
    stream: int = 0
    malformed: int = 0
    states: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    smtp_451_answers: int = 0
    intake_503: int = 0
    xadd_failures: int = 0
    worker_store_errors: int = 0
    completions_refused: int = 0
    smtp_messages: int = 0
    duplicates: int = 0
    clock_jumps: int = 0
    keys_baseline: int = 0
    keys_peak: int = 0
    keys_after: int = 0
    used_memory_baseline: int = 0
    used_memory_peak: int = 0
    used_memory_after: int = 0
    drain_s: float = 0.0
    retention_wait_s: float = 0.0
    cleanup_removed: int = 0


# -- the parts on threads ----------------------------------------------------------------


class Driver(threading.Thread):
    """The callers: one new delivery every 1/rate s, auth and stream in turn."""

    def __init__(self, api: Invoke, redis_addr: str, ledger: Ledger, rng: random.Random) -> None:
        super().__init__(name="soak-driver", daemon=True)
        self.api = api
        self.producer = producer_client(redis_addr)
        self.ledger = ledger
        self.rng = rng
        self.sent = 0
        self.elapsed = 0.0
        self.soaking = threading.Event()
        self.soaking.set()

    def run(self) -> None:
        started = time.monotonic()
        end = started + SOAK_SECONDS
        number = 0
        while (due := started + number / SOAK_RATE) < end:
            time.sleep(max(0.0, due - time.monotonic()))
            self.retry_pending()
            if number % 2 == 0:
                self.login_code(number)
            else:
                self.stream_command(number)
            number += 1
        self.sent = number
        self.elapsed = time.monotonic() - started
        self.soaking.clear()
        # Callers go on retrying what was refused until it is acknowledged.
        deadline = time.monotonic() + 60
        while self.ledger.pending() and time.monotonic() < deadline:
            self.retry_pending()
            time.sleep(0.05)

    def retry_pending(self) -> None:
        with self.ledger.lock:
            auth = list(self.ledger.auth_pending.items())
            stream = list(self.ledger.stream_pending)
            self.ledger.stream_pending.clear()
        for key, email in auth:
            self.send_login_code(key, email)
        for fields, kind in stream:
            self.publish(fields, kind)

    def recipient(self, number: int, template: bool = False) -> tuple[str, str]:
        draw = self.rng.random()
        if draw < 0.08:
            return f"reject-{number}@example.com", "reject"
        if draw < 0.14:
            return f"tempfail-{number}@example.com", "tempfail"
        if template and draw < 0.19:
            return f"user-{number}@example.com", "render_broken"
        return f"user-{number}@example.com", "normal"

    def login_code(self, number: int) -> None:
        email, _ = self.recipient(number)
        self.send_login_code(f"soak-auth-{number:06d}", email)

    def send_login_code(self, key: str, email: str) -> None:
        answer = self.api(login_code_event(key, email))
        status = answer["statusCode"]
        with self.ledger.lock:
            self.ledger.answers[status] += 1
            if status == 200:
                self.ledger.auth_pending.pop(key, None)
                delivery_id = body_of(answer)["delivery_id"]
                if delivery_id not in self.ledger.expected:
                    self.ledger.auth_accepted += 1
                self.ledger.expected[delivery_id] = kind_of(email)
            elif status == 503:
                self.ledger.auth_pending[key] = email
            else:
                self.ledger.problems.append(f"intake answered {status}: {answer.get('body')}")

    def stream_command(self, number: int) -> None:
        delivery_id = f"soak-{number:06d}"
        if self.rng.random() < 0.05:
            garbage = {"delivery_id": delivery_id, "source": "notification", "oops": "yes"}
            self.publish(garbage, "malformed")
            return
        template = number % 4 == 3
        email, kind = self.recipient(number, template=template)
        if not template:
            payload = rendered_payload(to=[email], cc=[], bcc=[])
        elif kind == "render_broken":
            payload = template_payload(to=[email], variables={"name": "Ada"}, secret_variables=[])
        else:
            payload = template_payload(to=[email])
        fields = command(
            number,
            payload=payload,
            mode="template" if template else "rendered",
            delivery_id=delivery_id,
            idempotency_key=f"soak:{number}",
        )
        self.publish(fields, kind)

    def publish(self, fields: dict[str, str], kind: str) -> None:
        try:
            publish(self.producer, fields)
        except redis.RedisError:
            with self.ledger.lock:
                self.ledger.xadd_failures += 1
                self.ledger.stream_pending.append((fields, kind))
            return
        with self.ledger.lock:
            if kind == "malformed":
                self.ledger.malformed_published += 1
            elif fields["delivery_id"] not in self.ledger.expected:
                self.ledger.stream_accepted += 1
                self.ledger.expected[fields["delivery_id"]] = kind


def kind_of(email: str) -> str:
    local = email.partition("@")[0]
    return local.partition("-")[0] if local.startswith(("reject", "tempfail")) else "normal"


class Worker(threading.Thread):
    """An attempt worker fed as the SQS event source mapping feeds it."""

    def __init__(
        self,
        name: str,
        sqs: Any,
        queue_url: str,
        executor: AttemptExecutor,
        ledger: Ledger,
        activity: Activity,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.sqs = sqs
        self.queue_url = queue_url
        self.executor = executor
        self.ledger = ledger
        self.activity = activity
        self.stopping = threading.Event()
        self.crashed: list[BaseException] = []

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.batch()
        except BaseException as error:
            self.crashed.append(error)

    def batch(self) -> None:
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        done: list[dict[str, str]] = []
        for message in messages:
            claim = decode_claim(message["Body"])
            with self.activity.executing():
                try:
                    report = self.executor.execute(claim)
                except StoreUnavailable:
                    # A batch item failure: SQS hands it out again after the visibility timeout.
                    with self.ledger.lock:
                        self.ledger.worker_store_errors += 1
                        self.ledger.uncertain[claim.delivery_id] += 1
                    continue
            self.note(report)
            done.append({"Id": str(len(done)), "ReceiptHandle": message["ReceiptHandle"]})
        self.executor.close()
        if done:
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=done)

    def note(self, report: AttemptReport) -> None:
        with self.ledger.lock:
            self.ledger.attempts_reported += 1
            if report.completion_refused:
                self.ledger.completions_refused += 1
                self.ledger.uncertain[report.delivery_id] += 1


class FaultInjector(threading.Thread):
    def __init__(
        self, redis_server: RedisServer, smtp: CountingSmtpServer, rng: random.Random
    ) -> None:
        super().__init__(name="soak-faults", daemon=True)
        self.redis_server = redis_server
        self.smtp = smtp
        self.rng = rng
        self.counts: Counter[str] = Counter()
        self.burst_answers = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        first = self.rng.sample(FAULTS, len(FAULTS))  # each kind once, early
        while not self.stopping.wait(
            self.rng.uniform(*(FIRST_FAULTS_S if first else FAULT_EVERY_S))
        ):
            kind = first.pop() if first else self.rng.choice(FAULTS)
            if kind == "client kill":
                self.redis_server.client().client_kill_filter(_type="normal", skipme=True)
            elif kind == "Redis restart":
                self.redis_server.kill()
                self.stopping.wait(self.rng.uniform(0.1, 0.6))  # down for a while, as a failover
                self.redis_server.start()
            else:
                answers = self.rng.randint(3, 8)
                self.smtp.fail_next(answers)
                self.burst_answers += answers
            self.counts[kind] += 1


class MemorySampler(threading.Thread):
    def __init__(self, redis_server: RedisServer) -> None:
        super().__init__(name="soak-memory", daemon=True)
        self.redis_server = redis_server
        self.peak_memory = 0
        self.peak_keys = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.25):
            try:
                client = self.redis_server.client()
                self.peak_memory = max(self.peak_memory, used_memory(client))
                self.peak_keys = max(self.peak_keys, client.dbsize())
                client.close()
            except redis.RedisError:
                pass  # restarting


def used_memory(client: redis.Redis) -> int:
    """``used_memory`` less client connection buffers (they follow how many connections
    the functions keep open, not what is stored)."""
    memory = client.info("memory")
    return int(memory["used_memory"]) - int(memory["mem_clients_normal"])


# -- the soak ------------------------------------------------------------------------------


def build_scheduler_on(settings: Settings, clock: ShiftableClock, sqs: Any) -> Scheduler:
    """``composition.build_scheduler``, on the soak's clock."""
    assert settings.attempt_queue_url
    client = build_redis_client(settings)
    store = build_attempt_store(settings, client)
    interval = settings.scheduler_poll_interval
    return Scheduler(
        store,
        Dispatcher(
            store, SqsAttemptQueue(sqs, settings.attempt_queue_url), clock, settings.claim_timeout
        ),
        RedisLease(client, KEYS.lease(SCHEDULER_LEASE), 4 * interval + timedelta(seconds=10)),
        SchedulerObserver(),
        clock,
        poll_interval_ms=int(interval.total_seconds() * 1000),
        claims_per_poll=settings.attempt_worker_concurrency * 10,
    )


def progress(client: redis.Redis) -> tuple[int, ...]:
    """What moves while the pipeline works: live and settled counts, schedule, claims, offset."""
    pipe = client.pipeline(transaction=False)
    for status in (*LIVE, *TERMINAL):
        pipe.zcard(KEYS.index_status(status))
    pipe.zcard(KEYS.attempt_schedule())
    pipe.zcard(KEYS.claims())
    pipe.zcard(KEYS.index_created_at())
    return tuple(int(value) for value in pipe.execute())


def drained(client: redis.Redis, driver: Driver) -> bool:
    counts = progress(client)
    live, schedule, claims = sum(counts[: len(LIVE)]), counts[-3], counts[-2]
    return (
        not driver.is_alive()
        and live == schedule == claims == 0
        and client.get(KEYS.stream_offset(STREAM)) == last_entry_id(client)
    )


def next_claim_deadline(client: redis.Redis) -> int | None:
    first = cast(list[tuple[str, float]], client.zrange(KEYS.claims(), 0, 0, withscores=True))
    return int(first[0][1]) if first else None


def status_memberships(client: redis.Redis) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for status in (*LIVE, *TERMINAL):
        for member in cast(list[str], client.zrange(KEYS.index_status(status), 0, -1)):
            found.setdefault(member, []).append(status)
    return found


def test_a_soak_of_mixed_intake_with_random_faults_settles_every_delivery_and_frees_memory(
    monkeypatch: pytest.MonkeyPatch,
    durable_redis: RedisServer,
    counting_smtp: CountingSmtpServer,
    aws: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the whole pipeline on a durable Redis, with short retention
    queue_url: str = aws.create_queue(
        QueueName="mail-soak-attempts", Attributes={"VisibilityTimeout": "2"}
    )["QueueUrl"]
    environment = smtp_environment(
        durable_redis.addr,
        counting_smtp.addr,
        MAIL_ATTEMPT_QUEUE_URL=queue_url,
        MAIL_RETRY_SCHEDULE="200ms,500ms,1s",
        MAIL_SCHEDULER_POLL_INTERVAL="50ms",
        MAIL_STREAM_BLOCK_TIMEOUT="200ms",
        MAIL_SMTP_TIMEOUT="5s",
        MAIL_REDIS_OPERATION_TIMEOUT="1s",
        MAIL_DELIVERY_TTL="2s",
        MAIL_ATTEMPT_TTL="2s",
        MAIL_MALFORMED_COMMAND_TTL="2s",
        MAIL_IDEMPOTENCY_TTL="5s",
        MAIL_STREAM_RETENTION="0",
    )
    settings = Settings.from_environ(environment)
    client = durable_redis.client()
    figures = Figures(SOAK_SECONDS, SOAK_RATE, seed=SOAK_SEED)
    figures.keys_baseline = client.dbsize()
    used_memory(client)  # the first INFO allocates a little, once
    figures.used_memory_baseline = used_memory(client)
    rng = random.Random(SOAK_SEED)
    clock = ShiftableClock()
    ledger = Ledger()
    activity = Activity()
    api = load_handler(monkeypatch, "intake_api", environment)
    poller = build_stream_poller(settings, RecordingObserver(), sqs_client=aws)
    scheduler = build_scheduler_on(settings, clock, aws)
    workers = [
        Worker(
            f"soak-worker-{n}",
            aws,
            queue_url,
            AttemptExecutor(
                build_attempt_store(settings),
                load_catalog(settings),
                build_provider(settings),
                sender_of(settings),
                clock,
            ),
            ledger,
            activity,
        )
        for n in (1, 2)
    ]
    driver = Driver(api, durable_redis.addr, ledger, rng)
    faults = FaultInjector(durable_redis, counting_smtp, rng)
    sampler = MemorySampler(durable_redis)

    with running("soak-poller", poller.run), running("soak-scheduler", scheduler.run):
        for worker in workers:
            worker.start()
        sampler.start()
        try:
            # When the driver sends at its rate while faults are injected
            driver.start()
            faults.start()
            eventually(lambda: not driver.soaking.is_set(), SOAK_SECONDS + 60, "the soak's end")
            faults.stopping.set()
            faults.join(timeout=30)

            # And the pipeline drains, the clock skipping claim deadlines nobody waits on
            drain_started = time.monotonic()
            client = durable_redis.client()
            last, still_since = progress(client), time.monotonic()
            while not drained(client, driver):
                assert time.monotonic() - drain_started < DRAIN_LIMIT_S, progress(client)
                time.sleep(0.1)
                now = progress(client)
                if now != last:
                    last, still_since = now, time.monotonic()
                    continue
                deadline = next_claim_deadline(client)
                if deadline is None or time.monotonic() - still_since < 2:
                    continue
                with activity.idle() as idle:
                    if idle and deadline >= clock.now_ms():
                        clock.offset_ms += deadline - clock.now_ms() + 1_000
                        figures.clock_jumps += 1
                        still_since = time.monotonic()
            figures.drain_s = time.monotonic() - drain_started
        finally:
            driver.join(timeout=90)
            faults.stopping.set()
            for worker in workers:
                worker.stopping.set()
            for worker in workers:
                worker.join(timeout=30)
            sampler.stopping.set()
            sampler.join(timeout=10)
    for worker in workers:
        assert worker.crashed == [], worker.crashed

    # Then every caller heard 200 or 503, and everything refused was accepted on retry
    assert ledger.problems == []
    assert set(ledger.answers) <= {200, 503}
    assert ledger.pending() == 0
    expected = ledger.expected
    # And Redis has exactly the deliveries the callers were told about, no other
    created = set(cast(list[str], client.zrange(KEYS.index_created_at(), 0, -1)))
    assert created == set(expected)
    # And each is in exactly one status, a terminal one
    memberships = status_memberships(client)
    final = {delivery_id: memberships.get(delivery_id, []) for delivery_id in expected}
    not_settled = {d: s for d, s in final.items() if len(s) != 1 or s[0] not in TERMINAL}
    assert not_settled == {}
    states = Counter(statuses[0] for statuses in final.values())
    assert sum(states[state] for state in TERMINAL) == len(expected)
    # And each ended as its recipient and payload say
    by_kind: dict[str, Counter[str]] = {}
    for delivery_id, kind in expected.items():
        by_kind.setdefault(kind, Counter())[final[delivery_id][0]] += 1
    assert set(by_kind.get("reject", Counter())) <= {"failed"}
    assert set(by_kind.get("tempfail", Counter())) <= {"dead_letter"}
    assert set(by_kind.get("render_broken", Counter())) <= {"failed"}
    assert set(by_kind.get("normal", Counter())) <= {"sent", "dead_letter"}
    # And the SMTP server accepted each sent one, and a second time only where a
    # worker could not record the outcome of an attempt (DESIGN §4.3's duplicate)
    received = counting_smtp.snapshot()
    assert set(received) <= {message_id(d) for d in expected}
    duplicates = 0
    for delivery_id, statuses in final.items():
        count = received[message_id(delivery_id)]
        sent = statuses[0] == "sent"
        assert count >= (1 if sent else 0), delivery_id
        assert count <= (1 if sent else 0) + ledger.uncertain[delivery_id], (delivery_id, count)
        duplicates += max(0, count - 1)
    # And every bad stream entry became a malformed record, none a delivery
    malformed = client.zcard(KEYS.index_malformed())
    assert (
        ledger.malformed_published
        <= malformed
        <= ledger.malformed_published + (ledger.xadd_failures)
    )

    # When retention has passed and the cleanup handler has run
    retention_started = time.monotonic()
    eventually(
        lambda: all(client.pttl(key) < 0 for key in client.scan_iter(count=1000)),
        60,
        "every record with a retention to expire",
        every=0.25,
    )
    figures.retention_wait_s = time.monotonic() - retention_started
    cleanup = load_handler(monkeypatch, "cleanup", environment, timeout_ms=300_000)
    event = json.loads((REPO_ROOT / "events" / "cleanup_scheduled.json").read_text())
    while (removed := int(cleanup(event)["removed"])) > 0:
        figures.cleanup_removed += removed
    # And the stream's last storage node goes too (the poller, keeping no handled
    # entry, trimmed the rest: `MINID ~` deletes whole nodes only)
    client.xtrim(STREAM, maxlen=0, approximate=False)

    # And the stopped functions' idle connections are gone, as Lambda recycles them
    client.client_kill_filter(_type="normal", skipme=True)
    # And Redis's own per-command statistics are reset (Redis 7 keeps a latency
    # histogram for every command name it has run: its bookkeeping, not our data)
    client.config_resetstat()

    # Then no key is left but the stream, its offset and trim marks, and memory is back
    # at the baseline
    left = set(cast(list[str], client.keys("*")))
    stream_keys = {STREAM, KEYS.stream_offset(STREAM), KEYS.stream_trim_marks(STREAM)}
    assert left <= {*stream_keys, KEYS.partition_count()}, sorted(left)[:20]
    figures.keys_after = client.dbsize()
    figures.used_memory_after = used_memory(client)
    assert figures.used_memory_after - figures.used_memory_baseline <= MEMORY_TOLERANCE

    figures.rate_achieved = driver.sent / driver.elapsed
    figures.accepted = len(expected)
    figures.auth, figures.stream = ledger.auth_accepted, ledger.stream_accepted
    figures.malformed = malformed
    figures.states = {state: states[state] for state in TERMINAL}
    figures.faults = {kind: faults.counts[kind] for kind in FAULTS}
    figures.smtp_451_answers = faults.burst_answers
    figures.intake_503 = ledger.answers[503]
    figures.xadd_failures = ledger.xadd_failures
    figures.worker_store_errors = ledger.worker_store_errors
    figures.completions_refused = ledger.completions_refused
    figures.smtp_messages = sum(received.values())
    figures.duplicates = duplicates
    figures.keys_peak = sampler.peak_keys
    figures.used_memory_peak = sampler.peak_memory
    with capsys.disabled():
        print("\n" + report(figures))
    if target := os.environ.get("SOAK_REPORT"):
        Path(target).write_text(json.dumps(asdict(figures), indent=2) + "\n")
    assert all(faults.counts[kind] >= 1 for kind in FAULTS), faults.counts


def report(f: Figures) -> str:
    kib = 1024
    states = ", ".join(f"{state} {count}" for state, count in f.states.items())
    faults = ", ".join(f"{kind} {count}" for kind, count in f.faults.items())
    return "\n".join(
        [
            f"[soak] {f.seconds:g} s at {f.rate_target:g}/s (achieved {f.rate_achieved:.1f}/s, "
            f"seed {f.seed}): accepted {f.accepted} (auth {f.auth}, stream {f.stream}), "
            f"malformed entries {f.malformed}",
            f"[soak] settled: {states}; sum {sum(f.states.values())} = accepted {f.accepted}",
            f"[soak] faults: {faults} ({f.smtp_451_answers} answers 451); intake 503s "
            f"{f.intake_503}, XADD failures {f.xadd_failures}, worker store errors "
            f"{f.worker_store_errors}, completions refused {f.completions_refused}, "
            f"clock jumps {f.clock_jumps}",
            f"[soak] SMTP: {f.smtp_messages} messages accepted, {f.duplicates} duplicates "
            "(each after an attempt whose outcome could not be recorded)",
            f"[soak] Redis keys {f.keys_baseline} -> peak {f.keys_peak} -> {f.keys_after}; "
            f"used_memory {f.used_memory_baseline / kib:.0f} KiB -> peak "
            f"{f.used_memory_peak / kib:.0f} KiB -> {f.used_memory_after / kib:.0f} KiB "
            f"after cleanup ({f.cleanup_removed} index members removed)",
            f"[soak] drain {f.drain_s:.1f} s, retention wait {f.retention_wait_s:.1f} s",
        ]
    )
