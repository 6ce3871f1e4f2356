"""Run a handler in a fresh process, as the Lambda runtime would.

``python -m tests.support.lambda_runner MODULE EVENTS_JSON ANSWERS_JSON`` cold-starts
``MODULE`` with the inherited environment, invokes its ``handler`` with each
event of the list in EVENTS_JSON, and writes the answers to ANSWERS_JSON.
Everything the function prints (logs, EMF metrics) goes to this process's
stdout and stderr, exactly what CloudWatch would receive.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from tests.support.lambda_context import FakeLambdaContext


def main(module_name: str, events_path: str, answers_path: str) -> None:
    module = importlib.import_module(module_name)
    events = json.loads(Path(events_path).read_text())
    answers = [module.handler(event, FakeLambdaContext()) for event in events]
    Path(answers_path).write_text(json.dumps(answers, default=dict))


if __name__ == "__main__":
    main(*sys.argv[1:4])
