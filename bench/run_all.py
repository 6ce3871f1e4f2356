"""Run every benchmark, keep the figures, and put the table in docs/performance.md.

    python bench/run_all.py            (what `make bench` runs)

Each benchmark runs as its own process (its own redis-server on a free local
port; ``partitions`` also a local Redis Cluster) at its full default size
and writes its figures as JSON; handler init comes from
``scripts/coldstart.py``. First, postfix's ``smtp-sink`` (the SMTP sink of
the end-to-end, latency and partitions benchmarks) is installed if it is
missing and this runs as root with apt-get (``bench/_support.py``). The
figures, with the machine they were measured on, go to
``bench/results/latest.json``; the results table in ``docs/performance.md``
(between the ``bench:results`` markers) is regenerated with each figure
next to its target from issue 8.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._support import ROOT, smtp_sink_binary

RESULTS = ROOT / "bench" / "results" / "latest.json"
DOC = ROOT / "docs" / "performance.md"
START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"
BENCHMARKS = [
    "auth_intake",
    "stream_intake",
    "stream_retention",
    "end_to_end",
    "latency",
    "scale",
    "operator_page",
    "partitions",
]
INIT_BUDGET_MS = 250


def run(name: str, workdir: Path) -> dict[str, Any] | None:
    target = workdir / f"{name}.json"
    print(f"\n== {name} ==", flush=True)
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--json", str(target)],
        cwd=ROOT,
        check=False,
    )
    print(f"({name}: {time.perf_counter() - started:.0f}s)", flush=True)
    if completed.returncode != 0:
        print(f"{name} failed with exit code {completed.returncode}", flush=True)
    if not target.exists():
        return None
    # A failed run may still say how far it got (end_to_end: "completed": false).
    figures: dict[str, Any] = json.loads(target.read_text())
    if completed.returncode != 0 and "completed" not in figures:
        return None
    return figures


def coldstart() -> dict[str, float] | None:
    """Per-handler init in ms, parsed from scripts/coldstart.py's table."""
    print("\n== coldstart ==", flush=True)
    completed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "coldstart.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    print(completed.stdout, end="", flush=True)
    inits = parse_coldstart(completed.stdout)
    if not inits:
        print(completed.stderr, end="", file=sys.stderr)
        return None
    return inits


def parse_coldstart(printed: str) -> dict[str, float]:
    """``{logical id: init ms}`` from the lines ``FunctionName  <ms>  <size>`` it prints."""
    inits: dict[str, float] = {}
    for line in printed.splitlines():
        match = re.match(r"^(\w+Function)\s+(\d+(?:\.\d+)?)\s", line)
        if match:
            inits[match.group(1)] = float(match.group(2))
    return inits


def redis_version() -> str:
    completed = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    )
    match = re.search(r"v=(\S+)", completed.stdout)
    return match.group(1) if match else completed.stdout.strip()


