"""``make local``: start the whole pipeline on this machine, in the foreground.

Order of start: the data directory (and its lock), Redis, the SMTP capture
server, moto's SQS, the handler modules (their cold starts read the
environment set up before), then the HTTP API, the attempt worker's pump and
the scheduled functions. Order of stop (Ctrl-C or SIGTERM): no more HTTP
(requests in flight finish), the scheduled runs end (their remaining time
drops to 0), the worker finishes its batch and what is queued, then moto,
the capture server and Redis (``SHUTDOWN``, so the AOF is complete).
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import os
import secrets
import signal
import sys
import threading
import time
import warnings
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from scripts.local_stack import logs
from scripts.local_stack.attempt_queue import DUMMY_CREDENTIALS, LocalSqs, WorkerPump
from scripts.local_stack.http_api import STAGE, LocalApiServer, RouteTable, build_routes
from scripts.local_stack.lambda_runtime import (
    LambdaFunction,
    load_function,
    put_code_on_path,
    region,
)
from scripts.local_stack.redis_server import (
    LocalRedis,
    RedisStartError,
    check_external_redis,
    start_redis,
)
from scripts.local_stack.sam_template import (
    EVERY_MINUTE_S,
    ROOT,
    FunctionSpec,
    SamTemplate,
    Schedule,
    TemplateError,
)
from scripts.local_stack.schedules import ScheduledRunner
from scripts.local_stack.smtp_capture import DEFAULT_PORT as DEFAULT_SMTP_PORT
from scripts.local_stack.smtp_capture import CaptureStartError, SmtpCapture

DEFAULT_API_PORT = 3000
DEFAULT_DATA_DIR = ROOT / ".local"
DEFAULT_REGION = "us-east-1"
STREAM_DEFAULT = "mail:delivery_commands"
HTTP_DRAIN_TIMEOUT_S = 30.0
BANNER_END = "Ctrl-C stops everything."

# What the capture server needs from the handlers; each only when not set already.
CAPTURE_SMTP_DEFAULTS = {
    "MAIL_SMTP_TLS": "none",
    "MAIL_SMTP_FROM_EMAIL": "noreply@mail.localhost.test",
    "MAIL_SMTP_FROM_NAME": "Mail (local)",
}
# What template.yaml gives every function (Globals.Function.Environment).
POWERTOOLS_DEFAULTS = {
    "POWERTOOLS_SERVICE_NAME": "mail",
    "POWERTOOLS_METRICS_NAMESPACE": "MailService",
}

# The functions, by handler module; cleanup is optional (it may not exist yet).
API_MODULES = ("intake_api", "operator_api")
SCHEDULED_MODULES = ("stream_poller", "scheduler", "cleanup")
OPTIONAL_MODULES = frozenset({"cleanup"})
WORKER_MODULE = "attempt_worker"


# The stack's own settings (besides LOCAL_REDIS_DIR, which start() says is no longer read).
LOCAL_VARIABLES = ("LOCAL_API_PORT", "LOCAL_SMTP_PORT", "LOCAL_DATA_DIR", logs.LOG_FORMAT_VARIABLE)


class StartError(RuntimeError):
    """The stack cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class LocalOptions:
    """The ``LOCAL_*`` settings of the stack itself (``MAIL_*`` ones go to the handlers)."""

    api_port: int = DEFAULT_API_PORT
    smtp_port: int = DEFAULT_SMTP_PORT
    data_dir: Path = DEFAULT_DATA_DIR
    log_format: logs.LogFormat = logs.LogFormat.HUMAN

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str]) -> LocalOptions:
        check_variable_names(environ)
        return cls(
            api_port=_port(environ, "LOCAL_API_PORT", DEFAULT_API_PORT),
            smtp_port=_port(environ, "LOCAL_SMTP_PORT", DEFAULT_SMTP_PORT),
            data_dir=Path(environ.get("LOCAL_DATA_DIR") or DEFAULT_DATA_DIR).resolve(),
            log_format=_log_format(environ),
        )

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"


