"""Names shared by logs and metrics, and the observers that emit them.

Metric names live here so that dashboards and alarms match the code. No
observer ever logs a template variable, a login code or a message body.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from enum import StrEnum

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from mailcore.errors import StoreUnavailable
from mailcore.ports import EntryVerdict
from mailcore.services.stream_intake import HandledEntry

SERVICE_NAME = "mail"
METRICS_NAMESPACE = "MailService"


class Metric(StrEnum):
    AUTH_DELIVERIES_ACCEPTED = "AuthDeliveriesAccepted"
    GENERIC_DELIVERIES_ACCEPTED = "GenericDeliveriesAccepted"
    DELIVERIES_SUPPRESSED = "DeliveriesSuppressed"
    IDEMPOTENT_REPLAYS = "IdempotentReplays"
    IDEMPOTENCY_CONFLICTS = "IdempotencyConflicts"
    DUPLICATE_COMMANDS = "DuplicateCommands"
    MALFORMED_COMMANDS = "MalformedCommands"
    STORE_UNAVAILABLE = "StoreUnavailable"
    REQUESTS_REJECTED = "RequestsRejected"
    INTERNAL_ERRORS = "InternalErrors"


class StreamPollTelemetry:
    """Logs every handled stream entry and counts outcomes (implements PollObserver)."""

    def __init__(self, logger: Logger, metrics: Metrics) -> None:
        self._logger = logger
        self._metrics = metrics

    def entries_handled(self, handled: Sequence[HandledEntry]) -> None:
        verdicts = Counter(entry.verdict for entry in handled)
        for entry in handled:
            if entry.verdict is EntryVerdict.MALFORMED:
                self._logger.warning(
                    "malformed stream command recorded",
                    stream_entry_id=entry.stream_entry_id,
                    failure_code=entry.failure_code,
                    reason=entry.failure_message,
                )
            else:
                self._logger.info(
                    "stream command accepted"
                    if entry.verdict is EntryVerdict.CREATED
                    else "duplicate stream command skipped",
                    delivery_id=entry.delivery_id,
                    source=entry.source,
                    template_id=entry.template_id,
                    stream_entry_id=entry.stream_entry_id,
                )
        for verdict, metric in (
            (EntryVerdict.CREATED, Metric.GENERIC_DELIVERIES_ACCEPTED),
            (EntryVerdict.DUPLICATE, Metric.DUPLICATE_COMMANDS),
            (EntryVerdict.MALFORMED, Metric.MALFORMED_COMMANDS),
        ):
            if verdicts[verdict]:
                self._metrics.add_metric(metric, MetricUnit.Count, verdicts[verdict])

    def store_unavailable(self, error: StoreUnavailable) -> None:
        self._logger.warning("state store unavailable; retrying", reason=str(error))
        self._metrics.add_metric(Metric.STORE_UNAVAILABLE, MetricUnit.Count, 1)
