"""What the local stack takes from template.yaml: timeouts, schedules, the queue's settings.

The template is read with cfn-lint's decoder (the one ``sam validate --lint``
uses), so the local stack never hard-codes a number the deployed stack gets
from the template: a function's Timeout and MemorySize (or the Globals'),
the rate of its Schedule events, the SQS event's BatchSize, and the attempt
queue's visibility timeout, retention and redrive policy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"

# Lambda's own defaults, for what neither the function nor Globals sets.
LAMBDA_DEFAULT_TIMEOUT_S = 3
LAMBDA_DEFAULT_MEMORY_MB = 128
SQS_DEFAULT_BATCH_SIZE = 10
SQS_RECEIVE_LIMIT = 10  # ReceiveMessage returns at most ten messages
SQS_DEFAULT_VISIBILITY_TIMEOUT_S = 30
SQS_DEFAULT_RETENTION_S = 345_600
EVERY_MINUTE_S = 60.0

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_S = {"minute": 60, "hour": 3600, "day": 86400}


class TemplateError(ValueError):
    """template.yaml cannot be read, or lacks what the local stack needs."""


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str  # e.g. SchedulerFunction
    module: str  # the handler module, e.g. scheduler
    attribute: str  # the handler function in it, e.g. handler
    code_dir: Path  # CodeUri: what Lambda puts on sys.path
    timeout_s: int
    memory_mb: int
    events: Mapping[str, Any]


@dataclass(frozen=True)
class Schedule:
    rule_name: str  # the Schedule event's name in the template, e.g. EveryMinute
    every_s: float
    expression: str


@dataclass(frozen=True)
class QueueSpec:
    logical_id: str
    visibility_timeout_s: int
    retention_s: int
    max_receive_count: int | None  # None: no redrive policy
    dead_letter: QueueSpec | None


def _number(value: Any, default: int) -> int:
    """An int the template states literally; a parameter reference gets the default."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return default


def parse_rate(expression: str) -> float | None:
    """Seconds between runs for ``rate(N unit)``; None for cron or anything else."""
    found = _RATE.match(expression.strip())
    if found is None:
        return None
    return float(int(found.group(1)) * _UNIT_S[found.group(2).removesuffix("s")])