def check_variable_names(environ: MutableMapping[str, str]) -> None:
    """Refuse a misspelt ``MAIL_*`` or ``LOCAL_*`` name before anything starts.

    The functions refuse an unknown ``MAIL_*`` name at their cold start too,
    but by then Redis, the capture server and SQS would have been started
    on the wrong assumptions (a misspelt ``MAIL_SMTP_MODE`` is not stub mode).
    ``LOCAL_*`` is a less private prefix (other tools set ``LOCAL_RANK``), so
    only a name close to one of the stack's is taken for a typo.
    """
    from mailcore.config import unknown_variables

    problems = []
    for name in sorted(environ):
        if not name.startswith("LOCAL_") or name in LOCAL_VARIABLES:
            continue
        close = difflib.get_close_matches(name, LOCAL_VARIABLES, n=1, cutoff=0.8)
        if close:
            problems.append(
                f"{name} is not a setting of the local stack (did you mean {close[0]}?)"
            )
    problems += unknown_variables(environ)
    if problems:
        raise StartError("invalid configuration: " + "; ".join(problems))


def _port(environ: MutableMapping[str, str], name: str, default: int) -> int:
    value = (environ.get(name) or "").strip()
    if not value:
        return default
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise StartError(f"{name} must be a TCP port (1-65535), not {value!r}")
    return int(value)


def _log_format(environ: MutableMapping[str, str]) -> logs.LogFormat:
    value = (environ.get(logs.LOG_FORMAT_VARIABLE) or "").strip().lower()
    if not value:
        return logs.LogFormat.HUMAN
    try:
        return logs.LogFormat(value)
    except ValueError:
        choices = " or ".join(choice.value for choice in logs.LogFormat)
        raise StartError(f"{logs.LOG_FORMAT_VARIABLE} must be {choices}, not {value!r}") from None


def smtp_mode_is_stub(environ: MutableMapping[str, str]) -> bool:
    return (environ.get("MAIL_SMTP_MODE") or "").strip().lower() == "stub"


def configure_handler_environment(
    environ: MutableMapping[str, str],
    *,
    redis_addr: str | None,
    capture_addr: str | None,
    sqs_endpoint: str,
    queue_url: str,
) -> list[str]:
    """Set what the handlers read, keeping every ``MAIL_*`` the user set; returns notes.

    ``redis_addr`` and ``capture_addr`` are the servers the stack started
    (None when the environment names its own).
    """
    notes: list[str] = []
    if redis_addr is not None:
        environ["MAIL_REDIS_ADDR"] = redis_addr
    if not environ.get("MAIL_SMTP_MODE"):
        environ["MAIL_SMTP_MODE"] = "smtp"
    if capture_addr is not None:
        environ["MAIL_SMTP_ADDR"] = capture_addr
        for name, value in CAPTURE_SMTP_DEFAULTS.items():
            if not environ.get(name):
                environ[name] = value
    for name, value in POWERTOOLS_DEFAULTS.items():
        if not environ.get(name):
            environ[name] = value
    # The attempt queue is always the local one: the worker pump reads it.
    given_queue = environ.get("MAIL_ATTEMPT_QUEUE_URL")
    if given_queue and given_queue != queue_url:
        notes.append(f"MAIL_ATTEMPT_QUEUE_URL={given_queue} is ignored: the local queue is used")
    environ["MAIL_ATTEMPT_QUEUE_URL"] = queue_url
    # boto3's standard per-service endpoint variable: SQS calls go to moto.
    environ["AWS_ENDPOINT_URL_SQS"] = sqs_endpoint
    if not environ.get("AWS_ACCESS_KEY_ID") and not environ.get("AWS_PROFILE"):
        environ.update(DUMMY_CREDENTIALS)
    if not environ.get("AWS_DEFAULT_REGION"):
        environ["AWS_DEFAULT_REGION"] = environ.get("AWS_REGION") or DEFAULT_REGION
    if not environ.get("AWS_REGION"):
        environ["AWS_REGION"] = environ["AWS_DEFAULT_REGION"]
    return notes


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold ``<data dir>/.lock`` while running: two stacks must not share one Redis AOF."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = (data_dir / ".lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StartError(
            f"another local stack is using {data_dir}; stop it, or set LOCAL_DATA_DIR "
            "to another directory"
        ) from None
    return handle


def spec_of(template: SamTemplate, module: str) -> FunctionSpec:
    spec = template.function_for_module(module)
    if spec is not None:
        return spec
    if module in OPTIONAL_MODULES:
        # Not in the template yet: run it on Globals' settings.
        return template.default_function(f"{module.title().replace('_', '')}Function", module)
    raise StartError(f"template.yaml has no function with a {module}.* handler")


