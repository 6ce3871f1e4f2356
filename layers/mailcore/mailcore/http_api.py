"""Shaping HTTP answers for the API handlers (Powertools event handler).

Shared by every API function so that each answers errors the same way:
``{"error": {"code", "message"}}`` with the status that belongs to the code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types

from mailcore.contracts.errors import HTTP_STATUS, ErrorBody, ErrorCode


def json_response(
    status_code: int, body: Any, headers: Mapping[str, str] | None = None
) -> Response[Any]:
    return Response(
        status_code=status_code,
        content_type=content_types.APPLICATION_JSON,
        body=body,
        headers=dict(headers or {}),
    )


def error_response(code: ErrorCode, message: str) -> Response[Any]:
    return json_response(HTTP_STATUS[code], ErrorBody.of(code, message).model_dump(mode="json"))


def describe_validation_errors(errors: Sequence[Mapping[str, Any]]) -> str:
    """Say what is wrong with a request without repeating any submitted value.

    Pydantic's messages name the rule, never the input ("String should have at
    most 32 characters"); the ``input`` of each error is deliberately dropped
    because it may be a login code.
    """
    problems = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        kind = error.get("type", "")
        if kind == "json_invalid":
            problems.append("request body is not valid JSON")
            continue
        if location[:1] == ["header"] and len(location) > 1:
            # API Gateway and Powertools lower-case header names; say them as documented.
            header = "-".join(part.capitalize() for part in location[1].split("-"))
            detail = "is required" if kind == "missing" else _message(error)
            problems.append(f"header {header} {detail}")
            continue
        field = ".".join(location[1:] if location[:1] == ["body"] else location)
        if kind == "extra_forbidden":
            problems.append(f"{field}: unknown field")
        elif kind == "missing" and not field:
            problems.append("request body is required")
        else:
            problems.append(f"{field or 'body'}: {_message(error)}")
    return "; ".join(dict.fromkeys(problems)) or "invalid request"


def _message(error: Mapping[str, Any]) -> str:
    return str(error.get("msg", "is invalid")).removeprefix("Value error, ")
