"""Run the mail service on this machine: `make local`.

`sam local` needs Docker, which these machines do not have, so this script is
the local stack instead. It

1. starts a private, throwaway ``redis-server`` on a free port (unless
   ``MAIL_REDIS_ADDR`` points at one already),
2. imports the Lambda handler modules in-process, with the environment the
   SAM template gives them, and
3. serves HTTP on 127.0.0.1:3000, turning every request into the API Gateway
   REST proxy event the deployed API would send (see ``events/``) and the
   handler's answer back into an HTTP response: the intake, and the operator
   API when its handler module (``functions/operator_api``) can be imported.

Environment:
  MAIL_REDIS_ADDR    use this Redis (host:port) instead of starting one
  LOCAL_API_PORT     HTTP port (default 3000)
  LOCAL_REDIS_DIR    data directory of the private redis-server (default: a new
                     temporary one); pass an old one to pick up its data again
  MAIL_*             any other service setting, as in the deployed functions

Standard library only, plus the project's own dependencies from the venv.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_API_PORT = 3000
STAGE = "local"
ACCOUNT_ID = "123456789012"  # the placeholder account of the sample events
REGION = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
# What template.yaml gives every function (Globals.Function).
FUNCTION_MEMORY_MB = 512
FUNCTION_TIMEOUT_S = 10
STREAM_POLLER_TIMEOUT_S = 62  # template.yaml: StreamPollerFunction.Timeout
# API Gateway refuses payloads over 10 MB before any function runs.
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
REDIS_START_TIMEOUT_S = 10.0

# Defaults a deployed function gets from template.yaml (or that suit a laptop).
ENV_DEFAULTS = {
    "MAIL_SMTP_MODE": "stub",
    "POWERTOOLS_SERVICE_NAME": "mail",
    "POWERTOOLS_METRICS_NAMESPACE": "MailService",
}

Handler = Callable[[dict[str, Any], Any], Any]

LOGIN_CODE_RESOURCE = "/api/v1/internal/login-code-deliveries"
# The operator API's methods, as template.yaml declares them (OperatorApiFunction).
OPERATOR_ROUTES = (
    ("GET", "/api/v1/internal/deliveries"),
    ("GET", "/api/v1/internal/deliveries/{delivery_id}"),
    ("GET", "/api/v1/internal/deliveries/{delivery_id}/attempts"),
    ("POST", "/api/v1/internal/deliveries/{delivery_id}/resend"),
    ("GET", "/api/v1/internal/malformed-commands"),
    ("GET", "/api/v1/internal/malformed-commands/{stream_entry_id}"),
    ("GET", "/api/v1/internal/dead-letters"),
)


# --------------------------------------------------------------------------- redis-server


@dataclass
class LocalRedis:
    """A private redis-server child process and where it keeps its data."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        # No retries: after SHUTDOWN the closed connection is the expected answer,
        # and redis-py's default retry would spend seconds reconnecting to nothing.
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=2, retry=Retry(NoBackoff(), 0)
        )

    def stop(self) -> None:
        """Ask the server to shut down (it fsyncs its AOF first); force it if it will not."""
        if self.process.poll() is None:
            try:
                self.client().shutdown()
            except redis.RedisError as error:
                print(f"redis-server did not take SHUTDOWN ({error}); terminating it")
                self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        print(f"redis-server stopped; its data stays in {self.data_dir}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_with_parent() -> None:
    """Runs in the child before exec (Linux): SIGTERM it if this script dies, even by SIGKILL.

    redis-server takes SIGTERM as an orderly shutdown that flushes its AOF, so
    a crashed stack leaves its data behind but no orphaned server.
    """
    pr_set_pdeathsig = 1
    # Best effort: without it, an orphaned server would need stopping by hand.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def start_redis(data_dir: Path) -> LocalRedis:
    """Start redis-server on a free port and wait until it answers PING."""
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit("redis-server is not installed; run scripts/ensure-redis-server (or make setup)")
    log_path = data_dir / "redis-server.log"
    # A free port can be taken by someone else before redis-server binds it: try a few.
    for _ in range(3):
        port = free_port()
        command = [
            executable,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(data_dir),
            "--save", "",  # no RDB snapshots ...
            "--appendonly", "yes",  # ... but an AOF, so accepted work survives a crash
            "--logfile", str(log_path),
            "--daemonize", "no",
        ]  # fmt: skip
        # A session of its own: the terminal's Ctrl-C reaches only this script,
        # which then shuts redis-server down in order (after the HTTP server).
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=stop_with_parent if sys.platform == "linux" else None,
        )
        local = LocalRedis(process, port, data_dir)
        if wait_for_ping(local):
            return local
        if process.poll() is None:
            process.kill()
            process.wait()
    log_tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    sys.exit(f"redis-server did not start; its log ({log_path}) ends with:\n{log_tail}")


