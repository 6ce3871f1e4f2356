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
