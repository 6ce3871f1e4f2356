"""docs/reliability.md names the test behind each promise; each named test exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "reliability.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::([\w]+)(?:::([\w]+))?)?`")


def test_every_test_the_reliability_doc_names_exists() -> None:
    # Given the references in docs/reliability.md
    references = REFERENCE.findall(DOC.read_text())
    assert len(references) > 40

    # When each is looked up
    missing = []
    for path, first, second in references:
        source = REPO_ROOT / path
        if not source.is_file():
            missing.append(path)
            continue
        text = source.read_text()
        for name in filter(None, (first, second)):
            if not re.search(rf"^\s*(?:async )?(?:def|class) {name}\b", text, re.MULTILINE):
                missing.append(f"{path}::{name}")

    # Then none is missing
    assert not missing, missing


def test_every_reliability_test_file_is_listed() -> None:
    # Given the reliability tier
    files = sorted(
        p.relative_to(REPO_ROOT) for p in (REPO_ROOT / "tests/reliability").glob("test_*.py")
    )
    # Then the doc names each of its files
    text = DOC.read_text()
    assert [str(f) for f in files if str(f) not in text] == []
