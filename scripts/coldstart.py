"""Cold-start budget: each handler's init time and the built sizes.

    python scripts/coldstart.py [--runs N]

Init is measured the way Lambda pays it: a fresh interpreter imports the
handler module (which builds its clients, scripts and catalog at module
scope; nothing connects), in a virtual environment holding only what the
deployed function has: the layer's pinned requirements plus boto3, which the
runtime provides. That environment is made once in `.coldstart-venv`. Sizes
come from `sam build`'s output (run `make sam-build` first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".coldstart-venv"
BUILD = ROOT / ".aws-sam" / "build"
INIT_BUDGET_MS = 250
LAYER_BUDGET_MB = 30
# What the Lambda Python 3.13 runtime ships (boto3 and botocore), pinned as in development.
RUNTIME_PACKAGES = ["boto3==1.43.108"]
PROBE = (
    "import time, importlib, sys; started = time.perf_counter(); "
    "importlib.import_module(sys.argv[1]); "
    "print(round((time.perf_counter() - started) * 1000, 1))"
)


def handlers() -> dict[str, str]:
    template, problems = decode(str(ROOT / "template.yaml"))
    assert template is not None
    assert not problems
    return {
        name: resource["Properties"]["Handler"].rpartition(".")[0]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(ROOT / "layers" / "mailcore" / "requirements.txt"),
                *RUNTIME_PACKAGES,
            ],
            check=True,
        )
    return python


def init_ms(python: Path, module: str, runs: int) -> float:
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": f"{ROOT / 'layers' / 'mailcore'}:{ROOT / 'functions' / module}",
        "MAIL_REDIS_ADDR": "127.0.0.1:6379",
        "MAIL_ATTEMPT_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/attempts",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "cold",
        "AWS_SECRET_ACCESS_KEY": "start",
        "POWERTOOLS_SERVICE_NAME": "mail",
        "POWERTOOLS_METRICS_NAMESPACE": "MailService",
    }
    timings = []
    for _ in range(runs + 1):  # the first run also writes .pyc files: not counted
        completed = subprocess.run(
            [str(python), "-c", PROBE, module],
            env=environment,
            capture_output=True,
            text=True,
            check=True,
        )
        timings.append(float(completed.stdout.strip().splitlines()[-1]))
    return statistics.median(timings[1:])


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1_000_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    python = ensure_venv()
    over = 0
    print(f"{'function':24} {'init ms':>8} {'budget':>7}  {'built':>8}")
    for logical_id, module in sorted(handlers().items()):
        ms = init_ms(python, module, runs)
        built = BUILD / logical_id
        size = f"{size_mb(built) * 1000:.0f} KB" if built.exists() else "not built"
        verdict = "ok" if ms <= INIT_BUDGET_MS else "OVER"
        over += verdict == "OVER"
        print(f"{logical_id:24} {ms:8.0f} {INIT_BUDGET_MS:7d}  {size:>8}  {verdict}")
    layer = BUILD / "MailCoreLayer"
    if layer.exists():
        mb = size_mb(layer)
        verdict = "ok" if mb <= LAYER_BUDGET_MB else "OVER"
        over += verdict == "OVER"
        print(
            f"{'MailCoreLayer (unzipped)':24} {mb:7.1f} MB (budget {LAYER_BUDGET_MB} MB)  {verdict}"
        )
    else:
        print("MailCoreLayer: not built (run `make sam-build`)")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
