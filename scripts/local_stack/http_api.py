"""The local API Gateway: HTTP on 127.0.0.1, each request as the REST proxy event.

Every request is routed the way API Gateway routes it (most specific
resource first, then the method; 404 and 405 otherwise), turned into the
REST API (v1) proxy event the deployed API would send (see ``events/``),
handed to the function's handler, and the handler's proxy result turned back
into HTTP. No SigV4 locally: the identity fields IAM auth would fill are
empty.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from scripts.local_stack.lambda_runtime import ACCOUNT_ID, Handler, LambdaFunction
from scripts.local_stack.logs import human_line

__all__ = [
    "INTAKE_FUNCTION",
    "LOGIN_CODE_RESOURCE",
    "OPERATOR_FUNCTION",
    "OPERATOR_ROUTES",
    "LambdaFunction",
    "LocalApiServer",
    "Resolution",
    "Route",
    "RouteTable",
    "build_event",
    "build_routes",
]

STAGE = "local"
# API Gateway refuses payloads over 10 MB before any function runs.
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024

INTAKE_FUNCTION = "IntakeApiFunction"
OPERATOR_FUNCTION = "OperatorApiFunction"
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


# --------------------------------------------------------------------------- routing


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


def build_routes(
    intake: LambdaFunction | Handler, operator: LambdaFunction | Handler | None
) -> RouteTable:
    """The API's routes: the intake's, and the operator API's when there is one."""
    intake_function = _as_function(INTAKE_FUNCTION, intake)
    routes = [Route("POST", LOGIN_CODE_RESOURCE, intake_function)]
    if operator is not None:
        function = _as_function(OPERATOR_FUNCTION, operator)
        routes += [Route(method, resource, function) for method, resource in OPERATOR_ROUTES]
    return RouteTable(routes)


def _as_function(name: str, given: LambdaFunction | Handler) -> LambdaFunction:
    return given if isinstance(given, LambdaFunction) else LambdaFunction(name, given)


# --------------------------------------------------------------------------- events and answers

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


# --------------------------------------------------------------------------- the server


class LocalApiServer(ThreadingHTTPServer):
    """Serves the routes; :meth:`stop_accepting` ends it without cutting a request short."""

    daemon_threads = True  # idle keep-alive connections must not hold the stack up

    def __init__(self, address: tuple[str, int], routes: RouteTable) -> None:
        super().__init__(address, LocalApiRequestHandler)
        self.routes = routes
        self._busy = 0
        self._state = threading.Condition()
        self._stopping = False

    def begin_request(self) -> bool:
        """Count a request in; False once the server is stopping."""
        with self._state:
            if self._stopping:
                return False
            self._busy += 1
            return True

    def end_request(self) -> None:
        with self._state:
            self._busy -= 1
            self._state.notify_all()

    def stop_accepting(self, timeout_s: float) -> bool:
        """Take no new connection or request, and wait for those being handled.

        Must not run on the thread of ``serve_forever``. A request that comes
        on an open keep-alive connection after this is answered 503 and the
        connection closed. True when every request in flight finished in time.
        """
        self.shutdown()
        with self._state:
            self._stopping = True
            return self._state.wait_for(lambda: self._busy == 0, timeout_s)


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

    def parse_request(self) -> bool:
        """Any other method (TRACE, QUERY, ...) is routed too: a 405 or 404, never a 501."""
        if not super().parse_request():
            return False
        if not hasattr(self, f"do_{self.command}"):
            setattr(self, f"do_{self.command}", self.dispatch)
        return True

    def log_message(self, format: str, *args: Any) -> None:
        # One line per request, in the shape of the functions' lines.
        print(human_line(time.time(), "http", "", format % args, {}), file=sys.stderr, flush=True)

    def dispatch(self) -> None:
        if not self.server.begin_request():
            self.close_connection = True
            self.send_answer(json_answer(503, {"message": "the local stack is stopping"}))
            return
        try:
            self.route_request()
        finally:
            self.server.end_request()

    def route_request(self) -> None:
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
    try:
        result = route.function.invoke(event)
    except Exception:
        # Lambda would log the traceback and API Gateway would answer 502.
        traceback.print_exc()
        return bad_gateway()
    return answer_from_result(result)