def wait_for_ping(local: LocalRedis) -> bool:
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    client = local.client()
    while time.monotonic() < deadline:
        if local.process.poll() is not None:
            return False  # exited: most likely the port was taken
        try:
            if client.ping():
                return True
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            pass  # not listening yet, or still loading its AOF
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- Lambda side


@dataclass(frozen=True)
class LambdaFunction:
    name: str  # the function's logical id in template.yaml
    handler: Handler
    # One Lambda execution environment handles one event at a time, and the
    # handler modules rely on that (Powertools keeps the current event and the
    # metrics buffer in module globals). Invocations of one function, whatever
    # the route, are therefore serialized, as one warm environment would be.
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False)


@dataclass(frozen=True)
class Route:
    method: str
    # The API Gateway resource path, as in template.yaml; a ``{name}`` segment
    # takes any one non-empty path segment and becomes a path parameter.
    resource: str
    function: LambdaFunction

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.resource.split("/")[1:])

    @property
    def specificity(self) -> tuple[int, ...]:
        """Sorts literal segments before parameters, left to right, as API Gateway prefers."""
        return tuple(1 if is_parameter(segment) else 0 for segment in self.segments)


def is_parameter(segment: str) -> bool:
    return segment.startswith("{") and segment.endswith("}")


def match_resource(segments: Sequence[str], path: str) -> dict[str, str] | None:
    """The path parameters (decoded) when ``path`` fits the resource's segments, else None."""
    given = path.split("/")[1:]
    if len(given) != len(segments):
        return None
    parameters: dict[str, str] = {}
    for template, raw in zip(segments, given, strict=True):
        if is_parameter(template):
            if not raw:
                return None
            parameters[template[1:-1]] = unquote(raw)
        elif raw != template:
            return None
    return parameters


@dataclass(frozen=True)
class Resolution:
    """What the API does with one request: a route, or the methods its resource has."""

    route: Route | None
    path_parameters: dict[str, str] | None = None
    allowed_methods: tuple[str, ...] = ()


class RouteTable:
    """API Gateway's routing: pick the most specific resource, then its method."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = sorted(routes, key=lambda route: route.specificity)

    @property
    def function_names(self) -> frozenset[str]:
        return frozenset(route.function.name for route in self.routes)

    def resolve(self, method: str, path: str) -> Resolution | None:
        """None for a path no resource fits (404); no route but methods for a wrong method."""
        for route in self.routes:
            parameters = match_resource(route.segments, path)
            if parameters is None:
                continue
            same_resource = [other for other in self.routes if other.resource == route.resource]
            for candidate in same_resource:
                if candidate.method == method:
                    return Resolution(candidate, parameters or None)
            return Resolution(None, allowed_methods=tuple(r.method for r in same_resource))
        return None


@dataclass(frozen=True)
class LocalLambdaContext:
    """The parts of Lambda's context object that handlers and Powertools read."""

    function_name: str
    aws_request_id: str
    deadline_monotonic: float
    memory_limit_in_mb: int = FUNCTION_MEMORY_MB
    function_version: str = "$LATEST"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"local/[{self.function_version}]{self.aws_request_id}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline_monotonic - time.monotonic()) * 1000))


