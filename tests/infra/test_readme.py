"""The README stays true to the repository: what a newcomer reads first.

Its deploy parameter table is template.yaml's Parameters with their
defaults; every `make` target it names is in `make help`; its repository
map names every folder, function, test tier, template and doc page; the
Docker recipe overrides what a plain local redis-server needs; `mailctl` is
said to live in `.venv/bin`, and every `mailctl` line it shows parses.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

from mailctl import cli

REPO_ROOT = Path(__file__).resolve().parents[2]
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def load_parameters() -> dict[str, dict[str, Any]]:
    template, problems = decode(str(REPO_ROOT / "template.yaml"))
    assert problems == []
    assert template is not None
    return dict(template["Parameters"])


PARAMETERS = load_parameters()


def section(heading: str) -> str:
    """The text under ``## heading`` (or ``### heading``) up to the next heading of its level."""
    match = re.search(rf"^(#+) {re.escape(heading)}\n", README, re.MULTILINE)
    assert match, heading
    rest = README[match.end() :]
    following = re.search(rf"^#{{1,{len(match.group(1))}}} ", rest, re.MULTILINE)
    return rest[: following.start()] if following else rest


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the markdown tables in ``text``, as lists of cells."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.match(r"^\|[\s:|-]+\|$", line):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows[1:] if rows else []


def commands(text: str) -> list[list[str]]:
    """Every shell command shown in code spans and fenced blocks (one per line)."""
    lines = [line for block in FENCE.findall(text) for line in block.splitlines()]
    lines += CODE_SPAN.findall(FENCE.sub("", text))
    found = []
    for line in lines:
        concrete = re.sub(r"<[^<>\s]+>", "placeholder-1", line)
        try:
            words = shlex.split(concrete, comments=True)
        except ValueError:
            continue  # not a shell line (a JSON body, a log line)
        if words:
            found.append(words)
    return found


# --------------------------------------------------------------------------- deploying


def shown_default(parameter: dict[str, Any]) -> str:
    default = str(parameter.get("Default", ""))
    return f"`{default}`" if default else "empty"


def test_the_parameter_table_is_the_templates_parameters_with_their_defaults() -> None:
    # Given the README's parameter table
    rows = table_rows(section("Deploying"))
    listed = {row[0].strip("`"): row[1] for row in rows if row[0].startswith("`")}

    # Then it lists every parameter of template.yaml once, with its default
    assert len(listed) == len([row for row in rows if row[0].startswith("`")])
    assert set(listed) == set(PARAMETERS)
    assert listed == {name: shown_default(spec) for name, spec in PARAMETERS.items()}


def test_the_redis_address_is_optional_and_empty_creates_a_cache() -> None:
    row = next(row for row in table_rows(section("Deploying")) if row[0] == "`RedisAddr`")
    assert row[1] == "empty"
    assert "creates an ElastiCache Serverless" in row[2]


def test_the_docker_recipe_overrides_what_a_plain_local_redis_needs() -> None:
    # Given the parameter overrides of the `sam local invoke` recipe
    recipe = section("With Docker")
    assigned = re.search(r'^OVERRIDES="([^"]*)"', recipe, re.MULTILINE)
    assert assigned, recipe
    overrides = dict(word.split("=", 1) for word in assigned.group(1).split())

    # Then each is a template parameter, and a plain redis-server on this machine fits them
    assert set(overrides) <= set(PARAMETERS)
    assert overrides["RedisAddr"] == "host.docker.internal:6379"
    assert overrides["RedisTlsEnabled"] == "false"
    assert overrides["RedisClusterMode"] == "false"
    assert all("--parameter-overrides $OVERRIDES" in line for line in sam_invocations(recipe))


def sam_invocations(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("sam local invoke")]


# What was once written about parts that did not exist yet.
FUTURE_PHRASES = [
    r"\bonce the [\w ]+ exists?\b",
    r"\bwill (?:also )?need\b",
    r"\barrives? with\b",
    r"\btoday `[^`]+`",
]


@pytest.mark.parametrize("phrase", FUTURE_PHRASES)
def test_the_readme_describes_what_exists(phrase: str) -> None:
    assert not re.search(phrase, README, re.IGNORECASE)


