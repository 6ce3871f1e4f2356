"""Lambda handler: the Auth / Session service's login-code intake (REST, AWS_IAM).

Thin by design: Powertools parses and validates the request, one service call
accepts it, and the answer is shaped here. The services are built once per
cold start, below, and reused by warm invocations.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Header
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from mailcore.composition import build_auth_intake, build_tracer
from mailcore.config import load_settings
from mailcore.contracts.auth import (
    IDEMPOTENCY_KEY_HEADER,
    MAX_BODY_BYTES,
    REPLAYED_HEADER,
    AcceptanceOutcome,
    IdempotencyKey,
    LoginCodeDeliveryRequest,
    LoginCodeDeliveryResponse,
)
from mailcore.contracts.errors import HTTP_STATUS, ErrorBody, ErrorCode
from mailcore.domain.model import AUTH_LOGIN_CODE_TEMPLATE, Source
from mailcore.http_api import (
    COMMON_ERRORS,
    documented_errors,
    install_error_handlers,
    json_response,
)
from mailcore.services.auth_intake import AuthIntake
from mailcore.telemetry import METRICS_NAMESPACE, SERVICE_NAME, ApiErrorTelemetry, Metric
from mailcore.tracing import NO_TRACING, Subsegment, XRayProvider

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)


def build_app(intake: AuthIntake, tracing: XRayProvider = NO_TRACING) -> APIGatewayRestResolver:
    # debug=False explicitly: Powertools' debug mode would print whole events,
    # and an event carries a login code.
    app = APIGatewayRestResolver(enable_validation=True, debug=False)

    @app.post(
        "/api/v1/internal/login-code-deliveries",
        summary="Send a login code",
        description="Durably accepts one login-code mail. `sent` means accepted into the "
        "pipeline, not delivered. An identical replay answers the same body with "
        "`Idempotent-Replayed: true`.",
        responses={
            200: {
                "description": "Accepted (or an identical replay).",
                "content": {"application/json": {"model": LoginCodeDeliveryResponse}},
            },
            **documented_errors(*COMMON_ERRORS, ErrorCode.IDEMPOTENCY_CONFLICT),
        },
    )
    def create_login_code_delivery(
        request: LoginCodeDeliveryRequest,
        idempotency_key: Annotated[IdempotencyKey, Header(alias=IDEMPOTENCY_KEY_HEADER)],
    ) -> Response[Any]:
        with tracing.in_subsegment(Subsegment.ACCEPT_LOGIN_CODE) as segment:
            segment.put_annotation("source", Source.AUTHSESSION)
            segment.put_annotation("template_id", AUTH_LOGIN_CODE_TEMPLATE)
            accepted = intake.accept_login_code(
                request,
                idempotency_key,
                time_left_ms=app.lambda_context.get_remaining_time_in_millis,
            )
            segment.put_annotation("delivery_id", accepted.delivery_id)
            segment.put_annotation("outcome", accepted.outcome)
            segment.put_annotation("replayed", accepted.replayed)
        logger.info(
            "login code delivery accepted",
            delivery_id=accepted.delivery_id,
            source=Source.AUTHSESSION,
            template_id=AUTH_LOGIN_CODE_TEMPLATE,
            outcome=accepted.outcome,
            replayed=accepted.replayed,
            dispatched=accepted.dispatched,
        )
        if accepted.replayed:
            metrics.add_metric(Metric.IDEMPOTENT_REPLAYS, MetricUnit.Count, 1)
        else:
            metrics.add_metric(Metric.AUTH_DELIVERIES_ACCEPTED, MetricUnit.Count, 1)
            if accepted.outcome is AcceptanceOutcome.SUPPRESSED:
                metrics.add_metric(Metric.DELIVERIES_SUPPRESSED, MetricUnit.Count, 1)
        body = LoginCodeDeliveryResponse(delivery_id=accepted.delivery_id, outcome=accepted.outcome)
        headers = {REPLAYED_HEADER: "true"} if accepted.replayed else {}
        return json_response(200, body.model_dump(mode="json"), headers)

    install_error_handlers(app, record_error)
    return app


record_error = ApiErrorTelemetry(
    logger,
    metrics,
    refusal="request rejected",
    counted={
        ErrorCode.INVALID_REQUEST: Metric.REQUESTS_REJECTED,
        ErrorCode.IDEMPOTENCY_CONFLICT: Metric.IDEMPOTENCY_CONFLICTS,
        ErrorCode.SERVICE_UNAVAILABLE: Metric.STORE_UNAVAILABLE,
        ErrorCode.INTERNAL_ERROR: Metric.INTERNAL_ERRORS,
    },
)


def reject_unparsable_body(event: dict[str, Any]) -> dict[str, Any] | None:
    """Refuse bodies past the contract's size, or not JSON, before anything parses them."""
    content_type = APIGatewayProxyEvent(event).headers.get("content-type", "").strip()
    if content_type and not content_type.startswith("application/json"):
        # Powertools would parse form data (or fail on other types) before validation.
        return _rejected("not JSON", "request body must be JSON (Content-Type: application/json)")
    if len((event.get("body") or "").encode("utf-8")) <= MAX_BODY_BYTES:
        return None
    return _rejected("body too large", f"request body exceeds {MAX_BODY_BYTES} bytes")


def _rejected(reason: str, message: str) -> dict[str, Any]:
    metrics.add_metric(Metric.REQUESTS_REJECTED, MetricUnit.Count, 1)
    logger.info("request rejected", error_code=ErrorCode.INVALID_REQUEST, reason=reason)
    error = ErrorBody.of(ErrorCode.INVALID_REQUEST, message)
    return {
        "statusCode": HTTP_STATUS[ErrorCode.INVALID_REQUEST],
        "headers": {"Content-Type": "application/json"},
        "body": error.model_dump_json(),
        "isBase64Encoded": False,
    }


settings = load_settings()
tracer = build_tracer(settings)
app = build_app(build_auth_intake(settings), tracer.xray)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The API Gateway request id, as correlation_id_path="requestContext.requestId"
    # would set it, without a JMESPath search on every request.
    request_context = event.get("requestContext")
    logger.set_correlation_id(
        request_context.get("requestId") if isinstance(request_context, dict) else None
    )
    return reject_unparsable_body(event) or app.resolve(event, context)
