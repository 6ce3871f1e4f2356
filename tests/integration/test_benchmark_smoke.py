"""The benchmarks run end to end at a tiny size (their figures are printed, not asserted)."""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench._support import SinkKind, smtp_sink, smtp_sink_binary

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_operator_page_benchmark_runs_and_prints_its_figures() -> None:
    completed = subprocess.run(
        [sys.executable, "bench/operator_page.py", "--deliveries", "2000", "--pages", "5"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "stored 2,000 deliveries" in completed.stdout
    assert "bytes of Redis memory each" in completed.stdout
    lines = [line for line in completed.stdout.splitlines() if line.startswith("status=sent")]
    assert len(lines) == 1
    assert lines[0].split()[-1] == "50"  # a full page was found


def run_bench(*arguments: str) -> str:
    completed = subprocess.run(
        [sys.executable, *arguments],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return completed.stdout


def test_the_auth_intake_benchmark_runs_and_prints_its_figures() -> None:
    output = run_bench("bench/auth_intake.py", "--requests", "300")
    assert "requests: 300, accepted: 300" in output
    assert "logs and EMF metrics were produced and discarded" in output
    assert "accepted requests/s on one core" in output
    assert "auth intake latency: p50" in output


def test_the_intake_with_sqs_faults_benchmark_runs_and_prints_its_figures() -> None:
    output = run_bench("bench/intake_sqs_faults.py", "--requests", "3")
    assert "3 login-code POSTs per SQS endpoint" in output
    for endpoint in ("normal", "silent", "refused"):
        assert any(line.startswith(endpoint) for line in output.splitlines())
    # two warm-ups and three timed requests each, for the silent and the refused SQS
    assert "left to the scheduler (due in the schedule): 10" in output


def test_the_stream_intake_benchmark_runs_and_prints_its_figures() -> None:
    output = run_bench("bench/stream_intake.py", "--commands", "400")
    assert "preloaded 400 commands" in output
    assert "accepted 400, malformed 0" in output
    assert "commands accepted/s" in output


def test_the_stream_retention_benchmark_runs_and_prints_its_figures(tmp_path: Path) -> None:
    # Given a small run: 3,000 commands in chunks of 500, keeping 200 handled entries
    target = tmp_path / "stream_retention.json"
    output = run_bench(
        "bench/stream_retention.py",
        *("--commands", "3000", "--chunk", "500", "--report-every", "1000"),
        *("--retention", "200", "--distinct", "300", "--json", str(target)),
    )
    # Then it prints both runs at each report point, and the comparison at the end
    assert "[retention 200]     3,000 commands: XLEN" in output
    assert "[untrimmed]     3,000 commands: XLEN     3,000" in output
    assert "at 3,000 commands: stream" in output
    figures = json.loads(target.read_text())
    trimmed = figures["trimmed"]["samples"]
    assert [s["commands"] for s in trimmed] == [0, 1000, 2000, 3000]
    # And with trimming the stream stays near the retention; without, it holds every entry
    assert all(200 <= s["length"] <= 200 + 20 + 100 for s in trimmed[1:])
    assert figures["untrimmed"]["samples"][-1]["length"] == 3000
    assert figures["trimmed"]["accepted"] + figures["trimmed"]["duplicates"] == 3000


def test_the_scale_benchmark_runs_and_prints_its_figures() -> None:
    output = run_bench(
        "bench/scale.py", "--scheduled", "500", "--claims", "2", "--login-codes", "200"
    )
    assert "claim 100 of 500 scheduled: p50" in output
    assert "Redis memory per login-code delivery" in output


def test_the_benchmarks_write_their_figures_as_json(tmp_path: Path) -> None:
    target = tmp_path / "figures.json"
    run_bench("bench/stream_intake.py", "--commands", "200", "--json", str(target))
    assert '"commands_per_second"' in target.read_text()


def test_the_end_to_end_benchmark_runs_and_prints_its_figures(tmp_path: Path) -> None:
    target = tmp_path / "end_to_end.json"
    output = run_bench(
        "bench/end_to_end.py",
        *("--deliveries", "40", "--workers", "2", "--no-install", "--json", str(target)),
    )
    assert "end to end: 40 deliveries SMTP-accepted in" in output
    assert "40 sent in Redis; 40 messages at the sink" in output
    assert "deliveries/s with 2 attempt workers" in output
    assert "baseline (one smtplib connection, no bookkeeping):" in output
    assert "ratio end to end / baseline:" in output
    assert '"ratio"' in target.read_text()


def test_the_latency_benchmark_runs_and_prints_its_figures(tmp_path: Path) -> None:
    target = tmp_path / "latency.json"
    output = run_bench(
        "bench/latency.py",
        *("--requests", "20", "--rate", "40", "--warmup", "2", "--no-install"),
        *("--json", str(target)),
    )
    assert "requests: 20 at 40/s (after 2 warm-up requests), accepted: 20, at the sink: 20" in (
        output
    )
    assert "accept → at sink: p50" in output
    assert '"p99_ms"' in target.read_text()


def test_the_partitions_benchmark_runs_on_the_local_cluster_and_writes_every_row(
    tmp_path: Path,
) -> None:
    target = tmp_path / "partitions.json"
    output = run_bench(
        "bench/partitions.py",
        *("--commands", "200", "--deliveries", "100", "--partitions", "1", "4"),
        *("--no-standalone", "--no-install", "--json", str(target)),
    )
    assert "started a local Redis Cluster (3 primaries + 3 replicas)" in output
    assert "intake commands/s" in output
    printed = [line.split() for line in output.splitlines() if line.startswith("local Redis")]
    assert [words[-3] for words in printed] == ["1", "4"]
    assert all(float(words[-2].replace(",", "")) > 0 for words in printed)
    assert all(float(words[-1].replace(",", "")) > 0 for words in printed)
    figures = json.loads(target.read_text())
    assert figures["completed"] is True
    rows = figures["rows"]
    assert [(row["backend"], row["partitions"]) for row in rows] == [
        ("local Redis Cluster", 1),
        ("local Redis Cluster", 4),
    ]
    for row in rows:
        assert (row["accepted"], row["malformed"], row["sent_in_redis"]) == (200, 0, 100)
        assert row["commands_per_second"] > 0
        assert row["deliveries_per_second"] > 0


@pytest.mark.parametrize("kind", ["smtp-sink", "aiosmtpd"])
def test_the_smtp_sinks_count_messages_and_record_their_arrival(kind: SinkKind) -> None:
    if kind == "smtp-sink" and smtp_sink_binary(install=False) is None:
        pytest.skip("postfix's smtp-sink is not installed (make bench installs it)")
    with smtp_sink(kind, dump=True, install=False) as sink:
        assert sink.kind == kind
        before = time.time()
        with smtplib.SMTP(sink.host, sink.port, local_hostname="test.localhost") as client:
            for number in range(3):
                message = f"Message-ID: <dlv-{number}@mail.test>\r\nSubject: hi\r\n\r\nbody\r\n"
                client.sendmail("from@mail.test", ["to@example.com"], message)
        assert sink.wait_for(3, timeout=10) is not None
        arrivals = sink.arrivals()
    assert set(arrivals) == {"dlv-0", "dlv-1", "dlv-2"}
    # The file times come from the kernel's coarse clock: allow it a little slack.
    assert all(before - 0.05 <= arrived <= time.time() for arrived in arrivals.values())
