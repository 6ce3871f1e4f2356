"""The operations docs (docs/runbook.md, docs/deploy.md) stay true to the code.

They are written by hand, for people who do not read code, so these tests
check every name in them that the code defines: metric names, `mailctl`
command lines, template parameters and outputs, `MAIL_*` variables, the log
and summary texts they quote, and the API routes their IAM policies name.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

from mailcore.config import SEED_VARIABLES_NOT_USED, Settings
from mailcore.telemetry import Metric
from mailctl import cli

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = REPO_ROOT / "docs" / "runbook.md"
DEPLOY = REPO_ROOT / "docs" / "deploy.md"
DOCS = {"runbook": RUNBOOK, "deploy": DEPLOY}

# A whole code span that is one CamelCase word: `AttemptScheduleDepth`, `RedisAddr`.
CAMEL_CASE = re.compile(r"[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+")
FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
PLACEHOLDER = re.compile(r"<[^<>\s]+(?: [^<>\s]+)*>")
MAIL_VARIABLE = re.compile(r"\bMAIL_[A-Z0-9_]*[A-Z0-9]\b")
SHELL_SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")"}
SHELL_KEYWORDS = {"do", "then", "else", "time", "!"}

# CamelCase names in the docs that are neither ours nor the template's, each
# with the module that defines it, so a renamed class fails here.
EXCEPTION_CLASSES = {
    "ConfigError": "mailcore.config",
    "CatalogError": "mailcore.rendering.catalog",
    "BatchProcessingError": "aws_lambda_powertools.utilities.batch.exceptions",
    "ConnectionError": "redis.exceptions",
    "TimeoutError": "redis.exceptions",
    "ReadOnlyError": "redis.exceptions",
    "ClusterDownError": "redis.exceptions",
    "TryAgainError": "redis.exceptions",
    "AuthenticationError": "redis.exceptions",
    "GetParameterError": "aws_lambda_powertools.utilities.parameters.exceptions",
    "PartitionCountChanged": "mailcore.errors",
}
# Metrics, attributes and record fields that AWS publishes (AWS/SQS,
# AWS/Lambda, Lambda's invocation records), not us.
AWS_NAMES = {
    "ApproximateAgeOfOldestMessage",
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesVisible",
    "ConcurrentExecutions",
    "EventAgeExceeded",
    "RetriesExhausted",
}
# Schema names of the AsyncAPI document (checked below).
ASYNCAPI_NAMES = {"FailureCode"}
# What on-call watches; the runbook must name each (and the test below that
# they are real metrics).
CORE_METRICS = {
    Metric.SCHEDULE_DEPTH,
    Metric.OLDEST_SCHEDULED_AGE,
    Metric.DEAD_LETTERS,
    Metric.MALFORMED_COMMANDS,
    Metric.ATTEMPTS_TRANSIENT_FAILURES,
    Metric.PROVIDER_SEND_DURATION,
    Metric.STORE_UNAVAILABLE,
    Metric.STALE_ATTEMPTS_SKIPPED,
    Metric.CLAIMS_RECOVERED,
}


# --------------------------------------------------------------------------- reading


def load_template() -> dict[str, Any]:
    template, problems = decode(str(REPO_ROOT / "template.yaml"))
    assert problems == []
    assert template is not None
    return dict(template)


TEMPLATE = load_template()
PARAMETERS = set(TEMPLATE["Parameters"])
OUTPUTS = set(TEMPLATE["Outputs"])


def template_words(node: object) -> Iterator[str]:
    """Every key and string value in the template (resource names, properties, values)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from template_words(value)
    elif isinstance(node, list):
        for item in node:
            yield from template_words(item)
    elif isinstance(node, str):
        yield node


TEMPLATE_WORDS = set(template_words(TEMPLATE))


def text_of(doc: Path) -> str:
    return doc.read_text(encoding="utf-8")


def prose(text: str) -> str:
    """The page without its fenced code blocks."""
    return FENCE.sub("", text)


def code_spans(text: str) -> list[str]:
    return CODE_SPAN.findall(prose(text))


def camel_case_spans(text: str) -> set[str]:
    return {span for span in code_spans(text) if CAMEL_CASE.fullmatch(span)}


def fenced_lines(text: str) -> list[str]:
    """Lines of the fenced blocks, with backslash continuations joined."""
    lines: list[str] = []
    for block in FENCE.findall(text):
        pending = ""
        for raw in block.splitlines():
            if raw.rstrip().endswith("\\"):
                pending += raw.rstrip()[:-1] + " "
                continue
            lines.append(pending + raw)
            pending = ""
        if pending:
            lines.append(pending)
    return lines


