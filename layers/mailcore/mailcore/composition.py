"""Wiring: build the services from settings with their production adapters.

The Lambda handlers call these once per cold start, at module scope, so warm
invocations reuse the Redis connection pools, the SQS client and the parsed
template catalog. Tests pass their own clients where they need to.

Each builder imports what it wires inside its body: a handler's cold start
then loads only the code that handler runs (the scheduler never imports
Jinja2, the cleanup never imports botocore), which keeps every init well
under its budget (`make coldstart`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from mailcore.config import Settings, SmtpMode
from mailcore.domain.clock import Clock, SystemClock
from mailcore.store.client import build_redis_client

if TYPE_CHECKING:
    import redis

    from mailcore.contracts.stream import CommandLimits
    from mailcore.mail.mime import Sender
    from mailcore.ports import ClaimedAttemptSteps, DeliveryQueries, MailProvider
    from mailcore.rendering.catalog import TemplateCatalog
    from mailcore.services.attempts import AttemptExecutor
    from mailcore.services.auth_intake import AuthIntake
    from mailcore.services.cleanup import IndexCleanup
    from mailcore.services.dispatch import Dispatcher
    from mailcore.services.operator import OperatorService
    from mailcore.services.scheduler import Scheduler, SchedulerObserver
    from mailcore.services.stream_intake import PollObserver, StreamPoller
    from mailcore.store.attempt_store import RedisAttemptStore
    from mailcore.store.layout import PartitionLayout
    from mailcore.store.partitions import PartitionedDeliveryStore
    from mailcore.store.redis_store import RedisDeliveryStore
    from mailcore.tracing import LambdaTracer, XRayProvider

STREAM_POLLER_LEASE = "stream_poller"
SCHEDULER_LEASE = "scheduler"
# Without an SMTP sender configured (stub mode), messages still need a From
# and a Message-ID domain; this one can never be mistaken for a real mailbox.
STUB_SENDER = "noreply@mail-service.invalid"
CLAIMS_PER_WORKER = 10  # one SQS batch per worker per poll
MAX_STEP_GROWTH = 8  # a stream step over partitions holds at most 8 x 20 entries


def build_delivery_store(
    settings: Settings, clock: Clock | None = None, client: redis.Redis | None = None
) -> RedisDeliveryStore | PartitionedDeliveryStore:
    """Partition 0's store, or the partitioned store over all of them."""
    from mailcore.store.keys import RedisKeys
    from mailcore.store.layout import PartitionLayout
    from mailcore.store.redis_store import RedisDeliveryStore

    client = client or build_redis_client(settings)
    layout = PartitionLayout(client, settings.redis_partitions)
    stores = [
        RedisDeliveryStore(
            client,
            clock=clock or SystemClock(),
            idempotency_ttl=settings.idempotency_ttl,
            delivery_ttl=settings.delivery_ttl,
            malformed_command_ttl=settings.malformed_command_ttl,
            keys=RedisKeys.of_partition(partition),
            layout=layout,
        )
        for partition in range(settings.redis_partitions)
    ]
    if len(stores) == 1:
        return stores[0]
    from mailcore.store.partitions import PartitionedDeliveryStore

    return PartitionedDeliveryStore(client, stores)


def build_attempt_store(
    settings: Settings,
    client: redis.Redis | None = None,
    partition: int = 0,
    layout: PartitionLayout | None = None,
) -> RedisAttemptStore:
    """The attempt store of one partition."""
    from mailcore.store.attempt_store import RedisAttemptStore

    return RedisAttemptStore(
        client or build_redis_client(settings),
        delivery_ttl=settings.delivery_ttl,
        attempt_ttl=settings.attempt_ttl,
        retry_schedule=settings.retry_schedule,
        claim_timeout=settings.claim_timeout,
        partition=partition,
        layout=layout,
    )


def build_attempt_stores(
    settings: Settings, client: redis.Redis | None = None
) -> list[RedisAttemptStore]:
    """One attempt store per partition, sharing one client."""
    from mailcore.store.layout import PartitionLayout

    client = client or build_redis_client(settings)
    layout = PartitionLayout(client, settings.redis_partitions)
    return [
        build_attempt_store(settings, client, n, layout) for n in range(settings.redis_partitions)
    ]


def build_claimed_attempt_steps(
    settings: Settings, client: redis.Redis | None = None
) -> ClaimedAttemptSteps:
    """What a worker needs: partition 0's attempt store, or a router over the partitions."""
    stores = build_attempt_stores(settings, client)
    if len(stores) == 1:
        return stores[0]
    from mailcore.store.partitions import ClaimRouter

    return ClaimRouter(stores)


