"""SMTP credentials from Secrets Manager, through Powertools' cached parameters."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.parameters import SecretsProvider

CACHE_SECONDS = 300


def secret_password_source(
    secret_arn: str, client: Any = None, max_age: int = CACHE_SECONDS
) -> Callable[[], str | None]:
    """A password source reading ``secret_arn`` when asked, cached for ``max_age`` seconds.

    The secret is a plain string (the password) or JSON with a ``password``
    key, as the Secrets Manager console's key/value form stores it. A
    rotation is picked up within one cache period, without a cold start.
    Without a ``client`` one is built like every AWS client
    (:mod:`mailcore.aws.clients`): a Secrets Manager that does not answer
    costs at most ``CALL_LIMIT_S`` per read, never a function's whole timeout.
    """
    if client is None:
        from mailcore.aws.clients import aws_client

        client = aws_client("secretsmanager")
    provider = SecretsProvider(boto3_client=client)

    def password() -> str | None:
        value = provider.get(secret_arn, max_age=max_age)
        text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        if text.lstrip().startswith("{"):
            document = json.loads(text)
            found = document.get("password") if isinstance(document, dict) else None
            return str(found) if found is not None else None
        return text

    return password
