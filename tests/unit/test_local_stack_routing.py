"""The local stack's API Gateway routing: resources with path parameters, 404 and 405.

The handlers here are stand-ins that echo the event they were given, so the
tests see exactly what a handler module would receive from the local stack.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

from scripts.local_stack.http_api import (
    LOGIN_CODE_RESOURCE,
    OPERATOR_FUNCTION,
    OPERATOR_ROUTES,
    LambdaFunction,
    LocalApiServer,
    Route,
    RouteTable,
    build_event,
    build_routes,
)


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A handler that answers with the event it got and the function it ran as."""
    payload = {"event": event, "function": context.function_name}
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(payload),
    }


FULL = build_routes(echo, echo)
INTAKE_ONLY = build_routes(echo, None)
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_stack_serves_exactly_the_api_routes_of_the_template() -> None:
    # Given the Api events of every function in template.yaml
    template, problems = decode(str(REPO_ROOT / "template.yaml"))
    assert problems == []
    assert template is not None
    declared = {
        (name, event["Properties"]["Method"].upper(), event["Properties"]["Path"])
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
        for event in resource["Properties"].get("Events", {}).values()
        if event["Type"] == "Api"
    }

    # Then the local stack routes the same methods and resources to the same functions
    served = {(route.function.name, route.method, route.resource) for route in FULL.routes}
    assert served == declared


@pytest.mark.parametrize(
    ("method", "path", "resource", "parameters"),
    [
        ("GET", "/api/v1/internal/deliveries", "/api/v1/internal/deliveries", None),
        (
            "GET",
            "/api/v1/internal/deliveries/dlv_1",
            "/api/v1/internal/deliveries/{delivery_id}",
            {"delivery_id": "dlv_1"},
        ),
        (
            "GET",
            "/api/v1/internal/deliveries/dlv_1/attempts",
            "/api/v1/internal/deliveries/{delivery_id}/attempts",
            {"delivery_id": "dlv_1"},
        ),
        (
            "POST",
            "/api/v1/internal/deliveries/dlv%201/resend",
            "/api/v1/internal/deliveries/{delivery_id}/resend",
            {"delivery_id": "dlv 1"},
        ),
        (
            "GET",
            "/api/v1/internal/malformed-commands/1795338900000-0",
            "/api/v1/internal/malformed-commands/{stream_entry_id}",
            {"stream_entry_id": "1795338900000-0"},
        ),
        ("GET", "/api/v1/internal/dead-letters", "/api/v1/internal/dead-letters", None),
        ("POST", LOGIN_CODE_RESOURCE, LOGIN_CODE_RESOURCE, None),
    ],
)
def test_every_route_resolves_to_its_resource_and_path_parameters(
    method: str, path: str, resource: str, parameters: dict[str, str] | None
) -> None:
    # When a request path is resolved
    resolution = FULL.resolve(method, path)

    # Then it names the resource template and the decoded parameter values
    assert resolution is not None
    assert resolution.route is not None
    assert resolution.route.resource == resource
    assert resolution.path_parameters == parameters


def test_the_operator_routes_share_one_function() -> None:
    # Then every operator route runs in one execution environment (one lock)
    functions = {
        resolution.route.function.name
        for method, resource in OPERATOR_ROUTES
        if (resolution := FULL.resolve(method, resource.replace("{", "x").replace("}", "")))
        and resolution.route
    }
    assert functions == {OPERATOR_FUNCTION}
    assert OPERATOR_FUNCTION in FULL.function_names
    assert OPERATOR_FUNCTION not in INTAKE_ONLY.function_names


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/internal/deliveries/",  # an empty segment is no delivery id
        "/api/v1/internal/deliveries//attempts",
        "/api/v1/internal/deliveries/dlv_1/attempts/1",
        "/api/v1/internal",
        "/",
    ],
)
def test_a_path_no_resource_fits_is_unknown(path: str) -> None:
    assert FULL.resolve("GET", path) is None


def test_without_the_operator_api_only_the_intake_is_known() -> None:
    # Given the intake alone
    # Then operator paths are unknown, the intake is served
    assert INTAKE_ONLY.resolve("GET", "/api/v1/internal/deliveries") is None
    assert INTAKE_ONLY.resolve("POST", LOGIN_CODE_RESOURCE) is not None


