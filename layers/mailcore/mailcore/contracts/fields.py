"""Field types shared by the intake contracts.

Validation messages never repeat the rejected value: a bad login code must not
come back in an error body or a log line. Nor do they quote a regular
expression: a string rule is a :class:`Shape`, refused in words a person can
act on ("must be 1 to 256 visible ASCII characters"), with the expression
left to the JSON Schema (OpenAPI) for producers' tools.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# Two or more labels, dot-separated (one match instead of one per label).
_DOMAIN = re.compile(rf"{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})+")
MAX_EMAIL_LENGTH = 254
# The error type of a refused Shape (pydantic's own would be string_pattern_mismatch).
SHAPE_ERROR = "string_shape"


@dataclass(frozen=True, slots=True)
class Shape:
    """A string rule: ``pattern`` must match the whole value, else ``message``.

    ``message`` completes a sentence that starts with the field's name
    ("locale: must be ..."), and is what a caller reads in a 400 answer or an
    operator in a malformed-command record.
    """

    pattern: str
    message: str

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        # fullmatch: `$` alone would also accept a value that ends in a newline.
        matches = re.compile(self.pattern).fullmatch
        message = self.message

        def check(value: str) -> str:
            if matches(value) is None:
                raise PydanticCustomError(SHAPE_ERROR, message)
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = self.pattern
        return json_schema


def visible_ascii(max_length: int) -> Shape:
    """1 to ``max_length`` visible ASCII characters (0x21-0x7E): ids and keys that
    become parts of Redis key names and log fields."""
    return Shape(
        rf"^[\x21-\x7e]{{1,{max_length}}}$",
        f"must be 1 to {max_length} visible ASCII characters (no spaces or control characters)",
    )


MAX_DELIVERY_ID_CHARS = 256
DELIVERY_ID_SHAPE = visible_ascii(MAX_DELIVERY_ID_CHARS)
# Opaque to the service: a producer's own ids (the Notification service's are
# route ids such as `email:<notification id>:<user id>`). Redis keys take any
# of these characters after their hash tag (store/keys.py), the operator API
# takes them percent-encoded, and the Message-ID escapes what RFC 5322 would
# not allow (mail/mime.py).
DeliveryId = Annotated[str, DELIVERY_ID_SHAPE]


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


def _hyphenated(value: str) -> str:
    # POSIX and Go spell a locale `en_US`; BCP 47 spells it `en-US`.
    return value.replace("_", "-")


# A BCP 47 language tag as used for template locales: `en`, `pt-BR`,
# `zh-Hant-TW`, `es-419`, `en-US-u-ca-gregory`; `_` is taken for `-`. A tag the
# catalog does not have falls back (rendering/catalog.py): the tag with its
# last subtags cut one by one, then `en`.
Locale = Annotated[
    str,
    AfterValidator(_hyphenated),
    Shape(
        # `_` too, though none is left when it is checked: the pattern is also
        # what OpenAPI shows callers, and they may send `en_US`.
        r"^(?=.{2,35}$)[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8}){0,7}$",
        "must be a language tag such as en, pt-BR or en_US: 2 or 3 letters, then "
        "subtags of 1 to 8 letters or digits, at most 35 characters",
    ),
]


def absent_when_empty(data: Any, optional: Iterable[str]) -> Any:
    """``data`` without the optional keys whose value is ``""`` or ``null``.

    A Go producer writes an unset optional value as its zero value (``""``, a
    nil slice or map as ``null``); both mean "not given", as leaving the key
    out does. Required keys are left alone, so an empty one is still refused.
    """
    if not isinstance(data, Mapping):
        return data
    names = frozenset(optional)
    return {
        name: value
        for name, value in data.items()
        if not (name in names and (value is None or value == ""))
    }
