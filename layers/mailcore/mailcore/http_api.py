"""Shaping HTTP answers for the API handlers (Powertools event handler).

Shared by every API function so that each answers errors the same way:
``{"error": {"code", "message"}}`` with the status that belongs to the code.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent
from pydantic import BaseModel

from mailcore.contracts.errors import HTTP_STATUS, ErrorBody, ErrorCode
from mailcore.errors import (
    IdempotencyConflict,
    InvalidCursor,
    NotFound,
    NotResendable,
    StoreUnavailable,
)

# Told of every error answer (code, message, exception type), for logs and metrics.
ErrorListener = Callable[[ErrorCode, str, str], None]
UNAVAILABLE_MESSAGE = (
    "the mail service cannot reach its store; retry (with the same Idempotency-Key)"
)


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


def documented_ok(model: type[BaseModel], description: str) -> dict[int, OpenAPIResponse]:
    """The OpenAPI `responses` entry of a 200 answer with this body.

    Powertools documents the return annotation only for a route given no
    `responses` at all; a route that lists its errors lists its 200 too.
    """
    return {200: {"description": description, "content": {"application/json": {"model": model}}}}


def documented_errors(*codes: ErrorCode) -> dict[int, OpenAPIResponse]:
    """OpenAPI `responses` entries for the error answers a route can give."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(HTTP_STATUS[code], []).append(code.value)
    return {
        status: {
            "description": "error: " + ", ".join(names),
            "content": {"application/json": {"model": ErrorBody}},
        }
        for status, names in by_status.items()
    }


COMMON_ERRORS = (ErrorCode.INVALID_REQUEST, ErrorCode.SERVICE_UNAVAILABLE, ErrorCode.INTERNAL_ERROR)


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
        # A parameter is named as the caller wrote it: `limit`, not `query.limit`.
        named = location[1:] if location[:1] in (["body"], ["path"], ["query"]) else location
        field = ".".join(named)
        if kind == "extra_forbidden":
            problems.append(f"{field}: unknown field")
        elif kind == "missing" and not field:
            problems.append("request body is required")
        else:
            problems.append(f"{field or 'body'}: {_message(error)}")
    return "; ".join(dict.fromkeys(problems)) or "invalid request"


def _message(error: Mapping[str, Any]) -> str:
    if error.get("type") == "string_pattern_mismatch":
        # Pydantic's message quotes the regular expression; the contracts use
        # Shape (contracts/fields.py) instead, and this says no more than it must.
        return "is not in the accepted format"
    return str(error.get("msg", "is invalid")).removeprefix("Value error, ")


def install_error_handlers(app: APIGatewayRestResolver, listener: ErrorListener) -> None:
    """Answer every failure the same way in every API function.

    Messages of unexpected errors are never shown or logged: they may quote
    request data, and a request may carry a login code.
    """

    def answer(code: ErrorCode, message: str, error: Exception) -> Response[Any]:
        listener(code, message, type(error).__name__)
        return error_response(code, message)

    @app.exception_handler(RequestValidationError)
    def invalid_request(error: RequestValidationError) -> Response[Any]:
        return answer(ErrorCode.INVALID_REQUEST, describe_validation_errors(error.errors()), error)

    @app.exception_handler(InvalidCursor)
    def invalid_cursor(error: InvalidCursor) -> Response[Any]:
        return answer(ErrorCode.INVALID_REQUEST, str(error), error)

    @app.exception_handler(NotFound)
    def not_found(error: NotFound) -> Response[Any]:
        return answer(ErrorCode.NOT_FOUND, str(error), error)

    @app.exception_handler(NotResendable)
    def not_resendable(error: NotResendable) -> Response[Any]:
        return answer(ErrorCode.NOT_RESENDABLE, str(error), error)

    @app.exception_handler(IdempotencyConflict)
    def idempotency_conflict(error: IdempotencyConflict) -> Response[Any]:
        return answer(ErrorCode.IDEMPOTENCY_CONFLICT, str(error), error)

    @app.exception_handler(StoreUnavailable)
    def store_unavailable(error: StoreUnavailable) -> Response[Any]:
        return answer(ErrorCode.SERVICE_UNAVAILABLE, UNAVAILABLE_MESSAGE, error)

    @app.exception_handler([UnicodeDecodeError, binascii.Error])
    def unreadable_body(error: ValueError) -> Response[Any]:
        # Powertools decodes a binary (base64) body while validating the request;
        # one that is not base64 of UTF-8 text is the caller's mistake.
        if _unreadable_body(app.current_event):
            return answer(ErrorCode.INVALID_REQUEST, "request body is not UTF-8 text", error)
        return answer(ErrorCode.INTERNAL_ERROR, "internal error", error)

    @app.exception_handler(Exception)
    def internal_error(error: Exception) -> Response[Any]:
        return answer(ErrorCode.INTERNAL_ERROR, "internal error", error)


def _unreadable_body(event: BaseProxyEvent) -> bool:
    try:
        event.decoded_body  # noqa: B018 - decoding is the check
    except (UnicodeDecodeError, binascii.Error):
        return True
    return False
