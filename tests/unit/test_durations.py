from datetime import timedelta

import pytest

from mailcore.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("250ms", timedelta(milliseconds=250)),
        ("15s", timedelta(seconds=15)),
        ("1m", timedelta(minutes=1)),
        ("168h", timedelta(hours=168)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5s", timedelta(milliseconds=1500)),
        ("500us", timedelta(microseconds=500)),
        ("0", timedelta(0)),
        ("2h45m30s", timedelta(hours=2, minutes=45, seconds=30)),
    ],
)
def test_go_durations_parse_to_the_same_span_go_would(text: str, expected: timedelta) -> None:
    # Given a duration written the way the Go service's configuration wrote it
    # When it is parsed
    # Then it means the same span of time
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "15", "15 s", "s", "1d", "ten seconds", "1h-5m", "--1s"])
def test_anything_else_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(milliseconds=250), "250ms"),
        (timedelta(seconds=15), "15s"),
        (timedelta(hours=168), "168h"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(0), "0s"),
    ],
)
def test_durations_print_back_in_go_syntax(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(format_duration(value)) == value
