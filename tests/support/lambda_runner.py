"""Run a handler in a fresh process, as the Lambda runtime would.

``python -m tests.support.lambda_runner MODULE EVENTS_JSON ANSWERS_JSON [TIMEOUT_MS]``
cold-starts ``MODULE`` with the inherited environment, invokes its ``handler``
with each event of the list in EVENTS_JSON (each with a fresh context of
TIMEOUT_MS, default 10 s), and writes the answers to ANSWERS_JSON.
Everything the function prints (logs, EMF metrics) goes to this process's
stdout and stderr, exactly what CloudWatch would receive.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.lambda_context import FakeLambdaContext

REPO_ROOT = Path(__file__).resolve().parents[2]


def function_path(module: str) -> str:
    """What Lambda puts on the path: the layer (its /opt/python) and the function's code."""
    return os.pathsep.join(
        [str(REPO_ROOT / "layers" / "mailcore"), str(REPO_ROOT / "functions" / module)]
    )


def invoke_in_fresh_process(
    module: str,
    work_dir: Path,
    environment: dict[str, str],
    events: list[dict[str, Any]],
    timeout_ms: int = 10_000,
) -> tuple[list[dict[str, Any]], str]:
    """Cold-start ``module`` in its own process; return its answers and all it printed."""
    events_file, answers_file = work_dir / f"{module}-events.json", work_dir / f"{module}.json"
    events_file.write_text(json.dumps(events))
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("MAIL_", "POWERTOOLS_"))}
    arguments = [module, str(events_file), str(answers_file), str(timeout_ms)]
    completed = subprocess.run(
        [sys.executable, "-m", "tests.support.lambda_runner", *arguments],
        env={**inherited, "PYTHONPATH": function_path(module), **environment},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    answers: list[dict[str, Any]] = json.loads(answers_file.read_text())
    return answers, completed.stdout + completed.stderr


def main(module_name: str, events_path: str, answers_path: str, timeout_ms: str = "10000") -> None:
    module = importlib.import_module(module_name)
    events = json.loads(Path(events_path).read_text())
    answers = [
        module.handler(event, FakeLambdaContext(timeout_ms=int(timeout_ms))) for event in events
    ]
    Path(answers_path).write_text(json.dumps(answers, default=dict))


if __name__ == "__main__":
    main(*sys.argv[1:5])