class SamTemplate:
    def __init__(self, template: Mapping[str, Any], root: Path = ROOT) -> None:
        self._template = template
        self._root = root
        self._resources: Mapping[str, Any] = template.get("Resources", {})
        globals_ = template.get("Globals", {}) or {}
        self._global_function: Mapping[str, Any] = globals_.get("Function", {}) or {}

    @classmethod
    def load(cls, path: Path = TEMPLATE_PATH) -> SamTemplate:
        # cfn-lint's decoder (it reads !Ref and friends) costs about a second
        # to import; only loading the template needs it.
        from cfnlint.decode import decode

        template, problems = decode(str(path))
        if template is None or problems:
            details = "; ".join(str(problem) for problem in problems or [])
            raise TemplateError(f"cannot read {path}: {details or 'empty template'}")
        return cls(template, path.parent)

    # ------------------------------------------------------------------ functions

    def functions(self) -> list[FunctionSpec]:
        return [
            self._function(name, resource.get("Properties", {}) or {})
            for name, resource in self._resources.items()
            if resource.get("Type") == "AWS::Serverless::Function"
        ]

    def function_for_module(self, module: str) -> FunctionSpec | None:
        """The function whose Handler lives in ``module`` (module names are unique)."""
        return next((spec for spec in self.functions() if spec.module == module), None)

    def default_function(self, logical_id: str, module: str) -> FunctionSpec:
        """A function the template does not declare (yet): Globals and Lambda defaults."""
        return self._function(
            logical_id, {"Handler": f"{module}.handler", "CodeUri": f"functions/{module}"}
        )

    def _function(self, logical_id: str, properties: Mapping[str, Any]) -> FunctionSpec:
        handler = str(properties.get("Handler") or self._global_function.get("Handler", ""))
        module, _, attribute = handler.rpartition(".")
        code_uri = properties.get("CodeUri") or self._global_function.get("CodeUri") or "."
        return FunctionSpec(
            logical_id=logical_id,
            module=module,
            attribute=attribute or "handler",
            code_dir=(self._root / str(code_uri)).resolve(),
            timeout_s=_number(
                properties.get("Timeout", self._global_function.get("Timeout")),
                LAMBDA_DEFAULT_TIMEOUT_S,
            ),
            memory_mb=_number(
                properties.get("MemorySize", self._global_function.get("MemorySize")),
                LAMBDA_DEFAULT_MEMORY_MB,
            ),
            events=properties.get("Events", {}) or {},
        )

    @staticmethod
    def schedules(function: FunctionSpec) -> list[Schedule]:
        """The function's EventBridge schedules; a cron one is run every minute."""
        found = []
        for name, event in function.events.items():
            properties = event.get("Properties", {}) or {}
            if event.get("Type") == "Schedule":
                expression = str(properties.get("Schedule", ""))
            elif event.get("Type") == "ScheduleV2":
                expression = str(properties.get("ScheduleExpression", ""))
            else:
                continue
            every = parse_rate(expression)
            found.append(Schedule(name, every if every is not None else EVERY_MINUTE_S, expression))
        return found

    # ------------------------------------------------------------------ the attempt queue

    @staticmethod
    def sqs_event(function: FunctionSpec) -> Mapping[str, Any]:
        for event in function.events.values():
            if event.get("Type") == "SQS":
                return dict(event.get("Properties", {}) or {})
        raise TemplateError(f"{function.logical_id} has no SQS event")

    def batch_size(self, function: FunctionSpec) -> int:
        size = _number(self.sqs_event(function).get("BatchSize"), SQS_DEFAULT_BATCH_SIZE)
        return max(1, min(size, SQS_RECEIVE_LIMIT))

    def queue_of(self, function: FunctionSpec) -> QueueSpec:
        """The queue the function's SQS event reads (``!GetAtt <Queue>.Arn``)."""
        return self.queue(self._logical_id_of(self.sqs_event(function).get("Queue")))

    def queue(self, logical_id: str) -> QueueSpec:
        resource = self._resources.get(logical_id)
        if resource is None or resource.get("Type") != "AWS::SQS::Queue":
            raise TemplateError(f"{logical_id} is not an AWS::SQS::Queue in the template")
        properties = resource.get("Properties", {}) or {}
        redrive = properties.get("RedrivePolicy") or {}
        dead_letter = None
        max_receive_count = None
        if redrive:
            dead_letter = self.queue(self._logical_id_of(redrive.get("deadLetterTargetArn")))
            max_receive_count = _number(redrive.get("maxReceiveCount"), 0) or None
        return QueueSpec(
            logical_id=logical_id,
            visibility_timeout_s=_number(
                properties.get("VisibilityTimeout"), SQS_DEFAULT_VISIBILITY_TIMEOUT_S
            ),
            retention_s=_number(properties.get("MessageRetentionPeriod"), SQS_DEFAULT_RETENTION_S),
            max_receive_count=max_receive_count,
            dead_letter=dead_letter,
        )

    @staticmethod
    def _logical_id_of(reference: Any) -> str:
        """``{"Fn::GetAtt": ["Queue", "Arn"]}`` or ``{"Ref": "Queue"}`` → ``Queue``."""
        if isinstance(reference, Mapping):
            if "Fn::GetAtt" in reference:
                target = reference["Fn::GetAtt"]
                return str(target[0] if isinstance(target, list) else target.split(".")[0])
            if "Ref" in reference:
                return str(reference["Ref"])
        raise TemplateError(f"expected a reference to a queue in the template, got {reference!r}")
