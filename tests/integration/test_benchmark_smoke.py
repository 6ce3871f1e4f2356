"""The benchmarks run end to end at a tiny size (their figures are printed, not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_the_stream_intake_benchmark_runs_and_prints_its_figures() -> None:
    output = run_bench("bench/stream_intake.py", "--commands", "400")
    assert "preloaded 400 commands" in output
    assert "accepted 400, malformed 0" in output
    assert "commands accepted/s" in output


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
