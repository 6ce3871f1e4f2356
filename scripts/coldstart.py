"""Cold-start figures: each handler's init time and the built sizes.

    python scripts/coldstart.py [--runs N]      (what `make coldstart` runs)

It prints figures and judges none of them: the targets are in
docs/performance.md, where `make bench` puts these figures next to them. It
exits 0 whatever the figures are, and non-zero only when it cannot measure.

Init is measured the way Lambda pays it: a fresh interpreter imports the
handler module (which builds its clients, scripts and catalog at module
scope; nothing connects). The packages it imports come from a twin of the
built layer, made by the layer's own build recipe (layers/mailcore/Makefile)
with this machine's wheels instead of arm64 ones, so it holds exactly the
deployed modules and precompiled .pyc files; boto3, which the runtime
provides (precompiled), comes from `.coldstart-venv`. Nothing can write
bytecode, as on Lambda's read-only /opt, so whatever the build did not
compile is compiled on every start and counted. Sizes come from `sam build`'s
output (run `make sam-build` first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".coldstart-venv"
TWIN_LAYER = ROOT / ".coldstart-layer"
BUILD = ROOT / ".aws-sam" / "build"
TARGETS = "docs/performance.md"
# What the Lambda Python 3.13 runtime ships (boto3 and botocore), pinned as in development.
RUNTIME_PACKAGES = ["boto3==1.43.108"]
# Placeholders, not a credential: the probe imports the handlers and never calls AWS.
PLACEHOLDER_KEY = "cold-start"
PLACEHOLDER_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": PLACEHOLDER_KEY,
    "AWS_SECRET_ACCESS_KEY": PLACEHOLDER_KEY,
}
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
                *RUNTIME_PACKAGES,
            ],
            check=True,
        )
    return python


def build_twin_layer() -> Path:
    """The layer as `sam build` makes it, but with this machine's wheels."""
    subprocess.run(["rm", "-rf", str(TWIN_LAYER)], check=True)
    subprocess.run(
        [
            "make",
            "--no-print-directory",
            "--silent",
            "-C",
            str(ROOT / "layers" / "mailcore"),
            "build-MailCoreLayer",
            f"ARTIFACTS_DIR={TWIN_LAYER}",
            "LAYER_PLATFORM=",
            f"PYTHON={sys.executable}",
        ],
        check=True,
    )
    return TWIN_LAYER / "python"


def handler_copy(module: str, into: Path) -> Path:
    """The handler's folder as deployed: its sources, no bytecode from tests."""
    folder = into / module
    folder.mkdir()
    for source in (ROOT / "functions" / module).glob("*.py"):
        (folder / source.name).write_bytes(source.read_bytes())
    return folder


def init_ms(python: Path, layer: Path, function: Path, module: str, runs: int) -> float:
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": f"{layer}:{function}",
        # Lambda's /opt and /var/task are read-only: nothing is cached between starts.
        "PYTHONDONTWRITEBYTECODE": "1",
        "MAIL_REDIS_ADDR": "127.0.0.1:6379",
        "MAIL_ATTEMPT_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/attempts",
        "AWS_DEFAULT_REGION": "eu-west-1",
        **PLACEHOLDER_CREDENTIALS,
        "POWERTOOLS_SERVICE_NAME": "mail",
        "POWERTOOLS_METRICS_NAMESPACE": "MailService",
        # Tracing on, as Lambda runs it with active tracing: the daemon's
        # address and a sampled invocation's header.
        "AWS_LAMBDA_FUNCTION_NAME": module,
        "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
        "_X_AMZN_TRACE_ID": (
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
        ),
    }
    timings = []
    for _ in range(runs + 1):  # the first run warms the page cache: not counted
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args(argv).runs
    python = ensure_venv()
    layer_twin = build_twin_layer()
    functions = Path(tempfile.mkdtemp(prefix="coldstart-"))
    print(f"{'function':24} {'init ms':>8}  {'built':>9}")
    for logical_id, module in sorted(handlers().items()):
        ms = init_ms(python, layer_twin, handler_copy(module, functions), module, runs)
        built = BUILD / logical_id
        size = f"{size_mb(built) * 1000:.0f} KB" if built.exists() else "not built"
        print(f"{logical_id:24} {ms:8.0f}  {size:>9}", flush=True)
    layer = BUILD / "MailCoreLayer"
    if layer.exists():
        print(f"{'MailCoreLayer (unzipped)':24} {size_mb(layer):8.1f} MB")
    else:
        print("MailCoreLayer: not built (run `make sam-build`)")
    print(f"(median of {runs} runs each; the targets are in {TARGETS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
