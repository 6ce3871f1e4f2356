"""The metrics the observers write, read back from the EMF lines CloudWatch receives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools import Logger, Metrics

from mailcore.domain.states import AttemptStatus, DeliveryStatus
from mailcore.ports import ScheduleStats
from mailcore.services.attempts import AttemptReport
from mailcore.telemetry import (
    METRICS_NAMESPACE,
    SERVICE_NAME,
    AttemptTelemetry,
    Metric,
    SchedulerTelemetry,
)


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)
    metrics.clear_metrics()
    yield metrics
    metrics.clear_metrics()


def emf_lines(printed: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in printed.splitlines() if line.startswith('{"_aws"')]


def values_of(lines: list[dict[str, Any]], name: str) -> list[float]:
    return [value for line in lines for value in line.get(name, [])]


def test_the_scheduler_writes_one_gauge_per_delivery_status(
    metrics: Metrics, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the counts the scheduler read from the status indexes
    counts = {str(status): 0 for status in DeliveryStatus} | {"queued": 7, "sent": 120}
    stats = ScheduleStats(depth=7, oldest_due_age_ms=0, claimed=2, by_status=counts)

    # When it reports them
    SchedulerTelemetry(Logger(service="test"), metrics).schedule_stats(stats)
    metrics.flush_metrics()

    # Then each status is its own DeliveriesByStatus data point, in the
    # service's namespace, dimensioned by service and status
    lines = [
        line for line in emf_lines(capsys.readouterr().out) if Metric.DELIVERIES_BY_STATUS in line
    ]
    by_status = {line["status"]: line[Metric.DELIVERIES_BY_STATUS] for line in lines}
    assert by_status == {status: [float(count)] for status, count in counts.items()}
    for line in lines:
        [declared] = line["_aws"]["CloudWatchMetrics"]
        assert declared["Namespace"] == METRICS_NAMESPACE
        assert declared["Dimensions"] == [["service", "status"]]
        assert line["service"] == SERVICE_NAME


def test_claims_recovered_as_timed_out_are_counted_as_timed_out_attempts(
    metrics: Metrics, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given recoveries: two attempts ended timed_out (one retried, one the
    # last rung), one never reached a worker, one delivery already gone
    recoveries = [
        ("d-1", "retry"),
        ("d-2", "dead_letter"),
        ("d-3", "rescheduled"),
        ("d-4", "cleared"),
    ]

    # When the scheduler reports them
    SchedulerTelemetry(Logger(service="test"), metrics).recovered(recoveries)
    metrics.flush_metrics()

    # Then two attempts timed out, among four claims recovered
    lines = emf_lines(capsys.readouterr().out)
    assert values_of(lines, Metric.ATTEMPTS_TIMED_OUT) == [2.0]
    assert values_of(lines, Metric.CLAIMS_RECOVERED) == [4.0]


def test_no_timed_out_attempt_is_counted_when_none_timed_out(
    metrics: Metrics, capsys: pytest.CaptureFixture[str]
) -> None:
    SchedulerTelemetry(Logger(service="test"), metrics).recovered([("d-1", "rescheduled")])
    metrics.flush_metrics()
    assert values_of(emf_lines(capsys.readouterr().out), Metric.ATTEMPTS_TIMED_OUT) == []


@pytest.mark.parametrize(
    ("attempt_status", "counted"),
    [
        (AttemptStatus.TIMED_OUT, [1.0]),
        (AttemptStatus.PROVIDER_REJECTED, []),
        (AttemptStatus.TRANSPORT_FAILED, []),
    ],
)
def test_a_worker_counts_an_attempt_that_timed_out(
    metrics: Metrics,
    capsys: pytest.CaptureFixture[str],
    attempt_status: AttemptStatus,
    counted: list[float],
) -> None:
    # Given an attempt that ended with this status (a transient failure)
    report = AttemptReport(
        "d-1",
        1,
        "notification",
        outcome="transient_failure",
        status="queued",
        attempt_status=attempt_status,
        duration_ms=15_000,
    )

    # When the worker records it
    AttemptTelemetry(Logger(service="test"), metrics).record(report)
    metrics.flush_metrics()

    # Then only a timed-out attempt counts as one
    lines = emf_lines(capsys.readouterr().out)
    assert values_of(lines, Metric.ATTEMPTS_TIMED_OUT) == counted
    assert values_of(lines, Metric.ATTEMPTS_TRANSIENT_FAILURES) == [1.0]