def put_code_on_path() -> None:
    """Make the handler modules importable the way Lambda makes them importable.

    Lambda puts the function's CodeUri folder (``functions/<name>``) and the
    layer's content (``/opt/python``, built from ``layers/mailcore``) on
    ``sys.path`` and imports the module named by ``Handler``. Doing the same
    here imports each handler module exactly as it is imported in AWS.
    """
    for folder in (
        ROOT / "layers" / "mailcore",
        ROOT / "functions" / "intake_api",
        ROOT / "functions" / "operator_api",
        ROOT / "functions" / "stream_poller",
    ):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


OPERATOR_FUNCTION = "OperatorApiFunction"


def build_routes(intake: Handler, operator: Handler | None) -> RouteTable:
    """The API's routes: the intake's, and the operator API's when there is one."""
    routes = [Route("POST", LOGIN_CODE_RESOURCE, LambdaFunction("IntakeApiFunction", intake))]
    if operator is not None:
        function = LambdaFunction(OPERATOR_FUNCTION, operator)
        routes += [Route(method, resource, function) for method, resource in OPERATOR_ROUTES]
    return RouteTable(routes)


def load_routes() -> RouteTable:
    """Import the handler modules (their cold start) and map the API's routes to them."""
    intake_api = importlib.import_module("intake_api")
    try:
        operator_api = importlib.import_module("operator_api")
    except ModuleNotFoundError as error:
        print(f"note: the operator API is not served ({error}); only the intake is", flush=True)
        return build_routes(intake_api.handler, None)
    return build_routes(intake_api.handler, operator_api.handler)


@dataclass(frozen=True)
class ScheduledContext(LocalLambdaContext):
    """A context whose time runs out at once when the stack is stopping."""

    stop: threading.Event = field(default_factory=threading.Event, compare=False)

    def get_remaining_time_in_millis(self) -> int:
        return 0 if self.stop.is_set() else super().get_remaining_time_in_millis()


def scheduled_event() -> dict[str, Any]:
    """The EventBridge scheduled event, as in events/stream_poller_scheduled.json."""
    now = time.time()
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/local-every-minute"],
        "detail": {},
    }


def run_every_minute(
    function_name: str, handler: Handler, timeout_s: float, stop: threading.Event
) -> None:
    """Invoke a scheduled function once a minute, as an EventBridge rule would."""
    while not stop.is_set():
        started = time.monotonic()
        context = ScheduledContext(
            function_name=function_name,
            aws_request_id=str(uuid.uuid4()),
            deadline_monotonic=started + timeout_s,
            stop=stop,
        )
        try:
            handler(scheduled_event(), context)
        except Exception:
            traceback.print_exc()
        stop.wait(max(0.0, 60 - (time.monotonic() - started)))


# --------------------------------------------------------------------------- HTTP side

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def request_time(epoch_ms: int) -> str:
    """API Gateway's requestTime, ``22/Nov/2026:09:15:00 +0000``, whatever the locale."""
    t = time.gmtime(epoch_ms / 1000)
    clock = f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    return f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{clock} +0000"


