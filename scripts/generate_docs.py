"""Regenerate the parts of docs/ that are derived from code.

``python scripts/generate_docs.py`` rewrites each generated section in place;
``--check`` changes nothing and exits 1 if a document has drifted from the
code (the test suite runs it that way).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr

from mailcore.config import SEED_VARIABLES_NOT_USED, Settings
from mailcore.durations import format_duration
from mailcore.store.keys import key_catalog

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
API_FUNCTIONS = ("intake_api", "operator_api")


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
    if isinstance(value, tuple) and all(isinstance(step, timedelta) for step in value):
        return "`" + ",".join(format_duration(step) for step in value) + "`"
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


def seed_variables_table() -> str:
    rows = ["| variable | instead |", "| --- | --- |"]
    for name, instead in SEED_VARIABLES_NOT_USED.items():
        rows.append(f"| `{name}` | {instead} |")
    return "\n".join(rows)


def openapi_document() -> str:
    """The HTTP contract, generated from the API functions' Powertools resolvers."""
    from aws_lambda_powertools.event_handler.openapi.merge import OpenAPIMerge
    from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn

    # Importing a handler module is its cold start: give it a configuration.
    # Nothing connects anywhere while the document is generated.
    os.environ.setdefault("MAIL_REDIS_ADDR", "127.0.0.1:6379")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    merged = OpenAPIMerge(
        title="Mail service internal API",
        version="1.0.0",
        description=(
            "Trusted REST API of the mail service: the Auth / Session service's login-code "
            "intake and the operators' reads and resend. Every method requires AWS IAM "
            "(SigV4-signed requests, execute-api:Invoke). Errors are always "
            '{"error": {"code", "message"}}.'
        ),
        security_schemes={
            "sigv4": APIKey.model_validate(
                {
                    "type": "apiKey",
                    "in": APIKeyIn.header,
                    "name": "Authorization",
                    "description": "AWS Signature Version 4 (execute-api).",
                }
            )
        },
        security=[{"sigv4": []}],
        on_conflict="error",
    )
    for name in API_FUNCTIONS:
        # Lambda puts each function's folder on the path; so does this script.
        sys.path.insert(0, str(ROOT / "functions" / name))
        module = importlib.import_module(name)
        merged.add_schema(module.app.get_openapi_schema())
    document = json.loads(merged.get_openapi_json_schema())
    # Powertools documents a 422 for validation errors; these APIs answer 400
    # invalid_request instead (install_error_handlers), so say that.
    for operations in document["paths"].values():
        for operation in operations.values():
            operation["responses"].pop("422", None)
    schemas = document["components"]["schemas"]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


# whole documents generated from code
FILES: dict[str, Callable[[], str]] = {"openapi.json": openapi_document}

# document -> section name -> renderer
SECTIONS: dict[str, dict[str, Callable[[], str]]] = {
    "redis-keys.md": {"key-catalog": redis_key_table},
    "configuration.md": {"settings": configuration_table, "seed-variables": seed_variables_table},
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
    for document, renderer in FILES.items():
        path = DOCS / document
        wanted = renderer()
        if not path.exists() or path.read_text(encoding="utf-8") != wanted:
            drifted.append(document)
            if not check:
                path.write_text(wanted, encoding="utf-8")
    if check and drifted:
        print(f"out of date: {', '.join(drifted)}; run: python scripts/generate_docs.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
