"""Docs that are generated from code stay true to it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mailcore.domain.states import DELIVERY_TRANSITIONS

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


def test_the_state_diagram_in_the_architecture_page_is_the_transition_table() -> None:
    # Given the mermaid diagram of docs/architecture.md
    page = (REPO_ROOT / "docs" / "architecture.md").read_text()
    diagram = page.split("stateDiagram-v2", 1)[1].split("```", 1)[0]
    drawn = {
        tuple(part.strip() for part in line.split("-->"))
        for line in diagram.splitlines()
        if "-->" in line and "[*]" not in line
    }
    # Then it draws exactly the moves the code allows
    allowed = {
        (str(current), str(target))
        for current, targets in DELIVERY_TRANSITIONS.items()
        for target in targets
    }
    assert drawn == allowed
