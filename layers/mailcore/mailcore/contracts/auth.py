"""The Auth / Session service's contract: ``POST /api/v1/internal/login-code-deliveries``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from mailcore.contracts.fields import EmailAddress, Locale, Shape, visible_ascii

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_BODY_BYTES = 4096

# Visible ASCII only: the key becomes part of Redis key names and log fields.
IdempotencyKey = Annotated[str, visible_ascii(128)]
LoginCode = Annotated[
    str,
    Shape(
        r"^[A-Za-z0-9-]{4,32}$",
        "must be 4 to 32 characters: letters, digits or '-'",
    ),
]


class LoginCodeDeliveryRequest(BaseModel):
    """Send a login code to one address, in the reader's language."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    email: EmailAddress = Field(description="The recipient's address.")
    # repr=False: Powertools formats the handler's arguments into a debug line
    # on every request (shown only at debug level), and the code is a secret.
    code: LoginCode = Field(
        description="The login code. A secret: never logged or shown.", repr=False
    )
    locale: Locale = Field(
        description="BCP 47 language tag, for example `en` or `pt-BR` (`en_US` is taken as "
        "`en-US`). A language the templates do not have falls back to its base language, "
        "then to `en`."
    )


class AcceptanceOutcome(StrEnum):
    SENT = "sent"  # durably accepted into the pipeline (not "SMTP done")
    SUPPRESSED = "suppressed"  # accepted and deliberately not sent


class LoginCodeDeliveryResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    delivery_id: str
    outcome: AcceptanceOutcome
