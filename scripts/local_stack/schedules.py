"""The scheduled functions (stream poller, scheduler, cleanup), invoked as EventBridge would.

Each runs on its own thread: at start, and then on its rule's rate (every
minute), it is invoked with the scheduled event and a context whose remaining
time counts down from the function's Timeout in template.yaml. The handlers
loop until shortly before that timeout; when the stack stops, the remaining
time drops to 0 at once and the run ends at its next check.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from scripts.local_stack.lambda_runtime import ACCOUNT_ID, LambdaFunction, region
from scripts.local_stack.sam_template import Schedule


def scheduled_event(rule: str) -> dict[str, Any]:
    """The EventBridge scheduled event, as in ``events/scheduler_scheduled.json``."""
    here = region()
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": here,
        "resources": [f"arn:aws:events:{here}:{ACCOUNT_ID}:rule/{rule}"],
        "detail": {},
    }


class ScheduledRunner:
    """Invokes one function on its schedule until ``stop`` is set."""

    def __init__(self, function: LambdaFunction, schedule: Schedule, stop: threading.Event) -> None:
        self.function = function
        self.schedule = schedule
        self._stop = stop
        self._thread = threading.Thread(target=self._run, name=f"schedule-{function.name}")
        self.runs = 0

    @property
    def rule(self) -> str:
        return f"mail-local-{self.function.name}-{self.schedule.rule_name}"

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            # An invocation that fails is logged; the next tick comes anyway.
            self.function.invoke_logged(scheduled_event(self.rule), self._stop)
            self.runs += 1
            self._stop.wait(max(0.0, self.schedule.every_s - (time.monotonic() - started)))
