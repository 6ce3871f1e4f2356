"""API Gateway REST proxy events, shaped like the sample events in events/."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

SAMPLE = Path(__file__).resolve().parents[2] / "events" / "intake_api_valid.json"


def api_event(
    method: str,
    resource: str,
    *,
    path_parameters: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> dict[str, Any]:
    """The event API Gateway sends for ``method resource`` with these parameters."""
    event: dict[str, Any] = copy.deepcopy(json.loads(SAMPLE.read_text()))
    path = resource
    for name, value in (path_parameters or {}).items():
        path = path.replace("{" + name + "}", value)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    event.update(
        {
            "httpMethod": method,
            "resource": resource,
            "path": path,
            "pathParameters": path_parameters,
            "queryStringParameters": query,
            "multiValueQueryStringParameters": (
                {name: [value] for name, value in query.items()} if query else None
            ),
            "headers": all_headers,
            "multiValueHeaders": {name: [value] for name, value in all_headers.items()},
            "body": None if body is None else json.dumps(body),
        }
    )
    event["requestContext"].update(
        {
            "httpMethod": method,
            "resourcePath": resource,
            "path": f"/live{path}",
            "requestId": str(uuid.uuid4()),
        }
    )
    return event


def header(response: dict[str, Any], name: str) -> str | None:
    for field in ("headers", "multiValueHeaders"):
        for key, value in (response.get(field) or {}).items():
            if key.lower() == name.lower():
                return value[0] if isinstance(value, list) else str(value)
    return None


def body_of(response: dict[str, Any]) -> Any:
    return json.loads(response["body"])
