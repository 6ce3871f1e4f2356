"""One part of the end-to-end pipeline in its own process: SQS, or one Lambda instance.

    python bench/_lambda_instance.py sqs '<queue spec as JSON>'
    python bench/_lambda_instance.py function '<function spec as JSON>'

``bench/end_to_end.py`` reads template.yaml once (:func:`sqs_spec`,
:func:`function_spec`) and starts these where AWS would run separate
instances, so each has its own interpreter (and its own GIL), with the
``MAIL_*`` and AWS settings in its environment:

- ``sqs``: moto's SQS server with the attempt queue and its dead-letter queue
  as template.yaml declares them (the local stack's ``LocalSqs``), with
  ``bench/_moto_speedups.py`` applied so that moto's own bookkeeping does not
  slow down as the queue grows;
- ``function``: imports the handler module as Lambda does (the cold start),
  then runs it as the local stack does: the stream poller and the scheduler
  invoked on their EventBridge schedule with a context counting down from
  the function's Timeout (``ScheduledRunner``); the attempt worker fed
  batches of up to the event's BatchSize from the queue, as one execution
  environment of the SQS event source mapping (``WorkerPump``).

The protocol on stdin/stdout: when ready (for a function, after its cold
start) the process prints ``ready <json>``; from then on its file descriptor
1, where the handlers' logs and EMF metrics go, points at /dev/null (they are
produced as in Lambda, not kept). It starts on a ``go`` line on stdin and
stops when stdin closes: a scheduled run's remaining time drops to 0 at once,
the worker finishes its batch and what is still queued. Then it prints
``done <json>`` with its counters and exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from scripts.local_stack.attempt_queue import LocalSqs, WorkerPump, sqs_client
from scripts.local_stack.lambda_runtime import (
    load_function,
    put_code_on_path,
    region,
)
from scripts.local_stack.sam_template import (
    EVERY_MINUTE_S,
    FunctionSpec,
    QueueSpec,
    SamTemplate,
    Schedule,
)
from scripts.local_stack.schedules import ScheduledRunner

WORKER = "attempt_worker"
QUEUE_ARN = "BENCH_ATTEMPT_QUEUE_ARN"  # the worker's event source (the event's eventSourceARN)


# --------------------------------------------------------------------------- for the parent


def sqs_spec(template: SamTemplate) -> str:
    """The attempt queue (and its DLQ) as template.yaml declares them, as JSON."""
    spec = template.function_for_module(WORKER)
    if spec is None:
        raise SystemExit("template.yaml has no attempt_worker function")
    return json.dumps(dataclasses.asdict(template.queue_of(spec)))


def function_spec(template: SamTemplate, module: str) -> str:
    """What one function's instance needs from template.yaml, as JSON."""
    spec = template.function_for_module(module)
    if spec is None:
        raise SystemExit(f"template.yaml has no function with a {module}.* handler")
    schedules = template.schedules(spec) or [
        Schedule("EveryMinute", EVERY_MINUTE_S, "rate(1 minute)")
    ]
    return json.dumps(
        {
            "logical_id": spec.logical_id,
            "module": spec.module,
            "attribute": spec.attribute,
            "code_dir": str(spec.code_dir),
            "timeout_s": spec.timeout_s,
            "memory_mb": spec.memory_mb,
            "schedule": dataclasses.asdict(schedules[0]),
            "batch_size": template.batch_size(spec) if module == WORKER else None,
        }
    )


# --------------------------------------------------------------------------- in the child


def report_channel() -> IO[str]:
    """A copy of stdout for the protocol; fd 1 itself then goes to /dev/null."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    return channel


def say(channel: IO[str], word: str, details: dict[str, Any]) -> None:
    channel.write(f"{word} {json.dumps(details)}\n")
    channel.flush()


def queue_from(data: dict[str, Any]) -> QueueSpec:
    dead_letter = data.get("dead_letter")
    return QueueSpec(**(data | {"dead_letter": queue_from(dead_letter) if dead_letter else None}))


def run_sqs(spec: dict[str, Any], channel: IO[str]) -> dict[str, Any]:
    from bench import _moto_speedups

    _moto_speedups.apply()
    sqs = LocalSqs(queue_from(spec), region())
    sqs.start()
    say(
        channel,
        "ready",
        {"endpoint": sqs.endpoint, "queue_url": sqs.queue_url, "queue_arn": sqs.queue_arn},
    )
    sys.stdin.read()  # until the parent closes stdin
    attributes = (
        sqs.client()
        .get_queue_attributes(QueueUrl=sqs.queue_url, AttributeNames=["All"])
        .get("Attributes", {})
    )
    sqs.stop()
    return {"queue": attributes}


def run_function(data: dict[str, Any], channel: IO[str]) -> dict[str, Any] | None:
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    spec = FunctionSpec(
        logical_id=data["logical_id"],
        module=data["module"],
        attribute=data["attribute"],
        code_dir=Path(data["code_dir"]),
        timeout_s=data["timeout_s"],
        memory_mb=data["memory_mb"],
        events={},
    )
    put_code_on_path([spec])
    function = load_function(spec)  # the cold start
    say(channel, "ready", {"function": spec.logical_id})
    if sys.stdin.readline().strip() != "go":
        return None
    if spec.module == WORKER:
        pump = WorkerPump(
            sqs_client(os.environ["AWS_ENDPOINT_URL_SQS"], region()),
            os.environ["MAIL_ATTEMPT_QUEUE_URL"],
            os.environ[QUEUE_ARN],
            function,
            batch_size=data["batch_size"],
            region=region(),
        )
        pump.start()
        sys.stdin.read()
        pump.finish()
        return {
            "function": spec.logical_id,
            "batches": pump.batches,
            "records": pump.records,
            "failed": pump.failed,
        }
    stop = threading.Event()
    runner = ScheduledRunner(function, Schedule(**data["schedule"]), stop)
    runner.start()
    sys.stdin.read()
    stop.set()
    runner.join()
    return {"function": spec.logical_id, "invocations": runner.runs}


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in ("sqs", "function"):
        sys.exit("usage: python bench/_lambda_instance.py sqs|function '<spec as JSON>'")
    spec: dict[str, Any] = json.loads(sys.argv[2])
    channel = report_channel()
    done = run_sqs(spec, channel) if sys.argv[1] == "sqs" else run_function(spec, channel)
    if done is not None:
        with contextlib.suppress(BrokenPipeError):  # the parent is gone
            say(channel, "done", done)
    # Nothing is left to clean up (the servers are the parent's): skip the
    # interpreter's teardown, which takes a second with all that is imported.
    os._exit(0)


if __name__ == "__main__":
    main()