def function_specs(template: SamTemplate) -> tuple[dict[str, FunctionSpec], list[FunctionSpec]]:
    """The functions to run, by handler module, and the optional ones whose code is missing."""
    specs: dict[str, FunctionSpec] = {}
    missing: list[FunctionSpec] = []
    for module in (*API_MODULES, *SCHEDULED_MODULES, WORKER_MODULE):
        spec = spec_of(template, module)
        if module in OPTIONAL_MODULES and not (spec.code_dir / f"{module}.py").is_file():
            missing.append(spec)
        else:
            specs[module] = spec
    return specs, missing


@dataclass
class LocalStack:
    options: LocalOptions
    stop: threading.Event = field(default_factory=threading.Event)
    lock: IO[str] | None = None
    redis: LocalRedis | None = None
    capture: SmtpCapture | None = None
    sqs: LocalSqs | None = None
    http: LocalApiServer | None = None
    http_thread: threading.Thread | None = None
    pump: WorkerPump | None = None
    runners: list[ScheduledRunner] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    # The MAIL_* variables the user set (the banner tells them from the stack's own).
    given_settings: frozenset[str] = frozenset()

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        """Start every part; raises StartError (parts already started are left to stop())."""
        environ = os.environ
        options = self.options
        if environ.get("LOCAL_REDIS_DIR"):
            note = f"Redis keeps its data in {options.redis_dir} (LOCAL_DATA_DIR sets the base)"
            print(f"note: LOCAL_REDIS_DIR is no longer read; {note}", flush=True)
        try:
            template = SamTemplate.load()
        except TemplateError as error:
            raise StartError(str(error)) from error
        self.lock = lock_data_dir(options.data_dir)
        # Bound first, so a port in use fails the start at once; routed once loaded.
        try:
            self.http = LocalApiServer(("127.0.0.1", options.api_port), RouteTable([]))
        except OSError as error:
            raise StartError(
                f"cannot serve HTTP on 127.0.0.1:{options.api_port}: {error.strerror} "
                "(set LOCAL_API_PORT to another port)"
            ) from error

        redis_addr = None
        if not environ.get("MAIL_REDIS_ADDR"):
            # First, while this is the only thread (see start_redis).
            try:
                self.redis = start_redis(options.redis_dir)
            except RedisStartError as error:
                raise StartError(str(error)) from error
            redis_addr = self.redis.addr
        self._check_stop()

        capture_addr = None
        if not environ.get("MAIL_SMTP_ADDR") and not smtp_mode_is_stub(environ):
            self.capture = SmtpCapture(options.mail_dir, options.smtp_port)
            try:
                self.capture.start()
            except CaptureStartError as error:
                self.capture = None
                raise StartError(str(error)) from error
            capture_addr = self.capture.addr
        self._check_stop()

        worker_spec = spec_of(template, WORKER_MODULE)
        self.sqs = LocalSqs(template.queue_of(worker_spec), region())
        self.sqs.start()
        self.given_settings = frozenset(
            name for name, value in environ.items() if name.startswith("MAIL_") and value.strip()
        )
        for note in configure_handler_environment(
            environ,
            redis_addr=redis_addr,
            capture_addr=capture_addr,
            sqs_endpoint=self.sqs.endpoint,
            queue_url=self.sqs.queue_url,
        ):
            print(f"note: {note}", flush=True)
        self._check_stop()

        install_logging(options.log_format)
        functions = self._load_functions(template)
        if self.redis is None:
            check_external_redis(environ["MAIL_REDIS_ADDR"])
        self._check_stop()

        assert self.http is not None
        self.http.routes = build_routes(functions["intake_api"], functions["operator_api"])
        self.http_thread = threading.Thread(
            target=self.http.serve_forever, args=(0.1,), name="local-api"
        )
        self.http_thread.start()

        self.pump = WorkerPump(
            self.sqs.client(),
            self.sqs.queue_url,
            self.sqs.queue_arn,
            functions[WORKER_MODULE],
            batch_size=template.batch_size(worker_spec),
            region=region(),
        )
        self.pump.start()

        for module in SCHEDULED_MODULES:
            if module not in functions:
                continue
            spec = spec_of(template, module)
            schedules = template.schedules(spec) or [
                Schedule("EveryMinute", EVERY_MINUTE_S, "rate(1 minute)")
            ]
            for schedule in schedules:
                self.runners.append(ScheduledRunner(functions[module], schedule, self.stop))
        for runner in self.runners:
            runner.start()

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise StartError("stopped while starting")

    def _load_functions(self, template: SamTemplate) -> dict[str, LambdaFunction]:
        """Import every handler module (their cold starts), as Lambda would."""
        from mailcore.config import ConfigError

        specs, missing = function_specs(template)
        for spec in missing:
            print(f"note: {spec.logical_id} is not run: {spec.code_dir} has no {spec.module}.py",
                  flush=True)  # fmt: skip
            self.skipped.append(spec.logical_id)
        put_code_on_path(list(specs.values()))
        functions: dict[str, LambdaFunction] = {}
        for module, spec in specs.items():
            try:
                functions[module] = load_function(spec)
            except ConfigError as error:
                raise StartError(f"{spec.logical_id} cannot start: {error}") from error
        return functions

    # ------------------------------------------------------------------ run

    def wait(self) -> int:
        """Until Ctrl-C or SIGTERM (0), or until the stack's Redis dies (1)."""
        while not self.stop.wait(0.5):
            if self.redis is not None and not self.redis.alive():
                print(f"redis-server exited unexpectedly; see {self.redis.log_path}", flush=True)
                return 1
        print("\nstopping", flush=True)
        return 0

    # ------------------------------------------------------------------ stop

    def shutdown(self) -> None:
        """Stop what was started, in order, so no accepted work is lost."""
        self.stop.set()  # the scheduled runs' remaining time drops to 0 now
        if self.http is not None:
            if self.http_thread is not None:
                finished = self.http.stop_accepting(HTTP_DRAIN_TIMEOUT_S)
                self.http_thread.join()
                if not finished:
                    print("some HTTP requests were still running", flush=True)
            self.http.server_close()
            print("HTTP server stopped", flush=True)
        for runner in self.runners:
            runner.join()
        if self.runners:
            print("scheduled functions stopped", flush=True)
        if self.pump is not None:
            self.pump.finish()
        if self.sqs is not None:
            self.sqs.stop()
        if self.capture is not None:
            self.capture.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.lock is not None:
            self.lock.close()