def test_a_known_path_with_another_method_names_the_allowed_ones() -> None:
    # When a resource is asked with a method it does not have
    resolution = FULL.resolve("GET", "/api/v1/internal/deliveries/dlv_1/resend")

    # Then there is no route, but the methods it has
    assert resolution is not None
    assert resolution.route is None
    assert resolution.allowed_methods == ("POST",)


def test_a_literal_segment_wins_over_a_parameter() -> None:
    # Given a parameter resource and a literal one beside it
    function = LambdaFunction("F", echo)
    table = RouteTable(
        [
            Route("GET", "/items/{item_id}", function),
            Route("GET", "/items/search", function),
        ]
    )

    # Then the literal is chosen for its own path, the parameter for any other
    literal = table.resolve("GET", "/items/search")
    parameter = table.resolve("GET", "/items/it_1")
    assert literal is not None
    assert literal.route is not None
    assert literal.route.resource == "/items/search"
    assert parameter is not None
    assert parameter.path_parameters == {"item_id": "it_1"}


def test_the_event_carries_the_query_string_like_api_gateway() -> None:
    # When an event is built for a request with a repeated query parameter
    event = build_event(
        method="GET",
        raw_path="/api/v1/internal/deliveries?status=sent&limit=2&status=failed&cursor=",
        headers=[("Host", "127.0.0.1:3000")],
        body=b"",
        resource="/api/v1/internal/deliveries",
        client_ip="127.0.0.1",
        protocol="HTTP/1.1",
    )

    # Then the single-value map has the last value, the multi-value map all of them
    assert event["queryStringParameters"] == {"status": "failed", "limit": "2", "cursor": ""}
    assert event["multiValueQueryStringParameters"] == {
        "status": ["sent", "failed"],
        "limit": ["2"],
        "cursor": [""],
    }
    assert event["pathParameters"] is None
    assert event["path"] == "/api/v1/internal/deliveries"


def test_the_event_without_a_query_string_has_null_maps() -> None:
    event = build_event(
        method="GET",
        raw_path="/api/v1/internal/deliveries/dlv_1",
        headers=[],
        body=b"",
        resource="/api/v1/internal/deliveries/{delivery_id}",
        client_ip="127.0.0.1",
        protocol="HTTP/1.1",
        path_parameters={"delivery_id": "dlv_1"},
    )
    assert event["queryStringParameters"] is None
    assert event["multiValueQueryStringParameters"] is None
    assert event["pathParameters"] == {"delivery_id": "dlv_1"}
    assert event["requestContext"]["resourcePath"] == "/api/v1/internal/deliveries/{delivery_id}"


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture
def server() -> Iterator[str]:
    api = LocalApiServer(("127.0.0.1", 0), FULL)
    thread = threading.Thread(target=api.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{api.server_address[1]}"
    api.shutdown()
    api.server_close()
    thread.join()


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], dict[str, Any]]:
    body = b"" if method == "POST" else None
    request = urllib.request.Request(url, method=method, data=body)  # noqa: S310 (local test URL)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 (local test URL)
            return answer.status, dict(answer.headers.items()), json.loads(answer.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers.items()), json.loads(error.read())


def test_a_request_reaches_the_handler_as_the_api_gateway_event(server: str) -> None:
    # When a delivery's attempts are asked over HTTP
    status, _, answer = fetch(f"{server}/api/v1/internal/deliveries/dlv_1/attempts?limit=5")

    # Then the operator function got the REST proxy event for that resource
    assert status == 200
    event = answer["event"]
    assert answer["function"] == OPERATOR_FUNCTION
    assert event["resource"] == "/api/v1/internal/deliveries/{delivery_id}/attempts"
    assert event["path"] == "/api/v1/internal/deliveries/dlv_1/attempts"
    assert event["pathParameters"] == {"delivery_id": "dlv_1"}
    assert event["queryStringParameters"] == {"limit": "5"}
    assert event["httpMethod"] == "GET"


def test_an_unknown_path_is_404_not_found(server: str) -> None:
    status, _, answer = fetch(f"{server}/api/v1/internal/nothing")
    assert status == 404
    assert answer["error"]["code"] == "not_found"


def test_a_wrong_method_is_405_with_the_error_body(server: str) -> None:
    # When the intake is asked with GET
    status, headers, answer = fetch(f"{server}{LOGIN_CODE_RESOURCE}")

    # Then the answer is 405 method_not_allowed, naming the allowed method
    assert status == 405
    assert answer["error"]["code"] == "method_not_allowed"
    assert answer["error"]["message"]
    assert headers["Allow"] == "POST"