def shell_commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line, placeholders made concrete."""
    concrete = PLACEHOLDER.sub("placeholder-1", line)
    lexer = shlex.shlex(concrete, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in SHELL_SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(token)
    return [command for command in commands if command]


def mailctl_invocations(text: str) -> list[list[str]]:
    """The arguments of every `mailctl …` shown, inline or in a code block."""
    candidates = [span for span in code_spans(text) if span.startswith("mailctl ")]
    candidates += [line for line in fenced_lines(text) if "mailctl " in line]
    invocations = []
    for candidate in candidates:
        for command in shell_commands(candidate):
            words = list(command)
            while words and ("=" in words[0] or words[0] in SHELL_KEYWORDS):
                words.pop(0)  # environment assignments and `do`, `then`, ...
            if words and words[0] == "mailctl":
                invocations.append(words[1:])
    return invocations


def source_texts() -> str:
    """All code that writes log lines and attempt summaries: handlers, layer, Lua."""
    files = [
        *sorted((REPO_ROOT / "functions").glob("*/*.py")),
        *sorted((REPO_ROOT / "layers" / "mailcore" / "mailcore").rglob("*.py")),
        *sorted((REPO_ROOT / "layers" / "mailcore" / "mailcore").rglob("*.lua")),
    ]
    return "\n".join(path.read_text(encoding="utf-8") for path in files)


def section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    rest = text[start + len(heading) + 2 :]
    following = re.search(r"^## ", rest, re.MULTILINE)
    return rest[: following.start()] if following else rest


def all_mailctl_invocations() -> list[Any]:
    return [
        pytest.param(words, id=f"{name}: mailctl {' '.join(words)}")
        for name, doc in DOCS.items()
        for words in mailctl_invocations(text_of(doc))
    ]


# --------------------------------------------------------------------------- metrics


def test_every_metric_the_runbook_names_is_one_the_code_emits() -> None:
    # Given every CamelCase name the runbook puts in backticks
    names = camel_case_spans(text_of(RUNBOOK))
    # When the names that are the template's, AWS's or an exception's are set aside
    ours = {str(metric) for metric in Metric}
    others = (TEMPLATE_WORDS | AWS_NAMES | set(EXCEPTION_CLASSES) | ASYNCAPI_NAMES) - ours
    metrics = names - others
    # Then every other one is a metric of mailcore.telemetry
    assert metrics - ours == set()
    # And the ones on-call watches are all there
    assert {str(metric) for metric in CORE_METRICS} <= metrics


@pytest.mark.parametrize("doc", [RUNBOOK, DEPLOY], ids=["runbook", "deploy"])
def test_every_camel_case_name_in_the_docs_is_defined_somewhere(doc: Path) -> None:
    known = TEMPLATE_WORDS | AWS_NAMES | set(EXCEPTION_CLASSES) | {str(m) for m in Metric}
    known |= ASYNCAPI_NAMES
    assert camel_case_spans(text_of(doc)) - known == set()


def test_the_asyncapi_schemas_the_docs_cite_exist() -> None:
    document = (REPO_ROOT / "docs" / "asyncapi.yaml").read_text()
    for name in ASYNCAPI_NAMES:
        assert f"\n    {name}:\n" in document


@pytest.mark.parametrize(("name", "module"), sorted(EXCEPTION_CLASSES.items()))
def test_the_exception_classes_the_docs_name_exist(name: str, module: str) -> None:
    assert isinstance(getattr(importlib.import_module(module), name), type)


# --------------------------------------------------------------------------- mailctl


def test_the_docs_show_mailctl_commands() -> None:
    # The extraction works: both pages show several commands.
    for doc in DOCS.values():
        assert len(mailctl_invocations(text_of(doc))) >= 2


@pytest.mark.parametrize("words", all_mailctl_invocations())
def test_every_mailctl_command_shown_parses(words: list[str]) -> None:
    parser = cli.build_parser()
    try:
        args = parser.parse_args(words)
    except SystemExit as exit_:
        pytest.fail(f"`mailctl {' '.join(words)}` does not parse (exit {exit_.code})")
    assert isinstance(args, argparse.Namespace)
    assert callable(args.command)


# --------------------------------------------------------------------------- template


def parameter_table_names() -> list[str]:
    table = section(text_of(DEPLOY), "## Template parameters")
    return re.findall(r"^\| `([A-Za-z0-9]+)` \|", table, re.MULTILINE)


def test_the_deploy_guide_documents_every_template_parameter_once() -> None:
    names = parameter_table_names()
    assert len(names) == len(set(names))
    assert set(names) == PARAMETERS


def test_every_template_parameter_is_mentioned_in_the_deploy_guide() -> None:
    mentioned = set(code_spans(text_of(DEPLOY)))
    assert mentioned >= PARAMETERS


def test_every_parameter_override_in_the_deploy_guide_names_a_parameter() -> None:
    text = text_of(DEPLOY)
    overrides = [line for line in fenced_lines(text) if "--parameter-overrides" in line]
    assert overrides
    keys = {
        word.split("=", 1)[0]
        for line in overrides
        for command in shell_commands(line)
        for word in command
        if re.fullmatch(r"[A-Z][A-Za-z0-9]+=.*", word)
    }
    keys |= set(re.findall(r"`([A-Z][A-Za-z0-9]+)=", prose(text)))
    assert keys
    assert keys <= PARAMETERS


def test_the_stack_outputs_the_docs_list_are_the_template_outputs() -> None:
    for doc in DOCS.values():
        named = {
            span for span in camel_case_spans(text_of(doc)) if span.endswith(("Url", "Stream"))
        }
        assert named <= OUTPUTS, doc.name
    startup = section(text_of(RUNBOOK), "## Startup checks (after every deploy)")
    assert set(re.findall(r"^\| `(\w+)` \|", startup, re.MULTILINE)) == OUTPUTS


def api_routes() -> set[tuple[str, str]]:
    routes = set()
    for resource in TEMPLATE["Resources"].values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] == "Api":
                properties = event["Properties"]
                routes.add((properties["Method"].upper(), properties["Path"]))
    return routes


def test_the_iam_examples_grant_exactly_the_api_routes() -> None:
    # Given every execute-api resource ARN in the deploy guide
    granted = re.findall(
        r"arn:aws:execute-api:[^:\s\"]+:\d{12}:[^/\s\"]+/[^/\s\"]+/([A-Z]+)(/[^\s\"]*)",
        text_of(DEPLOY),
    )
    assert granted
    routes = api_routes()

    def concrete(path: str) -> str:
        return re.sub(r"\{[^}]+\}", "some-id", path)

    # Then each one matches a route of the API
    for method, pattern in granted:
        assert any(
            method == route_method and fnmatchcase(concrete(route_path), pattern)
            for route_method, route_path in routes
        ), f"{method} {pattern} matches no route in template.yaml"
    # And together they cover every route (so the operator policy misses none)
    for route_method, route_path in routes:
        assert any(
            method == route_method and fnmatchcase(concrete(route_path), pattern)
            for method, pattern in granted
        ), f"no example grants {route_method} {route_path}"


# --------------------------------------------------------------------------- policy scan


def template_suppressions() -> dict[tuple[str, str], str]:
    """(check, resource) -> reason, for every `checkov: skip:` entry in the template."""
    found = {}
    for name, resource in TEMPLATE["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            found[(skip["id"], name)] = skip.get("comment", "")
    return found


def documented_suppressions() -> dict[tuple[str, str], str]:
    """(check, resource) -> reason, from the deploy guide's table of suppressions."""
    table = section(text_of(DEPLOY), "### Policy scan")
    found: dict[tuple[str, str], str] = {}
    rows = re.findall(r"^\| `(CKV\w+)` \| (.+?) \| (.+?) \|$", table, re.MULTILINE)
    for check, resources, reason in rows:
        for resource in CODE_SPAN.findall(resources):
            assert (check, resource) not in found, f"{check} on {resource} is listed twice"
            found[(check, resource)] = reason
    return found


