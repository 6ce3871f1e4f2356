"""Lambda handler: the scheduler, ticked every minute by EventBridge.

One invocation takes the scheduler lease (an overlapping one returns at once),
then until shortly before its timeout claims due attempts every
MAIL_SCHEDULER_POLL_INTERVAL and sends them to the SQS attempt queue, and
recovers claims whose worker never reported.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from mailcore.composition import build_scheduler, build_tracer
from mailcore.config import load_settings
from mailcore.telemetry import METRICS_NAMESPACE, SERVICE_NAME, SchedulerTelemetry

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)
settings = load_settings()
tracer = build_tracer(settings)
scheduler = build_scheduler(settings, SchedulerTelemetry(logger, metrics))


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = scheduler.run(time_left_ms=context.get_remaining_time_in_millis).as_dict()
    logger.info("scheduler run finished", extra=report)
    return report