def build_dispatcher(
    settings: Settings,
    clock: Clock,
    client: redis.Redis | None = None,
    sqs_client: Any = None,
    stores: list[RedisAttemptStore] | None = None,
) -> Dispatcher | None:
    """None when no attempt queue is configured: then only the scheduler dispatches."""
    from mailcore.aws.sqs_queue import SqsAttemptQueue
    from mailcore.services.dispatch import Dispatcher

    if not settings.attempt_queue_url:
        return None
    queue = SqsAttemptQueue(sqs_client or sqs_client_from_environment(), settings.attempt_queue_url)
    return Dispatcher(
        stores or build_attempt_stores(settings, client),
        queue,
        clock,
        settings.claim_timeout,
        max_claims_in_flight=settings.claims_in_flight_bound,
    )


def build_auth_intake(settings: Settings, sqs_client: Any = None) -> AuthIntake:
    from mailcore.domain.ids import UlidGenerator
    from mailcore.services.auth_intake import AuthIntake

    clock = SystemClock()
    client = build_redis_client(settings)
    return AuthIntake(
        build_delivery_store(settings, clock, client),
        clock,
        UlidGenerator(clock),
        settings.smtp_mode,
        dispatcher=build_dispatcher(settings, clock, client, sqs_client),
    )


def build_queries(settings: Settings, client: redis.Redis) -> DeliveryQueries:
    from mailcore.store.keys import RedisKeys
    from mailcore.store.queries import RedisQueries

    partitions = [
        RedisQueries(client, RedisKeys.of_partition(n)) for n in range(settings.redis_partitions)
    ]
    if len(partitions) == 1:
        return partitions[0]
    from mailcore.store.partitions import PartitionedQueries

    return PartitionedQueries(client, partitions)


def build_operator_service(settings: Settings, sqs_client: Any = None) -> OperatorService:
    from mailcore.domain.ids import UlidGenerator
    from mailcore.services.operator import OperatorService

    clock = SystemClock()
    client = build_redis_client(settings)
    return OperatorService(
        build_queries(settings, client),
        build_delivery_store(settings, clock, client),
        clock,
        UlidGenerator(clock),
        dispatcher=build_dispatcher(settings, clock, client, sqs_client),
    )


def command_limits(settings: Settings) -> CommandLimits:
    from mailcore.contracts.stream import CommandLimits

    return CommandLimits(
        max_recipients=settings.max_recipients,
        max_subject_chars=settings.max_subject_chars,
        max_attachment_bytes=settings.max_attachment_bytes,
    )


def build_stream_poller(
    settings: Settings,
    observer: PollObserver,
    sqs_client: Any = None,
    tracing: XRayProvider | None = None,
) -> StreamPoller:
    from mailcore.services.stream_intake import (
        MAX_CALL_ENTRIES,
        StreamIntake,
        StreamPoller,
        StreamTrimmer,
    )
    from mailcore.services.stream_tracing import TracedStreamIntake
    from mailcore.store.command_stream import RedisCommandStream
    from mailcore.store.keys import RedisKeys
    from mailcore.store.lease import RedisLease

    clock = SystemClock()
    client = build_redis_client(settings)
    store = build_delivery_store(settings, clock, client)
    dispatcher = build_dispatcher(settings, clock, client, sqs_client)
    limits = command_limits(settings)
    stream_name = settings.redis_command_stream
    # Over several partitions a step is one script per partition and one more
    # for the offset: larger steps keep each partition's script about the size
    # one partition's would be.
    step = MAX_CALL_ENTRIES * min(settings.redis_partitions, MAX_STEP_GROWTH)
    intake = (
        TracedStreamIntake(
            store,
            clock,
            stream_name,
            limits,
            dispatcher=dispatcher,
            tracing=tracing,
            max_call_entries=step,
        )
        if tracing is not None
        else StreamIntake(
            store, clock, stream_name, limits, dispatcher=dispatcher, max_call_entries=step
        )
    )
    block = settings.stream_block_timeout
    # Blocking reads get their own client: raw bytes, and a read timeout past the block.
    stream = RedisCommandStream(
        build_redis_client(settings, decode_responses=False, extra_read_time=block),
        settings.redis_command_stream,
    )
    # Renewed every loop (at most one block apart), so three blocks and some
    # slack are enough; a poller that dies holds the next one up that long.
    lease = RedisLease(
        client, RedisKeys().lease(STREAM_POLLER_LEASE), length=3 * block + timedelta(seconds=10)
    )
    return StreamPoller(
        intake,
        stream,
        lease,
        observer,
        batch_size=settings.stream_batch_size,
        block_ms=int(block.total_seconds() * 1000),
        trimmer=StreamTrimmer(store, stream, stream_name, settings.stream_retention),
    )


