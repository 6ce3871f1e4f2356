"""Lambda handler: attempt workers, fed by the SQS attempt queue.

Each record is one claimed attempt. Powertools' batch processor reports the
records that failed (the store was unreachable, or the message is not a
claim) so SQS retries only those; stale and duplicate claims are skipped, never
sent twice. One SMTP connection serves the whole batch.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from mailcore.composition import build_attempt_executor, build_tracer
from mailcore.config import load_settings
from mailcore.contracts.attempt_message import decode_claim
from mailcore.errors import StoreUnavailable
from mailcore.telemetry import METRICS_NAMESPACE, SERVICE_NAME, AttemptTelemetry

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)
settings = load_settings()
tracer = build_tracer(settings)
executor = build_attempt_executor(settings, tracing=tracer.xray)
telemetry = AttemptTelemetry(logger, metrics)
processor = BatchProcessor(event_type=EventType.SQS)


@tracer.capture_method(capture_response=False, capture_error=False)
def record_handler(record: SQSRecord) -> None:
    try:
        claim = decode_claim(record.body)
    except (ValueError, KeyError, TypeError):
        # Not ours to fix: failing it sends it to the DLQ after maxReceiveCount.
        logger.error("attempt message is not a claim", message_id=record.message_id)
        raise
    try:
        report = executor.execute(claim)
    except StoreUnavailable as error:
        # SQS redelivers this record after the visibility timeout.
        telemetry.store_unavailable(claim, error)
        raise
    telemetry.record(report)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    try:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    finally:
        executor.close()
