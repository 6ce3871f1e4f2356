"""The auth intake body: strict, and never echoing what it refuses."""

from typing import Any

import pytest
from pydantic import ValidationError

from mailcore.contracts.auth import LoginCodeDeliveryRequest

VALID = {"email": "ada@example.com", "code": "482913", "locale": "en"}


def rejection(body: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as raised:
        LoginCodeDeliveryRequest.model_validate(body)
    return raised.value


def test_a_valid_body_is_accepted_and_the_domain_lower_cased() -> None:
    request = LoginCodeDeliveryRequest.model_validate({**VALID, "email": "Ada.L@Example.COM"})
    assert request.email == "Ada.L@example.com"
    assert request.code == "482913"


@pytest.mark.parametrize(
    "email",
    [
        "not-an-address",
        "@example.com",
        "ada@",
        "ada@localhost",
        "ada@exa mple.com",
        "ada@-example.com",
        'a"da@example.com',
        "ada@example.com\r\nBcc: victim@example.org",
        "ada..lovelace@example.com",
        "a" * 65 + "@example.com",
        "ada@" + "x" * 250 + ".com",
        "ada@[127.0.0.1]",
    ],
)
def test_invalid_addresses_are_refused(email: str) -> None:
    error = rejection({**VALID, "email": email})
    assert error.errors()[0]["loc"] == ("email",)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("code", ""),
        ("code", "12"),
        ("code", "1" * 33),
        ("code", "48 29 13"),
        ("code", "4829\n13"),
        ("locale", "e"),
        ("locale", "english-language-please-with-extras-x"),
        ("locale", "en-US-" + "a" * 30),
        ("locale", "en_US.UTF-8"),
        ("locale", "12"),
    ],
)
def test_out_of_shape_codes_and_locales_are_refused(field: str, value: str) -> None:
    error = rejection({**VALID, field: value})
    assert error.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize(
    ("field", "value"),
    [("code", 482913), ("email", None), ("locale", ["en"]), ("code", True)],
)
def test_wrong_types_are_not_coerced(field: str, value: object) -> None:
    error = rejection({**VALID, field: value})
    assert error.errors()[0]["loc"] == (field,)


def test_unknown_and_missing_fields_are_refused() -> None:
    error = rejection({"email": "ada@example.com", "code": "482913", "channel": "sms"})
    kinds = {(e["loc"], e["type"]) for e in error.errors()}
    assert (("channel",), "extra_forbidden") in kinds
    assert (("locale",), "missing") in kinds


def test_the_refusal_message_does_not_repeat_the_code() -> None:
    # Given an over-long code, When validation refuses it
    error = rejection({**VALID, "code": "SECRETCODE" * 4})
    # Then the messages say what rule failed without the value
    messages = " ".join(item["msg"] for item in error.errors())
    assert "SECRETCODE" not in messages
    assert "4 to 32 characters" in messages


@pytest.mark.parametrize(
    ("given", "stored"),
    [("en_US", "en-US"), ("pt_BR", "pt-BR"), ("de-AT", "de-AT"), ("sr_Latn_RS", "sr-Latn-RS")],
)
def test_a_posix_style_locale_is_taken_as_its_bcp47_tag(given: str, stored: str) -> None:
    # Given a login code asked for in a locale spelled the POSIX (or Go) way
    request = LoginCodeDeliveryRequest.model_validate({**VALID, "locale": given})
    # Then it is the BCP 47 tag, and one request with the tag spelled that way
    assert request.locale == stored
    same = LoginCodeDeliveryRequest.model_validate({**VALID, "locale": stored})
    assert request == same
