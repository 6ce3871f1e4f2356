"""Lambda handler: the operator API (REST, AWS_IAM): reads and resend.

Thin by design: Powertools validates paths, queries and headers, one service
call answers, and the answer is shaped here. Secrets never reach these
answers: the service's views leave them out.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import unquote

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import AfterValidator

from mailcore.composition import build_operator_service, build_tracer
from mailcore.config import load_settings
from mailcore.contracts.auth import IDEMPOTENCY_KEY_HEADER, REPLAYED_HEADER, IdempotencyKey
from mailcore.contracts.errors import ErrorCode
from mailcore.contracts.fields import DELIVERY_ID_SHAPE, MAX_DELIVERY_ID_CHARS, Shape
from mailcore.contracts.operator import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    AttemptList,
    DeadLetterPage,
    DeliveryPage,
    DeliveryView,
    MalformedCommandPage,
    MalformedCommandView,
)
from mailcore.domain.model import Source
from mailcore.domain.states import DeliveryStatus
from mailcore.http_api import (
    COMMON_ERRORS,
    documented_errors,
    documented_ok,
    install_error_handlers,
    json_response,
)
from mailcore.ports import DeliveryFilters
from mailcore.services.operator import OperatorService
from mailcore.telemetry import METRICS_NAMESPACE, SERVICE_NAME, ApiErrorTelemetry, Metric
from mailcore.tracing import NO_TRACING, Subsegment, XRayProvider

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)

PREFIX = "/api/v1/internal"
PageSize = Annotated[
    int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"Items per page, at most {MAX_PAGE_SIZE}.")
]
Cursor = Annotated[
    str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
]
# A delivery id is any visible ASCII (a producer's `email:<id>/<user>`), so it
# comes percent-encoded. API Gateway (REST) hands over the path as the client
# sent it, and Powertools routes on that path, so the segment is decoded here,
# once, and then checked like the id a stream command brings.
DeliveryId = Annotated[
    str,
    Path(
        max_length=3 * MAX_DELIVERY_ID_CHARS,
        description="The delivery id, percent-encoded (`email%3Aabc%2Fdef` for `email:abc/def`).",
    ),
    AfterValidator(unquote),
    DELIVERY_ID_SHAPE,
]
StreamEntryId = Annotated[
    str,
    Path(),
    Shape(
        r"^[0-9]{1,20}-[0-9]{1,20}$",
        "must be a stream entry id such as 1730000000000-0",
    ),
]


def build_app(
    operator: OperatorService, tracing: XRayProvider = NO_TRACING
) -> APIGatewayRestResolver:
    # debug=False explicitly: Powertools' debug mode would print whole events.
    app = APIGatewayRestResolver(enable_validation=True, debug=False)

    @app.get(
        f"{PREFIX}/deliveries",
        summary="List deliveries, newest first",
        description="Filters combine (all must match). Pages never skip or repeat a "
        "delivery while new ones arrive; follow `next_cursor` until it is null.",
        responses={
            **documented_ok(DeliveryPage, "One page of deliveries."),
            **documented_errors(*COMMON_ERRORS),
        },
    )
    def list_deliveries(
        recipient: Annotated[str | None, Query(max_length=254)] = None,
        status: Annotated[DeliveryStatus | None, Query()] = None,
        source: Annotated[Source | None, Query()] = None,
        template_id: Annotated[str | None, Query(max_length=100)] = None,
        idempotency_key: Annotated[str | None, Query(max_length=128)] = None,
        limit: PageSize = DEFAULT_PAGE_SIZE,
        cursor: Cursor = None,
    ) -> DeliveryPage:
        filters = DeliveryFilters(recipient, status, source, template_id, idempotency_key)
        return operator.list_deliveries(filters, limit, cursor)

    @app.get(
        f"{PREFIX}/deliveries/<delivery_id>",
        summary="One delivery",
        responses={
            **documented_ok(DeliveryView, "The delivery."),
            **documented_errors(*COMMON_ERRORS, ErrorCode.NOT_FOUND),
        },
    )
    def get_delivery(delivery_id: DeliveryId) -> DeliveryView:
        return operator.get_delivery(delivery_id)

    @app.get(
        f"{PREFIX}/deliveries/<delivery_id>/attempts",
        summary="A delivery's attempts, oldest first",
        description="Attempts are kept MAIL_ATTEMPT_TTL after they finish, longer than their "
        "delivery (MAIL_DELIVERY_TTL): they are answered as long as any is kept, also after "
        "the delivery itself has expired. 404 when neither is left.",
        responses={
            **documented_ok(AttemptList, "The delivery's attempts still kept."),
            **documented_errors(*COMMON_ERRORS, ErrorCode.NOT_FOUND),
        },
    )
    def list_attempts(delivery_id: DeliveryId) -> AttemptList:
        return operator.attempts(delivery_id)

    @app.post(
        f"{PREFIX}/deliveries/<delivery_id>/resend",
        summary="Resend a settled delivery as a linked clone",
        responses={
            200: {
                "description": "A replay: the clone this key created before.",
                "content": {"application/json": {"model": DeliveryView}},
            },
            201: {
                "description": "The new clone.",
                "content": {"application/json": {"model": DeliveryView}},
            },
            **documented_errors(
                *COMMON_ERRORS,
                ErrorCode.NOT_FOUND,
                ErrorCode.NOT_RESENDABLE,
                ErrorCode.IDEMPOTENCY_CONFLICT,
            ),
        },
    )
    def resend(
        delivery_id: DeliveryId,
        idempotency_key: Annotated[IdempotencyKey, Header(alias=IDEMPOTENCY_KEY_HEADER)],
    ) -> Response[Any]:
        with tracing.in_subsegment(Subsegment.RESEND) as segment:
            segment.put_annotation("parent_delivery_id", delivery_id)
            resent = operator.resend(
                delivery_id,
                idempotency_key,
                time_left_ms=app.lambda_context.get_remaining_time_in_millis,
            )
            segment.put_annotation("delivery_id", resent.clone.delivery_id)
            segment.put_annotation("source", resent.clone.source)
            segment.put_annotation("template_id", resent.clone.template_id)
            segment.put_annotation("replayed", resent.replayed)
        logger.info(
            "delivery resent",
            delivery_id=resent.clone.delivery_id,
            parent_delivery_id=delivery_id,
            source=resent.clone.source,
            template_id=resent.clone.template_id,
            replayed=resent.replayed,
        )
        if not resent.replayed:
            metrics.add_metric(Metric.DELIVERIES_RESENT, MetricUnit.Count, 1)
        headers = {REPLAYED_HEADER: "true"} if resent.replayed else {}
        body = resent.clone.model_dump(mode="json")
        return json_response(200 if resent.replayed else 201, body, headers)

    @app.get(
        f"{PREFIX}/malformed-commands",
        summary="Malformed stream commands, newest first",
        responses={
            **documented_ok(MalformedCommandPage, "One page of malformed commands."),
            **documented_errors(*COMMON_ERRORS),
        },
    )
    def list_malformed(
        limit: PageSize = DEFAULT_PAGE_SIZE, cursor: Cursor = None
    ) -> MalformedCommandPage:
        return operator.malformed_commands(limit, cursor)

    @app.get(
        f"{PREFIX}/malformed-commands/<stream_entry_id>",
        summary="One malformed command",
        responses={
            **documented_ok(MalformedCommandView, "The malformed command."),
            **documented_errors(*COMMON_ERRORS, ErrorCode.NOT_FOUND),
        },
    )
    def get_malformed(
        stream_entry_id: StreamEntryId,
    ) -> MalformedCommandView:
        return operator.malformed_command(stream_entry_id)

    @app.get(
        f"{PREFIX}/dead-letters",
        summary="Dead-lettered deliveries, newest first",
        responses={
            **documented_ok(DeadLetterPage, "One page of dead letters."),
            **documented_errors(*COMMON_ERRORS),
        },
    )
    def list_dead_letters(
        limit: PageSize = DEFAULT_PAGE_SIZE, cursor: Cursor = None
    ) -> DeadLetterPage:
        return operator.dead_letters(limit, cursor)

    install_error_handlers(app, record_error)
    return app


record_error = ApiErrorTelemetry(
    logger,
    metrics,
    refusal="request refused",
    counted={
        ErrorCode.SERVICE_UNAVAILABLE: Metric.STORE_UNAVAILABLE,
        ErrorCode.INTERNAL_ERROR: Metric.INTERNAL_ERRORS,
    },
)


settings = load_settings()
tracer = build_tracer(settings)
app = build_app(build_operator_service(settings), tracer.xray)


@logger.inject_lambda_context(log_event=False, correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_metric(Metric.OPERATOR_REQUESTS, MetricUnit.Count, 1)
    return app.resolve(event, context)