def build_event(
    *,
    method: str,
    raw_path: str,
    headers: list[tuple[str, str]],
    body: bytes,
    resource: str,
    client_ip: str,
    protocol: str,
    path_parameters: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The REST API (v1) proxy event API Gateway sends for this request."""
    split = urlsplit(raw_path)
    path = split.path or "/"

    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        multi_headers.setdefault(name, []).append(value)
    # API Gateway adds these; an existing value is kept as the caller sent it.
    lower_names = {name.lower() for name in multi_headers}
    host = next((v[0] for n, v in multi_headers.items() if n.lower() == "host"), "localhost")
    for name, value in (
        ("X-Forwarded-For", client_ip),
        ("X-Forwarded-Port", host.rpartition(":")[2] if ":" in host else "80"),
        ("X-Forwarded-Proto", "http"),
    ):
        if name.lower() not in lower_names:
            multi_headers[name] = [value]

    multi_query = parse_qs(split.query, keep_blank_values=True) if split.query else {}
    user_agent = next((v[-1] for n, v in multi_headers.items() if n.lower() == "user-agent"), None)
    epoch_ms = time.time_ns() // 1_000_000

    try:
        text_body: str | None = body.decode("utf-8") if body else None
        is_base64 = False
    except UnicodeDecodeError:
        text_body = base64.b64encode(body).decode("ascii")
        is_base64 = True

    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        # Single-value maps carry the last value, as API Gateway does.
        "headers": {name: values[-1] for name, values in multi_headers.items()} or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": dict(path_parameters) if path_parameters else None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "domainName": host,
            "httpMethod": method,
            # No SigV4 locally: the fields IAM auth would fill stay empty.
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "sourceIp": client_ip,
                "user": None,
                "userArn": None,
                "userAgent": user_agent,
            },
            "path": f"/{STAGE}{path}",
            "protocol": protocol,
            "requestId": str(uuid.uuid4()),
            "requestTime": request_time(epoch_ms),
            "requestTimeEpoch": epoch_ms,
            "resourceId": "local",
            "resourcePath": resource,
            "stage": STAGE,
        },
        "body": text_body,
        "isBase64Encoded": is_base64,
    }


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def json_answer(status: int, payload: object) -> HttpAnswer:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return HttpAnswer(status, [("Content-Type", "application/json")], body)


def bad_gateway() -> HttpAnswer:
    """What API Gateway answers when the function fails or returns a malformed result."""
    return json_answer(502, {"message": "Internal server error"})


def answer_from_result(result: Any) -> HttpAnswer:
    """Turn a proxy integration result into HTTP, the way API Gateway does."""
    if not isinstance(result, Mapping) or not isinstance(result.get("statusCode"), int):
        print("malformed Lambda proxy response (API Gateway would answer 502)", file=sys.stderr)
        return bad_gateway()
    # Both maps may be present; for a name in both, multiValueHeaders wins.
    merged: dict[str, list[str]] = {}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        merged[name] = [str(value) for value in values]
    taken = {name.lower() for name in merged}
    for name, value in (result.get("headers") or {}).items():
        if name.lower() not in taken:
            merged[name] = [str(value)]
    raw_body = result.get("body") or ""
    if result.get("isBase64Encoded"):
        body = base64.b64decode(raw_body)
    else:
        body = str(raw_body).encode("utf-8")
    headers = [(name, value) for name, values in merged.items() for value in values]
    return HttpAnswer(int(result["statusCode"]), headers, body)


class LocalApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], routes: RouteTable) -> None:
        super().__init__(address, LocalApiRequestHandler)
        self.routes = routes


class LocalApiRequestHandler(BaseHTTPRequestHandler):
    server: LocalApiServer
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length

    # Every method goes through the route table, which answers 404 for the rest.
    def do_GET(self) -> None:
        self.dispatch()

    def do_HEAD(self) -> None:
        self.dispatch()

    def do_POST(self) -> None:
        self.dispatch()

    def do_PUT(self) -> None:
        self.dispatch()

    def do_PATCH(self) -> None:
        self.dispatch()

    def do_DELETE(self) -> None:
        self.dispatch()

    def do_OPTIONS(self) -> None:
        self.dispatch()

    def dispatch(self) -> None:
        body = self.read_body()
        if body is None:
            return
        path = urlsplit(self.path).path or "/"
        resolution = self.server.routes.resolve(self.command, path)
        if resolution is None:
            message = f"no route for {self.command} {path}"
            self.send_answer(json_answer(404, {"error": {"code": "not_found", "message": message}}))
            return
        route = resolution.route
        if route is None:
            allowed = ", ".join(resolution.allowed_methods)
            error = {"code": "method_not_allowed", "message": f"{path} takes {allowed} only"}
            answer = json_answer(405, {"error": error})
            self.send_answer(HttpAnswer(405, [*answer.headers, ("Allow", allowed)], answer.body))
            return
        event = build_event(
            method=self.command,
            raw_path=self.path,
            headers=list(self.headers.items()),
            body=body,
            resource=route.resource,
            client_ip=self.client_address[0],
            protocol=self.request_version,
            path_parameters=resolution.path_parameters,
        )
        request_id = event["requestContext"]["requestId"]
        answer = invoke(route, event)
        headers = [*answer.headers, ("x-amzn-RequestId", request_id)]
        self.send_answer(HttpAnswer(answer.status, headers, answer.body))

    def read_body(self) -> bytes | None:
        """The request body, or None after answering a body API Gateway would refuse."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.read_chunked()
        length_header = self.headers.get("Content-Length", "0") or "0"
        if not length_header.isdigit():
            self.close_connection = True
            self.send_answer(json_answer(400, {"message": "invalid Content-Length"}))
            return None
        length = int(length_header)
        if length > MAX_PAYLOAD_BYTES:
            self.close_connection = True
            self.send_answer(json_answer(413, {"message": "Request Too Long"}))
            return None
        return self.rfile.read(length)

    def read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_PAYLOAD_BYTES:
                self.close_connection = True
                self.send_answer(json_answer(413, {"message": "Request Too Long"}))
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after each chunk

    def send_answer(self, answer: HttpAnswer) -> None:
        self.send_response(answer.status)
        for name, value in answer.headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)


