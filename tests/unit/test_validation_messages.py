"""How request validation errors are put into words for the 400 body."""

from mailcore.http_api import describe_validation_errors


def test_each_problem_is_named_by_its_field() -> None:
    message = describe_validation_errors(
        [
            {"loc": ("body", "email"), "type": "value_error", "msg": "Value error, bad domain"},
            {"loc": ("body", "channel"), "type": "extra_forbidden", "msg": "Extra inputs"},
            {"loc": ("header", "idempotency-key"), "type": "missing", "msg": "Field required"},
        ]
    )
    assert message == (
        "email: bad domain; channel: unknown field; header Idempotency-Key is required"
    )


def test_invalid_json_and_a_missing_body_get_plain_sentences() -> None:
    assert (
        describe_validation_errors([{"loc": ("body", 1), "type": "json_invalid", "msg": "x"}])
        == "request body is not valid JSON"
    )
    assert (
        describe_validation_errors([{"loc": ("body",), "type": "missing", "msg": "Field required"}])
        == "request body is required"
    )


def test_submitted_values_are_never_quoted() -> None:
    message = describe_validation_errors(
        [
            {
                "loc": ("body", "code"),
                "type": "string_too_long",
                "msg": "String should have at most 32 characters",
                "input": "TOPSECRET-CODE-TOPSECRET-CODE-TOPSECRET",
            }
        ]
    )
    assert "TOPSECRET" not in message
    assert message == "code: String should have at most 32 characters"