def build_scheduler(
    settings: Settings, observer: SchedulerObserver, sqs_client: Any = None
) -> Scheduler:
    from mailcore.services.scheduler import Scheduler
    from mailcore.store.keys import RedisKeys
    from mailcore.store.lease import RedisLease

    clock = SystemClock()
    client = build_redis_client(settings)
    stores = build_attempt_stores(settings, client)
    dispatcher = build_dispatcher(settings, clock, client, sqs_client, stores)
    if dispatcher is None:
        raise ValueError("the scheduler needs MAIL_ATTEMPT_QUEUE_URL")
    interval = settings.scheduler_poll_interval
    lease = RedisLease(
        client, RedisKeys().lease(SCHEDULER_LEASE), length=4 * interval + timedelta(seconds=10)
    )
    return Scheduler(
        stores,
        dispatcher,
        lease,
        observer,
        clock,
        poll_interval_ms=int(interval.total_seconds() * 1000),
        claims_per_poll=settings.attempt_worker_concurrency * CLAIMS_PER_WORKER,
    )


def build_index_cleanup(settings: Settings) -> IndexCleanup:
    from mailcore.services.cleanup import IndexCleanup
    from mailcore.store.index_maintenance import RedisIndexMaintenance
    from mailcore.store.keys import RedisKeys

    client = build_redis_client(settings)
    partitions = [
        RedisIndexMaintenance(client, RedisKeys.of_partition(n))
        for n in range(settings.redis_partitions)
    ]
    if len(partitions) == 1:
        return IndexCleanup(partitions[0])
    from mailcore.store.partitions import PartitionedIndexMaintenance

    return IndexCleanup(PartitionedIndexMaintenance(client, partitions))


def load_catalog(settings: Settings) -> TemplateCatalog:
    from pathlib import Path

    from mailcore.rendering.catalog import TemplateCatalog, default_catalog_dir

    directory = Path(settings.template_dir) if settings.template_dir else default_catalog_dir()
    return TemplateCatalog.load(directory)


def password_source(settings: Settings, secrets_client: Any = None) -> Callable[[], str | None]:
    from mailcore.aws.secrets import secret_password_source

    if settings.smtp_password_secret_arn:
        return secret_password_source(settings.smtp_password_secret_arn, secrets_client)
    password = settings.smtp_password
    return lambda: password.get_secret_value() if password else None


def build_provider(settings: Settings, secrets_client: Any = None) -> MailProvider:
    from mailcore.providers.smtp import SmtpProvider
    from mailcore.providers.stub import StubProvider

    if settings.smtp_mode is SmtpMode.STUB:
        return StubProvider()
    return SmtpProvider.from_settings(settings, password_source(settings, secrets_client))


def sender_of(settings: Settings) -> Sender:
    from mailcore.mail.mime import Sender

    return Sender(settings.smtp_from_email or STUB_SENDER, settings.smtp_from_name)


def build_attempt_executor(
    settings: Settings,
    provider: MailProvider | None = None,
    catalog: TemplateCatalog | None = None,
    secrets_client: Any = None,
    tracing: XRayProvider | None = None,
) -> AttemptExecutor:
    from mailcore.services.attempts import AttemptExecutor

    return AttemptExecutor(
        build_claimed_attempt_steps(settings),
        catalog or load_catalog(settings),
        provider or build_provider(settings, secrets_client),
        sender_of(settings),
        SystemClock(),
        tracing=tracing,
    )


def build_tracer(settings: Settings) -> LambdaTracer:
    """Powertools' Tracer over our X-Ray provider (see :mod:`mailcore.tracing`).

    Handlers decorate with it; ``tracer.xray`` is the provider the services
    open their subsegments with. Without a daemon address nothing is sent.
    """
    from mailcore.config import current_trace_header
    from mailcore.errors import IdempotencyConflict, InvalidCursor, NotFound, NotResendable
    from mailcore.telemetry import SERVICE_NAME
    from mailcore.tracing import LambdaTracer, XRayProvider

    provider = XRayProvider(
        settings.xray_daemon_address,
        current_trace_header,
        client_errors=(IdempotencyConflict, InvalidCursor, NotFound, NotResendable),
    )
    return LambdaTracer(provider, service=SERVICE_NAME)


def sqs_client_from_environment() -> Any:
    """An SQS client configured the standard AWS way (region, credentials, endpoint),
    with the timeouts and retries of every AWS client (:mod:`mailcore.aws.clients`)."""
    from mailcore.aws.clients import aws_client

    return aws_client("sqs")