def invoke(route: Route, event: dict[str, Any]) -> HttpAnswer:
    """Call the handler as Lambda would: one event, a fresh context, an error is a 502."""
    with route.function.lock:
        context = LocalLambdaContext(
            function_name=route.function.name,
            aws_request_id=str(uuid.uuid4()),
            deadline_monotonic=time.monotonic() + FUNCTION_TIMEOUT_S,
        )
        try:
            result = route.function.handler(event, context)
        except Exception:
            # Lambda would log the traceback and API Gateway would answer 502.
            traceback.print_exc()
            return bad_gateway()
    return answer_from_result(result)


# --------------------------------------------------------------------------- main


def print_banner(
    redis_addr: str, data_dir: Path | None, api_url: str, *, operator_api: bool
) -> None:
    endpoint = f"{api_url}/api/v1/internal/login-code-deliveries"
    body = '{"email":"ada@example.com","code":"482913","locale":"en"}'
    lines = [
        "",
        "mail service running locally",
        f"  redis     {redis_addr}" + ("" if data_dir else "  (MAIL_REDIS_ADDR, not managed here)"),
    ]
    if data_dir:
        lines.append(f"  data dir  {data_dir}  (reuse it with LOCAL_REDIS_DIR={data_dir})")
    host, _, port = redis_addr.rpartition(":")
    lines += [
        f"  smtp mode {os.environ['MAIL_SMTP_MODE']}",
        f"  stream    {os.environ.get('MAIL_REDIS_COMMAND_STREAM', 'mail:delivery_commands')}"
        "  (stream_poller runs every minute)",
        f"  API       {api_url}  (stage {STAGE!r}, no SigV4 locally)",
        "",
        "try it (run it twice: the second answer carries Idempotent-Replayed: true):",
        f"  curl -i -X POST {endpoint} \\",
        "    -H 'Content-Type: application/json' -H 'Idempotency-Key: local-demo-0001' \\",
        f"    -d '{body}'",
        "",
        "publish a generic mail command, as the Notification service would:",
        f"  redis-cli -h {host} -p {port} XADD "
        f"{os.environ.get('MAIL_REDIS_COMMAND_STREAM', 'mail:delivery_commands')} '*' \\",
        "    delivery_id demo-1 source notification payload_mode rendered \\",
        "    idempotency_key demo-1 requested_at_ms 1795338900000 \\",
        '    payload_json \'{"to":["ada@example.com"],"subject":"Hello","text_body":"Hi Ada"}\'',
        "",
        "or with mailctl, the operator command (.venv/bin/mailctl):",
        f"  mailctl --api {api_url} send-test --email ada@example.com",
    ]
    if operator_api:
        lines += [
            f"  mailctl --api {api_url} deliveries list",
            f"  mailctl --api {api_url} malformed list",
        ]
    else:
        lines.append("  (the operator API is not served: functions/operator_api did not import)")
    lines += [
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)