# --------------------------------------------------------------------------- make


def make_help() -> str:
    completed = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return completed.stdout


def test_make_help_lists_every_make_target_the_readme_uses() -> None:
    # Given every `make <target>` the README shows
    used = {words[1] for words in commands(README) if words[0] == "make" and len(words) > 1}
    assert {"local", "test", "setup", "bench", "coldstart", "soak"} <= used

    # Then `make help` lists each of them
    listed = set(re.findall(r"^  make (\S+)", make_help(), re.MULTILINE))
    assert used - listed == set()


def test_the_two_commands_are_make_local_and_make_test() -> None:
    shown = [words[:2] for words in commands(section("The two commands")) if words[0] == "make"]
    assert shown[:2] == [["make", "local"], ["make", "test"]]
    assert make_help().startswith("The two commands: make local")


# --------------------------------------------------------------------------- the map


def map_paths() -> list[str]:
    """Every path in the first column of the repository map."""
    return [
        path for row in table_rows(section("Repository map")) for path in CODE_SPAN.findall(row[0])
    ]


def map_text() -> str:
    return section("Repository map")


def tracked_top_level() -> tuple[set[str], set[str]]:
    """The folders (``name/``) and files at the top of the repository that git tracks."""
    completed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, timeout=30, check=False
    )
    if completed.returncode != 0:
        pytest.skip("not a git work tree: what git tracks is unknown")
    paths = [path for path in completed.stdout.decode().split("\0") if path]
    folders = {path.split("/", 1)[0] + "/" for path in paths if "/" in path}
    files = {path for path in paths if "/" not in path}
    return folders, files


def test_the_map_names_every_top_level_folder_and_file() -> None:
    # Given what git tracks at the top of the repository
    folders, files = tracked_top_level()

    # Then the map has a row for each folder and each file (but itself and .gitignore)
    paths = map_paths()
    assert {folder for folder in folders if not any(p.startswith(folder) for p in paths)} == set()
    assert files - set(paths) - {"README.md", ".gitignore"} == set()


def test_the_map_names_every_function_test_tier_and_template() -> None:
    text = map_text()
    for function in sorted(p.name for p in (REPO_ROOT / "functions").iterdir() if p.is_dir()):
        assert f"`{function}/`" in text, function
    tiers = [p.name for p in (REPO_ROOT / "tests").iterdir() if p.is_dir() and p.name[0] != "_"]
    for tier in sorted(tiers):
        assert f"tests/{tier}/" in map_paths(), tier
    for template in sorted(p.name for p in (REPO_ROOT / "templates").iterdir() if p.is_dir()):
        assert f"`{template}`" in text, template


def test_the_map_links_every_doc() -> None:
    text = map_text()
    for page in sorted((REPO_ROOT / "docs").iterdir()):
        assert f"(docs/{page.name})" in text, page.name
        assert (REPO_ROOT / "docs" / page.name).is_file()


# --------------------------------------------------------------------------- mailctl


def test_the_readme_says_how_to_run_mailctl_outside_the_venv() -> None:
    # Given pip's console script for mailctl, installed into .venv/bin by `make setup`
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert "mailctl" in project["project"]["scripts"]

    # Then the README says it is .venv/bin/mailctl, and how to put it on PATH
    operating = section("Operating it: `mailctl`")
    assert "`.venv/bin/mailctl`" in operating
    assert "source .venv/bin/activate" in operating


def readme_mailctl_lines() -> list[list[str]]:
    return [words[1:] for words in commands(README) if words[0] == "mailctl" and words[1:]]


def test_the_readme_shows_mailctl_commands() -> None:
    assert len(readme_mailctl_lines()) >= 5


@pytest.mark.parametrize("words", readme_mailctl_lines(), ids=" ".join)
def test_every_mailctl_command_in_the_readme_parses(words: list[str]) -> None:
    try:
        args = cli.build_parser().parse_args(words)
    except SystemExit as exit_:
        pytest.fail(f"`mailctl {' '.join(words)}` does not parse (exit {exit_.code})")
    assert callable(args.command)
