"""Provider summaries: one line, secrets removed, at most 300 characters."""

from __future__ import annotations

import pytest

from mailcore.providers import redact_summary
from mailcore.providers.redaction import MAX_SUMMARY_CHARS, REDACTED


def test_plain_text_passes_through() -> None:
    assert redact_summary("250 2.0.0 Ok: queued as 4F3A", []) == "250 2.0.0 Ok: queued as 4F3A"


def test_line_breaks_tabs_and_runs_of_space_become_one_space() -> None:
    text = "  451-4.7.1 first line\r\n451 4.7.1\tsecond   line\n\n"
    assert redact_summary(text, []) == "451-4.7.1 first line 451 4.7.1 second line"


def test_other_control_characters_are_neutralised() -> None:
    assert redact_summary("a\x00b\x1bc\x7fd", []) == "a b c d"


def test_every_occurrence_of_every_secret_is_redacted() -> None:
    text = "code 123456 echoed, again 123456; password hunter2"
    assert redact_summary(text, ["123456", "hunter2"]) == (
        f"code {REDACTED} echoed, again {REDACTED}; password {REDACTED}"
    )


def test_empty_secrets_are_ignored() -> None:
    assert redact_summary("250 ok", ["", ""]) == "250 ok"


def test_a_longer_secret_wins_over_its_prefix() -> None:
    assert redact_summary("token 123456789", ["123", "123456789"]) == f"token {REDACTED}"


def test_secrets_are_matched_literally_not_as_patterns() -> None:
    assert redact_summary("a.c abc a+c", ["a.c", "a+c"]) == f"{REDACTED} abc {REDACTED}"


def test_a_secret_containing_a_line_break_is_still_found() -> None:
    assert redact_summary("x pass\nword y", ["pass\nword"]) == f"x {REDACTED} y"


def test_redaction_text_is_not_redacted_again() -> None:
    assert redact_summary("code 42", ["42", "redacted", "e"]) == f"cod{REDACTED} {REDACTED}"


def test_long_text_is_cut_to_300_characters() -> None:
    summary = redact_summary("x" * 1000, [])
    assert len(summary) == MAX_SUMMARY_CHARS
    assert summary.endswith("…")


@pytest.mark.parametrize("offset", [290, 295, 297, 299, 300])
def test_a_secret_at_the_cut_is_never_partly_visible(offset: int) -> None:
    secret = "987654321"
    summary = redact_summary("x" * offset + secret + "y" * 50, [secret])
    assert len(summary) <= MAX_SUMMARY_CHARS
    for size in range(3, len(secret) + 1):
        assert secret[:size] not in summary


def test_a_secret_with_a_space_matches_across_a_line_break() -> None:
    assert redact_summary("x pass\r\n word y", ["pass word"]) == f"x {REDACTED} y"
