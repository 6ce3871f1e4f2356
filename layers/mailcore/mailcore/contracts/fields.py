"""Field types shared by the intake contracts.

Validation messages never repeat the rejected value: a bad login code must not
come back in an error body or a log line.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# Two or more labels, dot-separated (one match instead of one per label).
_DOMAIN = re.compile(rf"{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})+")
MAX_EMAIL_LENGTH = 254


def normalize_email(value: str) -> str:
    """Check an addr-spec (RFC 5321 limits, dot-atom local part) and lower-case its domain.

    Quoted local parts and address literals are refused: no transactional
    recipient needs them, and they are where header-injection tricks hide.
    """
    if len(value) > MAX_EMAIL_LENGTH:
        raise ValueError(f"must be at most {MAX_EMAIL_LENGTH} characters")
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        raise ValueError("must be an email address like name@example.com")
    if len(local) > 64 or not _LOCAL_PART.fullmatch(local):
        raise ValueError("has an invalid local part (before the @)")
    if not _DOMAIN.fullmatch(domain):
        raise ValueError("has an invalid domain (after the @)")
    return f"{local}@{domain.lower()}"


EmailAddress = Annotated[str, AfterValidator(normalize_email)]

# BCP 47 language tag as used for template locales: `en`, `pt-BR`, `zh-Hant-TW`.
Locale = Annotated[
    str,
    StringConstraints(
        min_length=2, max_length=35, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$"
    ),
]
