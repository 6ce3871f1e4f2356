"""Lambda handler: consume the Notification service's command stream.

EventBridge invokes it every minute. One invocation takes the poller lease
(a second, overlapping one finds it taken and returns at once), then reads
and accepts commands until shortly before its own timeout.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from mailcore.composition import build_stream_poller, build_tracer
from mailcore.config import load_settings
from mailcore.telemetry import METRICS_NAMESPACE, SERVICE_NAME, StreamPollTelemetry

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)
settings = load_settings()
tracer = build_tracer(settings)
poller = build_stream_poller(settings, StreamPollTelemetry(logger, metrics), tracing=tracer.xray)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = poller.run(time_left_ms=context.get_remaining_time_in_millis).as_dict()
    logger.info("stream poll finished", extra=report)
    return report
