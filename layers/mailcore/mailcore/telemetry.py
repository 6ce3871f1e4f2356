"""Names shared by logs and metrics, so dashboards and alarms match the code."""

from __future__ import annotations

from enum import StrEnum

SERVICE_NAME = "mail"
METRICS_NAMESPACE = "MailService"


class Metric(StrEnum):
    AUTH_DELIVERIES_ACCEPTED = "AuthDeliveriesAccepted"
    DELIVERIES_SUPPRESSED = "DeliveriesSuppressed"
    IDEMPOTENT_REPLAYS = "IdempotentReplays"
    IDEMPOTENCY_CONFLICTS = "IdempotencyConflicts"
    STORE_UNAVAILABLE = "StoreUnavailable"
    REQUESTS_REJECTED = "RequestsRejected"
    INTERNAL_ERRORS = "InternalErrors"