def redis_data_dir() -> Path:
    setting = os.environ.get("LOCAL_REDIS_DIR")
    if not setting:
        return Path(tempfile.mkdtemp(prefix="mail-local-redis-"))
    data_dir = Path(setting).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


def check_external_redis() -> None:
    """Warn early when MAIL_REDIS_ADDR does not answer: every request would get a 503."""
    from mailcore.config import load_settings
    from mailcore.store.client import build_redis_client

    try:
        build_redis_client(load_settings()).ping()
    except redis.RedisError as error:
        print(f"warning: Redis at {os.environ['MAIL_REDIS_ADDR']} does not answer: {error}")


def main() -> int:
    api_port = int(os.environ.get("LOCAL_API_PORT") or DEFAULT_API_PORT)

    # Installed first, so a Ctrl-C during start-up still ends in an orderly stop
    # (every start-up step is bounded; the stop happens right after it).
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    local_redis: LocalRedis | None = None
    server: LocalApiServer | None = None
    server_thread: threading.Thread | None = None
    scheduled: list[threading.Thread] = []
    try:
        if not os.environ.get("MAIL_REDIS_ADDR"):
            local_redis = start_redis(redis_data_dir())
            os.environ["MAIL_REDIS_ADDR"] = local_redis.addr
        for name, value in ENV_DEFAULTS.items():
            os.environ.setdefault(name, value)

        # The handlers' cold start reads the environment set above.
        put_code_on_path()
        from mailcore.config import ConfigError

        try:
            routes = load_routes()
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        if local_redis is None:
            check_external_redis()

        try:
            server = LocalApiServer(("127.0.0.1", api_port), routes)
        except OSError as error:
            print(f"error: cannot serve on 127.0.0.1:{api_port}: {error}", file=sys.stderr)
            return 1
        server_thread = threading.Thread(target=server.serve_forever, name="local-api")
        server_thread.start()
        stream_poller = importlib.import_module("stream_poller")
        scheduled.append(
            threading.Thread(
                target=run_every_minute,
                args=("StreamPollerFunction", stream_poller.handler, STREAM_POLLER_TIMEOUT_S, stop),
                name="stream-poller",
            )
        )
        for thread in scheduled:
            thread.start()
        print_banner(
            os.environ["MAIL_REDIS_ADDR"],
            local_redis.data_dir if local_redis else None,
            f"http://127.0.0.1:{api_port}",
            operator_api=OPERATOR_FUNCTION in routes.function_names,
        )
        while not stop.wait(0.5):
            if local_redis and local_redis.process.poll() is not None:
                print(f"redis-server exited unexpectedly; see {local_redis.data_dir}")
                return 1
        print("\nstopping", flush=True)
        return 0
    finally:
        stop.set()
        for thread in scheduled:
            thread.join()  # a run ends within one block timeout once stop is set
        if scheduled:
            print("scheduled functions stopped", flush=True)
        if server is not None:
            if server_thread is not None:
                server.shutdown()  # returns once serve_forever has returned
                server_thread.join()
            server.server_close()
            print("HTTP server stopped", flush=True)
        if local_redis is not None:
            local_redis.stop()


if __name__ == "__main__":
    sys.exit(main())
