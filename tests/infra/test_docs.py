"""Docs that are generated from code stay true to it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_generated_doc_sections_match_the_code() -> None:
    completed = subprocess.run(
        [sys.executable, "scripts/generate_docs.py", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_the_architecture_and_key_catalog_pages_exist() -> None:
    for page in ["architecture.md", "redis-keys.md"]:
        assert (REPO_ROOT / "docs" / page).read_text().startswith("# ")
