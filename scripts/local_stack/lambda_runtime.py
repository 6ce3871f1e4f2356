"""Lambda's side of the local stack: import handler modules, invoke them with a context.

Lambda puts a function's CodeUri folder (``functions/<name>``) and the
layer's content (``/opt/python``, built from ``layers/mailcore``) on
``sys.path`` and imports the module its ``Handler`` names; importing it is
the cold start. The stack does the same in-process, so each handler module
runs exactly as it does in AWS, once per stack: one warm environment per
function. What a function logs, at its cold start and in each invocation,
is that function's (``logs.running_as``), though all share one process.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scripts.local_stack.logs import FunctionLog, running_as
from scripts.local_stack.sam_template import (
    LAMBDA_DEFAULT_MEMORY_MB,
    LAMBDA_DEFAULT_TIMEOUT_S,
    ROOT,
    FunctionSpec,
)

ACCOUNT_ID = "123456789012"  # the placeholder account of the sample events (and moto's)
LAYER_DIR = ROOT / "layers" / "mailcore"

Handler = Callable[[dict[str, Any], Any], Any]


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


@dataclass(frozen=True)
class LocalLambdaContext:
    """The parts of Lambda's context object that handlers and Powertools read.

    With ``stop`` given, the remaining time drops to 0 as soon as it is set:
    that is how a long-running scheduled invocation learns the stack is
    stopping, and it ends the way it ends when its timeout nears.
    """

    function_name: str
    aws_request_id: str
    deadline_monotonic: float
    memory_limit_in_mb: int = LAMBDA_DEFAULT_MEMORY_MB
    function_version: str = "$LATEST"
    stop: threading.Event | None = field(default=None, compare=False)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{region()}:{ACCOUNT_ID}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"local/[{self.function_version}]{self.aws_request_id}"

    def get_remaining_time_in_millis(self) -> int:
        if self.stop is not None and self.stop.is_set():
            return 0
        return max(0, int((self.deadline_monotonic - time.monotonic()) * 1000))


@dataclass(frozen=True)
class LambdaFunction:
    """One function's warm execution environment: its handler, limits and a lock.

    One Lambda execution environment handles one event at a time, and the
    handler modules rely on that (Powertools keeps the current event and the
    metrics buffer in module globals). Invocations of one function, whatever
    the route or trigger, are therefore serialized, as one warm environment
    would run them. ``log`` is that environment's logging state: its lines
    carry its own name and the keys it appended.
    """

    name: str  # the function's logical id in template.yaml
    handler: Handler
    timeout_s: float = LAMBDA_DEFAULT_TIMEOUT_S
    memory_mb: int = LAMBDA_DEFAULT_MEMORY_MB
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False)
    log: FunctionLog | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.log is None:
            object.__setattr__(self, "log", FunctionLog(self.name))

    def context(self, stop: threading.Event | None = None) -> LocalLambdaContext:
        return LocalLambdaContext(
            function_name=self.name,
            aws_request_id=str(uuid.uuid4()),
            deadline_monotonic=time.monotonic() + self.timeout_s,
            memory_limit_in_mb=self.memory_mb,
            stop=stop,
        )

    def invoke(self, event: dict[str, Any], stop: threading.Event | None = None) -> Any:
        """Run the handler on one event with a fresh context; its exceptions propagate."""
        log = self.log or FunctionLog(self.name)
        with self.lock, running_as(log):
            log.begin_invocation()
            return self.handler(event, self.context(stop))

    def invoke_logged(self, event: dict[str, Any], stop: threading.Event | None = None) -> Any:
        """Like :meth:`invoke`, but an exception is printed (as Lambda logs it) and is None."""
        try:
            return self.invoke(event, stop)
        except Exception:
            print(f"{self.name} failed:", file=sys.stderr, flush=True)
            traceback.print_exc()
            return None


def put_code_on_path(functions: list[FunctionSpec]) -> None:
    """The layer and every function's CodeUri on ``sys.path``, as Lambda arranges them."""
    for folder in (LAYER_DIR, *(spec.code_dir for spec in functions)):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


def load_function(spec: FunctionSpec) -> LambdaFunction:
    """Import the handler module (its cold start) and wrap its handler."""
    log = FunctionLog(spec.module)
    with running_as(log):
        module = importlib.import_module(spec.module)
    handler: Handler = getattr(module, spec.attribute)
    return LambdaFunction(spec.logical_id, handler, spec.timeout_s, spec.memory_mb, log=log)
