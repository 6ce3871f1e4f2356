"""Names shared by logs and metrics, and the observers that emit them.

Metric names live here so that dashboards and alarms match the code. No
observer ever logs a template variable, a login code or a message body.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from mailcore.contracts.errors import ErrorCode
from mailcore.domain.states import AttemptStatus
from mailcore.errors import StoreUnavailable
from mailcore.ports import ClaimedAttempt, EntryVerdict, ScheduleStats

if TYPE_CHECKING:
    from mailcore.services.attempts import AttemptReport
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
    ATTEMPTS_ACCEPTED = "AttemptsAccepted"
    ATTEMPTS_SUPPRESSED = "AttemptsSuppressed"
    ATTEMPTS_TRANSIENT_FAILURES = "AttemptsTransientFailures"
    ATTEMPTS_PERMANENT_FAILURES = "AttemptsPermanentFailures"
    RENDER_FAILURES = "RenderFailures"
    STALE_ATTEMPTS_SKIPPED = "StaleAttemptsSkipped"
    DELIVERIES_SENT = "DeliveriesSent"
    DELIVERIES_FAILED = "DeliveriesFailed"
    DELIVERIES_RETRIED = "DeliveriesRetried"
    DEAD_LETTERS = "DeadLetters"
    LOCALE_FALLBACKS = "LocaleFallbacks"
    PROVIDER_SEND_DURATION = "ProviderSendDuration"
    CLAIMS_RECOVERED = "ClaimsRecovered"
    DELIVERIES_RESENT = "DeliveriesResent"
    OPERATOR_REQUESTS = "OperatorRequests"
    STALE_INDEX_MEMBERS_REMOVED = "StaleIndexMembersRemoved"
    SCHEDULE_DEPTH = "AttemptScheduleDepth"
    OLDEST_SCHEDULED_AGE = "AttemptScheduleOldestAge"
    CLAIMS_IN_FLIGHT = "AttemptClaimsInFlight"
    DELIVERIES_BY_STATUS = "DeliveriesByStatus"  # one gauge per `status` dimension
    ATTEMPTS_TIMED_OUT = "AttemptsTimedOut"


# The dimension of DeliveriesByStatus, besides the service.
STATUS_DIMENSION = "status"
# What recover_claims.lua reports for a claim whose attempt it ended
# `timed_out` (the delivery retried or dead-lettered); `rescheduled` and
# `cleared` end no attempt.
TIMED_OUT_RECOVERIES = frozenset({"retry", "dead_letter"})


_OUTCOME_METRICS = {
    "accepted": Metric.ATTEMPTS_ACCEPTED,
    "suppressed": Metric.ATTEMPTS_SUPPRESSED,
    "transient_failure": Metric.ATTEMPTS_TRANSIENT_FAILURES,
    "permanent_failure": Metric.ATTEMPTS_PERMANENT_FAILURES,
    "render_failed": Metric.RENDER_FAILURES,
}
_STATUS_METRICS = {
    "sent": Metric.DELIVERIES_SENT,
    "suppressed": Metric.DELIVERIES_SUPPRESSED,
    "failed": Metric.DELIVERIES_FAILED,
    "queued": Metric.DELIVERIES_RETRIED,
    "dead_letter": Metric.DEAD_LETTERS,
}


class ApiErrorTelemetry:
    """Logs and counts the error answers of an API function (an ``ErrorListener``).

    ``refusal`` is the log message for 4xx answers; ``counted`` says which
    error codes increment which metric. Reasons are the validation messages,
    which never quote a submitted value.
    """

    def __init__(
        self,
        logger: Logger,
        metrics: Metrics,
        *,
        refusal: str,
        counted: Mapping[ErrorCode, Metric],
    ) -> None:
        self._logger = logger
        self._metrics = metrics
        self._refusal = refusal
        self._counted = counted

    def __call__(self, code: ErrorCode, message: str, error_type: str) -> None:
        if code is ErrorCode.INTERNAL_ERROR:
            self._logger.error("unexpected error", error_code=code, error_type=error_type)
        elif code is ErrorCode.SERVICE_UNAVAILABLE:
            self._logger.warning("state store unavailable", error_code=code, error_type=error_type)
        else:
            self._logger.info(self._refusal, error_code=code, reason=message)
        if code in self._counted:
            self._metrics.add_metric(self._counted[code], MetricUnit.Count, 1)


class _StoreTrouble:
    """Shared by the loops' observers: a Redis outage is logged, counted and waited out."""

    _logger: Logger
    _metrics: Metrics

    def __init__(self, logger: Logger, metrics: Metrics) -> None:
        self._logger = logger
        self._metrics = metrics

    def store_unavailable(self, error: StoreUnavailable) -> None:
        self._logger.warning("state store unavailable; retrying", reason=str(error))
        self._metrics.add_metric(Metric.STORE_UNAVAILABLE, MetricUnit.Count, 1)


