"""Lambda handler: index cleanup, ticked by EventBridge.

Removes index members whose delivery, malformed-command record or dead-letter
entry has expired, oldest first, until shortly before its timeout.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mailcore.composition import build_index_cleanup, build_tracer
from mailcore.config import load_settings
from mailcore.telemetry import METRICS_NAMESPACE, SERVICE_NAME, Metric

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)
settings = load_settings()
tracer = build_tracer(settings)
cleanup = build_index_cleanup(settings)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = cleanup.run(time_left_ms=context.get_remaining_time_in_millis)
    metrics.add_metric(Metric.STALE_INDEX_MEMBERS_REMOVED, MetricUnit.Count, report.removed)
    result = report.as_dict()
    logger.info("index cleanup finished", extra=result)
    return result