def machine() -> dict[str, Any]:
    return {
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "redis_server": redis_version(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


Row = tuple[str, str, str, str]  # figure, measured, target, verdict


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def sink_note(figures: dict[str, Any]) -> str:
    """Said when the figure was measured against the Python fallback sink."""
    return "" if figures.get("sink") == "smtp-sink" else f" ({figures.get('sink')} sink)"


def rows(results: dict[str, Any]) -> list[Row]:
    table: list[Row] = []
    auth = results.get("auth_intake")
    if auth:
        met = auth["requests_per_second"] >= 2500 and auth["p99_ms"] <= 1.0
        measured = (
            f"{auth['requests_per_second']:,.0f} req/s, p50 {auth['p50_ms']:.2f} ms, "
            f"p99 {auth['p99_ms']:.2f} ms"
        )
        table.append(("auth intake, one core", measured, "≥ 2,500 req/s, p99 ≤ 1 ms", verdict(met)))
    else:
        table.append(("auth intake, one core", "failed", "≥ 2,500 req/s, p99 ≤ 1 ms", "—"))
    stream = results.get("stream_intake")
    if stream:
        rate = stream["commands_per_second"]
        table.append(
            (
                f"stream intake ({stream['commands']:,} mixed commands)",
                f"{rate:,.0f} commands/s",
                "≥ 10,000 commands/s",
                verdict(rate >= 10_000),
            )
        )
    else:
        table.append(("stream intake", "failed", "≥ 10,000 commands/s", "—"))
    table.append(retention_row(results.get("stream_retention")))
    e2e = results.get("end_to_end")
    if e2e and not e2e.get("completed", True):
        stalled = e2e["stalled"]
        table.append(
            (
                f"end to end ({e2e['deliveries']:,} deliveries, {e2e['workers']} workers) "
                "vs plain smtplib baseline",
                f"did not finish: {stalled['at_sink']:,} delivered in {e2e['seconds']:.0f} s, "
                f"{stalled['claims_expired']:,} claims expired; baseline "
                f"{e2e['baseline_messages_per_second']:,.0f} messages/s" + sink_note(e2e),
                "≥ 1.5\u00d7",
                verdict(False),
            )
        )
    elif e2e:
        measured = (
            f"{e2e['deliveries_per_second']:,.0f} deliveries/s vs "
            f"{e2e['baseline_messages_per_second']:,.0f} messages/s: {e2e['ratio']:.2f}\u00d7"
            + sink_note(e2e)
        )
        table.append(
            (
                f"end to end ({e2e['deliveries']:,} deliveries, {e2e['workers']} workers) "
                "vs plain smtplib baseline",
                measured,
                "≥ 1.5\u00d7",
                verdict(e2e["ratio"] >= 1.5),
            )
        )
    else:
        table.append(("end to end vs plain smtplib baseline", "failed", "≥ 1.5\u00d7", "—"))
    latency = results.get("latency")
    target = "p50 ≤ 300 ms, p99 ≤ 1 s"
    if latency:
        p50, p99 = latency["p50_ms"], latency["p99_ms"]
        measured = f"p50 {p50:,.0f} ms, p99 {p99:,.0f} ms{sink_note(latency)}"
        table.append(
            (
                f"accept → at sink ({latency['requests']:,} requests at "
                f"{latency['rate_per_second']:g}/s, local stack)",
                measured,
                target,
                verdict(latency["p50_ms"] <= 300 and latency["p99_ms"] <= 1000),
            )
        )
    else:
        table.append(("accept → at sink", "failed", target, "—"))
    scale = results.get("scale")
    if scale:
        claim = scale["claim"]
        table.append(
            (
                f"claim 100 of {claim['scheduled']:,} scheduled",
                f"p50 {claim['p50_ms']:.2f} ms, p99 {claim['p99_ms']:.2f} ms",
                "p99 ≤ 5 ms",
                verdict(claim["p99_ms"] <= 5),
            )
        )
    else:
        table.append(("claim 100 of 1M scheduled", "failed", "p99 ≤ 5 ms", "—"))
    page = results.get("operator_page")
    if page:
        table.append(
            (
                f"filtered page of {page['deliveries']:,} deliveries (worst filter)",
                f"p99 {page['worst_p99_ms']:.2f} ms",
                "p99 ≤ 50 ms",
                verdict(page["worst_p99_ms"] <= 50),
            )
        )
    else:
        table.append(("filtered page of 1M deliveries", "failed", "p99 ≤ 50 ms", "—"))
    if scale:
        memory = scale["memory"]
        per = memory["bytes_per_delivery"]
        table.append(
            (
                "Redis memory per login-code delivery",
                f"{per:,} bytes ({per / 1024:.2f} KB)",
                "≤ 1.5 KB",
                verdict(per <= 1536),
            )
        )
    else:
        table.append(("Redis memory per login-code delivery", "failed", "≤ 1.5 KB", "—"))
    inits = results.get("coldstart")
    if inits:
        for function, ms in sorted(inits.items()):
            table.append(
                (f"handler init: {function}", f"{ms:.0f} ms", "≤ 250 ms", verdict(ms <= 250))
            )
    else:
        table.append(("handler init", "failed", "≤ 250 ms each", "—"))
    table += partition_rows(results.get("partitions"))
    return table


def retention_row(retention: dict[str, Any] | None) -> Row:
    """Stream memory, trimmed to MAIL_STREAM_RETENTION, against the same run untrimmed.

    Flat: from the first report point on, the trimmed stream's memory stays
    within 10 % of where it started, however many commands follow."""
    target = "flat (within 10 %); DESIGN 4.11"
    if not retention:
        return ("stream memory with MAIL_STREAM_RETENTION", "failed", target, "—")
    samples = retention["trimmed"]["samples"][1:]
    untrimmed = retention["untrimmed"]["samples"][-1]
    sizes = [sample["stream_bytes"] for sample in samples]
    last = samples[-1]
    mib = 2**20
    measured = (
        "XLEN "
        + " / ".join(f"{s['length']:,}" for s in samples[:: max(1, len(samples) // 3)])
        + f", stream {min(sizes) / mib:.1f} to {max(sizes) / mib:.1f} MiB, used_memory "
        f"{last['used_memory'] / mib:.0f} MiB; untrimmed {untrimmed['stream_bytes'] / mib:,.0f} "
        f"MiB ({retention['stream_bytes_ratio']:,.0f}\u00d7)"
    )
    figure = (
        f"stream memory over {retention['commands']:,} commands, "
        f"retention {retention['retention']:,}"
    )
    return (figure, measured, target, verdict(max(sizes) <= 1.1 * min(sizes)))


def partition_rows(partitions: dict[str, Any] | None) -> list[Row]:
    """One row per backend and partition count (bench/partitions.py): figures to compare
    with each other, with no target of their own."""
    if not partitions:
        return [("stream intake / end to end by partitions", "failed", "—", "—")]
    table: list[Row] = []
    for row in partitions["rows"]:
        count = row["partitions"]
        figure = (
            f"{row['backend']}, {count} partition{'s' if count > 1 else ''}: "
            "stream intake / end to end"
        )
        intake = f"{row['commands_per_second']:,.0f} commands/s of {row['commands']:,}"
        if "deliveries_per_second" in row:
            e2e = f"{row['deliveries_per_second']:,.0f} deliveries/s of {row['deliveries']:,}"
        else:
            e2e = f"did not finish ({row['messages_at_sink']:,} of {row['deliveries']:,} delivered)"
        measured = f"{intake} / {e2e}, {partitions['workers']} workers{sink_note(partitions)}"
        table.append((figure, measured, "— (comparison)", "—"))
    return table


def render(results: dict[str, Any], table: list[Row]) -> str:
    box = results["machine"]
    lines = [
        START,
        "",
        f"Measured {box['date']} on {box['cpu_model']} ({box['cpu_count']} CPUs, "
        f"{box['system']}), Python {box['python']}, redis-server {box['redis_server']}.",
        "",
        "| figure | measured | target | met / missed |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in table]
    lines += ["", END]
    return "\n".join(lines)


def update_doc(block: str) -> None:
    text = DOC.read_text() if DOC.exists() else f"# Performance\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    DOC.write_text(head + block + tail)


def main() -> int:
    started = time.perf_counter()
    sink = smtp_sink_binary(install=True)
    print(f"SMTP sink: {sink or 'postfix smtp-sink unavailable, the Python fallback is used'}")
    results: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="mail-bench-") as workdir:
        for name in BENCHMARKS:
            results[name] = run(name, Path(workdir))
    results["coldstart"] = coldstart()
    results["seconds"] = round(time.perf_counter() - started)
    table = rows(results)
    results["table"] = [
        {"figure": a, "measured": b, "target": c, "verdict": d.strip("*")} for a, b, c, d in table
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    update_doc(render(results, table))
    print(f"\n{'figure':70} {'measured':48} {'target':26} verdict")
    for a, b, c, d in table:
        print(f"{a:70} {b:48} {c:26} {d.strip('*')}")
    print(
        f"\nwrote {RESULTS.relative_to(ROOT)} and {DOC.relative_to(ROOT)} in {results['seconds']}s"
    )
    failed = [
        name
        for name in [*BENCHMARKS, "coldstart"]
        if results[name] is None or results[name].get("completed") is False
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
