"""Provider summaries: one short line, safe to store, show and log."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["MAX_SUMMARY_CHARS", "REDACTED", "redact_summary"]

MAX_SUMMARY_CHARS = 300
REDACTED = "[redacted]"

_WHITESPACE_AND_CONTROLS = re.compile(r"[\s\x00-\x1f\x7f]+")


def redact_summary(text: str, secrets: Sequence[str]) -> str:
    """One line of at most 300 characters with every secret replaced by ``[redacted]``.

    Secrets are removed before the text is shortened, so a cut can never leave
    half a secret visible; longer secrets win over their own prefixes.
    """
    wanted = {secret for secret in secrets if secret}
    if wanted:
        # One pass per text, longest first; a "[redacted]" already there is kept
        # whole, so a short secret such as "e" cannot eat into it.
        alternatives = sorted(wanted | {REDACTED}, key=len, reverse=True)
        pattern = re.compile("|".join(re.escape(alternative) for alternative in alternatives))
        text = pattern.sub(REDACTED, text)
    line = _WHITESPACE_AND_CONTROLS.sub(" ", text).strip()
    if wanted:
        # A secret with a space in it matches the one-line form of a line break.
        line = pattern.sub(REDACTED, line)
    if len(line) > MAX_SUMMARY_CHARS:
        line = line[: MAX_SUMMARY_CHARS - 1].rstrip() + "…"
    return line