class StreamPollTelemetry(_StoreTrouble):
    """Logs every handled stream entry and counts outcomes (implements PollObserver)."""

    def entries_handled(self, handled: Sequence[HandledEntry]) -> None:
        verdicts = Counter(entry.verdict for entry in handled)
        for entry in handled:
            if entry.verdict is EntryVerdict.MALFORMED:
                # delivery_id and source as the entry gave them (absent ones
                # are left out); never its payload or variables.
                self._logger.warning(
                    "malformed stream command recorded",
                    stream_entry_id=entry.stream_entry_id,
                    delivery_id=entry.delivery_id,
                    source=entry.source,
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


class AttemptTelemetry:
    """One log line and the counters for each attempt a worker handled."""

    def __init__(self, logger: Logger, metrics: Metrics) -> None:
        self._logger = logger
        self._metrics = metrics

    def record(self, report: AttemptReport) -> None:
        fields: dict[str, object] = {
            "delivery_id": report.delivery_id,
            "attempt_no": report.attempt_no,
            "source": report.source,
            "template_id": report.template_id,
        }
        if report.skipped:
            self._logger.info("attempt skipped", extra={**fields, "reason": report.skipped})
            self._metrics.add_metric(Metric.STALE_ATTEMPTS_SKIPPED, MetricUnit.Count, 1)
            return
        if report.completion_refused:
            # The provider answered but the claim was gone: recovery will retry,
            # and the receiver may see this message twice (same Message-ID).
            self._logger.warning(
                "attempt outcome not recorded",
                extra={**fields, "reason": report.completion_refused},
            )
        self._logger.info(
            "attempt finished",
            extra={
                **fields,
                "outcome": report.outcome,
                "attempt_status": report.attempt_status,
                "delivery_status": report.status,
                "duration_ms": report.duration_ms,
                "locale_fallback_used": report.locale_fallback_used,
            },
        )
        if report.outcome in _OUTCOME_METRICS:
            self._metrics.add_metric(_OUTCOME_METRICS[report.outcome], MetricUnit.Count, 1)
        if report.status in _STATUS_METRICS:
            self._metrics.add_metric(_STATUS_METRICS[report.status], MetricUnit.Count, 1)
        if report.attempt_status == AttemptStatus.TIMED_OUT:
            self._metrics.add_metric(Metric.ATTEMPTS_TIMED_OUT, MetricUnit.Count, 1)
        if report.locale_fallback_used:
            self._metrics.add_metric(Metric.LOCALE_FALLBACKS, MetricUnit.Count, 1)
        if report.duration_ms is not None:
            self._metrics.add_metric(
                Metric.PROVIDER_SEND_DURATION, MetricUnit.Milliseconds, report.duration_ms
            )

    def store_unavailable(self, claim: ClaimedAttempt, error: StoreUnavailable) -> None:
        self._logger.warning(
            "attempt postponed: state store unavailable",
            extra={
                "delivery_id": claim.delivery_id,
                "attempt_no": claim.attempt_no,
                "reason": str(error),
            },
        )
        self._metrics.add_metric(Metric.STORE_UNAVAILABLE, MetricUnit.Count, 1)


class SchedulerTelemetry(_StoreTrouble):
    """Implements SchedulerObserver: recoveries, schedule gauges, store trouble."""

    def recovered(self, recoveries: list[tuple[str, str]]) -> None:
        for delivery_id, what in recoveries:
            self._logger.warning("expired claim recovered", delivery_id=delivery_id, result=what)
        self._metrics.add_metric(Metric.CLAIMS_RECOVERED, MetricUnit.Count, len(recoveries))
        dead = sum(1 for _, what in recoveries if what == "dead_letter")
        if dead:
            self._metrics.add_metric(Metric.DEAD_LETTERS, MetricUnit.Count, dead)
        timed_out = sum(1 for _, what in recoveries if what in TIMED_OUT_RECOVERIES)
        if timed_out:
            self._metrics.add_metric(Metric.ATTEMPTS_TIMED_OUT, MetricUnit.Count, timed_out)

    def schedule_stats(self, stats: ScheduleStats) -> None:
        self._metrics.add_metric(Metric.SCHEDULE_DEPTH, MetricUnit.Count, stats.depth)
        self._metrics.add_metric(
            Metric.OLDEST_SCHEDULED_AGE, MetricUnit.Milliseconds, stats.oldest_due_age_ms
        )
        # Claimed attempts not finished yet; the bounded dispatchers keep it
        # at or below MAIL_MAX_CLAIMS_IN_FLIGHT (login codes may go past it).
        self._metrics.add_metric(Metric.CLAIMS_IN_FLIGHT, MetricUnit.Count, stats.claimed)
        if stats.by_status:
            self._deliveries_by_status(stats.by_status)

    def _deliveries_by_status(self, counts: Mapping[str, int]) -> None:
        """One EMF line per status, written at once.

        A dimension applies to a whole metric set, so each status value needs
        a set of its own, with the dimensions the function's other metrics have.
        """
        dimensions = dict(self._metrics.default_dimensions)
        if self._metrics.service:
            dimensions.setdefault("service", self._metrics.service)
        for status, count in counts.items():
            with single_metric(
                name=Metric.DELIVERIES_BY_STATUS,
                unit=MetricUnit.Count,
                value=count,
                namespace=self._metrics.namespace,
                default_dimensions=dimensions,
            ) as metric:
                metric.add_dimension(STATUS_DIMENSION, status)