def install_logging(log_format: logs.LogFormat) -> None:
    """Before the handlers' cold starts: their Powertools logger, and stdout for metrics."""
    from mailcore.telemetry import SERVICE_NAME

    logs.install(log_format, SERVICE_NAME, sys.stdout)
    if log_format is logs.LogFormat.HUMAN:
        sys.stdout = logs.EmfAsText(sys.stdout)


# --------------------------------------------------------------------------- the banner

SECRET_SHOWN_AS = "***"  # noqa: S105  # nosec B105  # a mask, not a password


def changed_settings(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(variable, value)`` of every ``MAIL_*`` setting that is not at its default.

    Derived from the settings model, so a new setting is shown without a
    change here; the value is the variable as set, or ``***`` for a secret.
    """
    from pydantic import SecretStr

    from mailcore.config import Settings

    settings = Settings.from_environ(environ)
    changed = []
    for name, info in Settings.model_fields.items():
        variable = str(info.alias)
        if not variable.startswith("MAIL_"):
            continue
        value = getattr(settings, name)
        if not info.is_required() and value == info.get_default(call_default_factory=True):
            continue
        if isinstance(value, SecretStr):
            shown = SECRET_SHOWN_AS
        else:
            shown = (environ.get(variable) or "").strip() or str(value)
        changed.append((variable, shown))
    return sorted(changed)


def settings_lines(environ: Mapping[str, str], given: frozenset[str]) -> list[str]:
    lines = ["  settings  every MAIL_* setting not at its default (docs/configuration.md):"]
    for variable, value in changed_settings(environ):
        origin = "" if variable in given else "  (set by make local)"
        lines.append(f"            {variable}={value}{origin}")
    return lines


def mailctl_command() -> str:
    script = Path(sys.executable).with_name("mailctl")
    if not script.exists():
        return f"{sys.executable} -m mailctl"
    with contextlib.suppress(ValueError):
        return str(script.relative_to(Path.cwd()))
    return str(script)


def banner(stack: LocalStack) -> str:
    environ = os.environ
    options = stack.options
    api_url = f"http://127.0.0.1:{options.api_port}"
    redis_addr = environ["MAIL_REDIS_ADDR"]
    stream = environ.get("MAIL_REDIS_COMMAND_STREAM") or STREAM_DEFAULT
    lines = ["", "mail service running locally", ""]

    if stack.redis is not None:
        lines.append(f"  redis     {redis_addr}  data {options.redis_dir} (AOF, kept across runs)")
    else:
        lines.append(f"  redis     {redis_addr}  (MAIL_REDIS_ADDR, not managed here)")
    if stack.capture is not None:
        lines += [
            f"  smtp      {stack.capture.addr}  capture server; mail in {options.mail_dir}/",
            "            recipients tempfail-once…@ get 451 once, tempfail-always…@ 451 "
            "every time, reject…@ 550",
        ]
    elif smtp_mode_is_stub(environ):
        lines.append("  smtp      none: MAIL_SMTP_MODE=stub sends nothing")
    else:
        lines.append(f"  smtp      {environ['MAIL_SMTP_ADDR']}  (MAIL_SMTP_ADDR, not managed here)")
    if stack.sqs is not None:
        redrive = stack.sqs.spec.max_receive_count
        lines += [
            f"  sqs       {stack.sqs.endpoint}  (moto; AWS_ENDPOINT_URL_SQS)",
            f"  queue     {stack.sqs.queue_url}"
            + (f"  (to its DLQ after {redrive} receives)" if redrive else ""),
        ]
    lines.append(f"  API       {api_url}  (stage {STAGE!r}, no SigV4 locally)")
    scheduled = ", ".join(
        f"{runner.function.name} every {runner.schedule.every_s:g}s" for runner in stack.runners
    )
    lines.append(f"  runs      {scheduled}")
    if stack.pump is not None:
        lines.append("            AttemptWorkerFunction on each batch from the queue")
    for skipped in stack.skipped:
        lines.append(f"            ({skipped} is not run: its handler does not exist yet)")
    lines.append(f"  stream    {stream}")
    if options.log_format is logs.LogFormat.HUMAN:
        lines.append(
            f"  logs      one line per event and per metrics flush; "
            f"{logs.LOG_FORMAT_VARIABLE}=json prints Powertools' JSON and the EMF documents"
        )
    else:
        lines.append(
            f"  logs      {logs.LOG_FORMAT_VARIABLE}=json: Powertools' JSON lines and EMF "
            "documents, as CloudWatch Logs gets them"
        )
    lines += settings_lines(environ, stack.given_settings)

    key = f"local-demo-{secrets.token_hex(4)}"
    body = '{"email":"ada@example.com","code":"482913","locale":"en"}'
    arrives = (
        f"the mail lands in {options.mail_dir}/ within a second"
        if stack.capture is not None
        else "stub mode answers suppressed and sends nothing"
        if smtp_mode_is_stub(environ)
        else f"it is sent to {environ.get('MAIL_SMTP_ADDR')}"
    )
    lines += [
        "",
        f"try it ({arrives}; the same request again answers Idempotent-Replayed: true):",
        f"  curl -i -X POST {api_url}/api/v1/internal/login-code-deliveries \\",
        f"    -H 'Content-Type: application/json' -H 'Idempotency-Key: {key}' \\",
        f"    -d '{body}'",
        "",
        "read it back as an operator:",
        f"  {mailctl_command()} --api {api_url} deliveries list",
        "",
        "publish a generic mail command, as the Notification service would:",
    ]
    host, _, port = redis_addr.rpartition(":")
    demo = f"demo-{secrets.token_hex(4)}"
    payload = '{"to":["ada@example.com"],"subject":"Hello","text_body":"Hi Ada"}'
    lines += [
        f"  redis-cli -h {host} -p {port} XADD {stream} '*' \\",
        f"    delivery_id {demo} source notification payload_mode rendered \\",
        f"    idempotency_key {demo} requested_at_ms {time.time_ns() // 1_000_000} \\",
        f"    payload_json '{payload}'",
        "",
        BANNER_END,
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main() -> int:
    # Powertools warns on every invocation that adds no metric (most scheduled
    # runs): in a terminal that is noise, not news.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    try:
        options = LocalOptions.from_environ(os.environ)
    except StartError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stack = LocalStack(options)

    # Installed first, so a Ctrl-C during start-up still ends in an orderly stop.
    def request_stop(signum: int, frame: FrameType | None) -> None:
        if stack.stop.is_set():
            # A second Ctrl-C: stop now. redis-server gets SIGTERM from the
            # kernel as its parent dies, and still writes its AOF.
            print("\nstopping at once", file=sys.stderr, flush=True)
            os._exit(1)
        stack.stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        try:
            stack.start()
        except StartError as error:
            if stack.stop.is_set():
                return 0
            print(f"error: {error}", file=sys.stderr, flush=True)
            return 1
        print(banner(stack), flush=True)
        return stack.wait()
    finally:
        stack.shutdown()