def test_every_checkov_suppression_in_the_template_carries_its_reason() -> None:
    suppressions = template_suppressions()
    assert suppressions
    for (check, resource), reason in suppressions.items():
        assert re.fullmatch(r"CKV2?_AWS_\d+", check), (check, resource)
        # A sentence a reviewer can weigh, not a placeholder
        assert len(reason.split()) >= 8, (check, resource, reason)


def test_the_deploy_guide_lists_every_checkov_suppression_with_the_same_reason() -> None:
    assert documented_suppressions() == template_suppressions()


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("doc", [RUNBOOK, DEPLOY], ids=["runbook", "deploy"])
def test_every_mail_variable_the_docs_name_is_a_setting(doc: Path) -> None:
    named = set(MAIL_VARIABLE.findall(text_of(doc)))
    allowed = set(Settings.variable_names()) | {cli.API_ENV}  # mailctl's own MAIL_API_URL
    allowed |= set(SEED_VARIABLES_NOT_USED)  # quoted as what a cold start refuses
    assert named - allowed == set()


# --------------------------------------------------------------------------- quoted texts


@pytest.mark.parametrize("doc", [RUNBOOK, DEPLOY], ids=["runbook", "deploy"])
def test_every_log_or_summary_text_the_docs_quote_is_in_the_code(doc: Path) -> None:
    # Given every `"…"` span (a log message or a provider summary, as logged)
    quoted = [
        span[1:-1]
        for span in code_spans(text_of(doc))
        if len(span) > 2 and span.startswith('"') and span.endswith('"')
    ]
    source = source_texts()
    # Then each of its literal parts (split at "…") appears in the code
    missing = [
        text for text in quoted for part in text.split("…") if part.strip() and part not in source
    ]
    assert missing == []


def test_the_runbook_quotes_the_log_lines_on_call_looks_for() -> None:
    text = text_of(RUNBOOK)
    for message in [
        "scheduler run finished",
        "stream poll finished",
        "attempt finished",
        "expired claim recovered",
        "malformed stream command recorded",
        "state store unavailable; retrying",
    ]:
        assert f'`"{message}"`' in text, message
