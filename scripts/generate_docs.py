"""Regenerate the parts of docs/ that are derived from code.

``python scripts/generate_docs.py`` rewrites each generated section in place;
``--check`` changes nothing and exits 1 if a document has drifted from the
code (the test suite runs it that way).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr

from mailcore.config import Settings
from mailcore.durations import format_duration
from mailcore.store.keys import key_catalog

DOCS = Path(__file__).resolve().parent.parent / "docs"


def redis_key_table() -> str:
    rows = [
        "| key | type | retention | holds |",
        "| --- | --- | --- | --- |",
    ]
    for spec in key_catalog():
        rows.append(f"| `{spec.pattern}` | {spec.redis_type} | {spec.retention} | {spec.purpose} |")
    return "\n".join(rows)


def _default(value: object, required: bool) -> str:
    if required:
        return "(required)"
    if value is None:
        return "unset"
    if isinstance(value, timedelta):
        return f"`{format_duration(value)}`"
    if isinstance(value, SecretStr):
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def configuration_table() -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for field in Settings.model_fields.values():
        default = _default(field.default, field.is_required())
        rows.append(f"| `{field.alias}` | {default} | {field.description} |")
    return "\n".join(rows)


# document -> section name -> renderer
SECTIONS: dict[str, dict[str, Callable[[], str]]] = {
    "redis-keys.md": {"key-catalog": redis_key_table},
    "configuration.md": {"settings": configuration_table},
}


def render(text: str, sections: dict[str, Callable[[], str]], document: str) -> str:
    for name, renderer in sections.items():
        start, end = f"<!-- generated:{name}:start -->", f"<!-- generated:{name}:end -->"
        head, found_start, rest = text.partition(start)
        _, found_end, tail = rest.partition(end)
        if not (found_start and found_end):
            raise SystemExit(f"docs/{document}: markers for section {name!r} are missing")
        text = f"{head}{start}\n{renderer()}\n{end}{tail}"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail on drift, change nothing")
    check = parser.parse_args().check
    drifted = []
    for document, sections in SECTIONS.items():
        path = DOCS / document
        current = path.read_text(encoding="utf-8")
        wanted = render(current, sections, document)
        if wanted != current:
            drifted.append(document)
            if not check:
                path.write_text(wanted, encoding="utf-8")
    if check and drifted:
        print(f"out of date: {', '.join(drifted)}; run: python scripts/generate_docs.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
