"""The error body every HTTP answer uses: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"  # 400
    NOT_FOUND = "not_found"  # 404
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"  # 409
    NOT_RESENDABLE = "not_resendable"  # 409
    INTERNAL_ERROR = "internal_error"  # 500
    SERVICE_UNAVAILABLE = "service_unavailable"  # 503


HTTP_STATUS = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
    ErrorCode.NOT_RESENDABLE: 409,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
}


class ErrorDetail(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: ErrorCode
    message: str


class ErrorBody(BaseModel):
    model_config = ConfigDict(frozen=True)

    error: ErrorDetail

    @classmethod
    def of(cls, code: ErrorCode, message: str) -> ErrorBody:
        return cls(error=ErrorDetail(code=code, message=message))
