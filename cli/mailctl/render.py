"""Turning API answers into text for a terminal: aligned tables and key: value records."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MISSING = "-"
REDACTED = "[redacted]"
# A table cell is cut here so one long summary does not wrap every row.
MAX_CELL = 60


def iso_utc(epoch_ms: object, *, precise: bool = True) -> str:
    """``2026-11-22T09:15:00.123Z`` (``precise``) or ``2026-11-22T09:15:00Z``; ``-`` for none."""
    if epoch_ms is None or isinstance(epoch_ms, bool) or not isinstance(epoch_ms, int | float):
        return MISSING if epoch_ms is None else str(epoch_ms)
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    if precise:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def is_time_field(name: str) -> bool:
    """Fields that hold an epoch in milliseconds (``duration_ms`` is a length, not a time)."""
    return name.endswith("_at_ms") or name == "scheduled_for_ms"


def text(value: object) -> str:
    """One value as a table cell or record line would show it."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(text(item) for item in value) if value else MISSING
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return " ".join(str(value).split())  # no newline can break a table row


def clip(value: str, width: int = MAX_CELL) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


@dataclass(frozen=True)
class Column:
    title: str
    value: Callable[[Mapping[str, Any]], str]
    clip: bool = False


def field(name: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda record: text(record.get(name))


def time_field(name: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda record: iso_utc(record.get(name), precise=False)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Rows under a header, each column as wide as its widest cell, two spaces apart."""
    cells = [[column.title for column in columns]]
    for row in rows:
        line = []
        for column in columns:
            value = column.value(row)
            line.append(clip(value) if column.clip else value)
        cells.append(line)
    widths = [max(len(line[index]) for line in cells) for index in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


def record(pairs: Sequence[tuple[str, str]]) -> str:
    """``key: value`` lines with the values aligned."""
    if not pairs:
        return ""
    width = max(len(key) for key, _ in pairs) + 1
    return "\n".join(f"{key + ':':<{width}} {value}".rstrip() for key, value in pairs)


# --------------------------------------------------------------------------- the shapes


def mask_secret_variables(delivery: Mapping[str, Any]) -> dict[str, Any]:
    """The delivery with every variable named in ``secret_variables`` shown as redacted.

    The API already redacts them; this makes sure nothing secret reaches a
    terminal even from a server that forgot to.
    """
    masked = dict(delivery)
    secret = {str(name) for name in delivery.get("secret_variables") or []}
    variables = delivery.get("variables")
    if isinstance(variables, dict) and secret:
        masked["variables"] = {
            name: REDACTED if name in secret else value for name, value in variables.items()
        }
    return masked


def raw_text(value: object) -> str:
    """A field as the producer sent it: bare, or as a quoted JSON string when it has
    anything a record line would hide (line breaks, runs of blanks, nothing at all)."""
    if isinstance(value, str) and value and text(value) == value:
        return value
    return json.dumps(value, ensure_ascii=False)


def attachment_line(attachment: Mapping[str, Any]) -> str:
    details = [text(attachment.get("content_type")), f"{text(attachment.get('size_bytes'))} B"]
    if attachment.get("inline"):
        details.append(f"inline, cid {text(attachment.get('content_id'))}")
    return f"{text(attachment.get('filename'))} ({', '.join(details)})"


def delivery_record(delivery: Mapping[str, Any]) -> str:
    shown = mask_secret_variables(delivery)
    pairs: list[tuple[str, str]] = []
    for name, value in shown.items():
        if name == "variables":
            variables = value if isinstance(value, dict) else {}
            if not variables:
                pairs.append(("variables", MISSING))
            for variable, variable_value in variables.items():
                pairs.append((f"variables.{variable}", text(variable_value)))
        elif name == "attachments":
            attachments = value if isinstance(value, list) else []
            if not attachments:
                pairs.append(("attachments", MISSING))
            for attachment in attachments:
                line = (
                    attachment_line(attachment)
                    if isinstance(attachment, dict)
                    else text(attachment)
                )
                pairs.append(("attachment", line))
        elif is_time_field(name):
            pairs.append((name.removesuffix("_ms"), iso_utc(value)))
        else:
            pairs.append((name, text(value)))
    return record(pairs)


def malformed_record(item: Mapping[str, Any]) -> str:
    """A malformed command: the service's fields (times readable), then each raw field
    under the name the producer gave it, with its value as sent."""
    pairs: list[tuple[str, str]] = []
    for name, value in item.items():
        if name == "raw_fields":
            fields = value if isinstance(value, dict) else {}
            if not fields:
                pairs.append(("raw_fields", MISSING))
            for field_name, raw in fields.items():
                pairs.append((f"raw_fields.{field_name}", raw_text(raw)))
        elif is_time_field(name):
            pairs.append((name.removesuffix("_ms"), iso_utc(value)))
        else:
            pairs.append((name, text(value)))
    return record(pairs)


DELIVERY_COLUMNS = (
    Column("DELIVERY ID", field("delivery_id")),
    Column("CREATED (UTC)", time_field("created_at_ms")),
    Column("STATUS", field("status")),
    Column("SOURCE", field("source")),
    Column("TO", field("to"), clip=True),
    Column("TEMPLATE", field("template_id")),
    Column("ATTEMPTS", field("attempt_count")),
    Column("LAST OUTCOME", field("last_outcome")),
)


def duration(record: Mapping[str, Any]) -> str:
    value = record.get("duration_ms")
    return MISSING if value is None else f"{value} ms"


ATTEMPT_COLUMNS = (
    Column("#", field("attempt_no")),
    Column("STATUS", field("status")),
    Column("OUTCOME", field("outcome")),
    Column("SCHEDULED FOR (UTC)", time_field("scheduled_for_ms")),
    Column("STARTED (UTC)", time_field("started_at_ms")),
    Column("DURATION", duration),
    Column("FAILURE CODE", field("failure_code")),
    Column("SUMMARY", field("summary"), clip=True),
)

MALFORMED_COLUMNS = (
    Column("STREAM ENTRY ID", field("stream_entry_id")),
    Column("RECORDED (UTC)", time_field("recorded_at_ms")),
    Column("STREAM", field("stream")),
    Column("FAILURE CODE", field("failure_code")),
    Column("MESSAGE", field("failure_message"), clip=True),
)


def dead_letter_recipients(record: Mapping[str, Any]) -> str:
    delivery = record.get("delivery")
    return text(delivery.get("to")) if isinstance(delivery, dict) else MISSING


DEAD_LETTER_COLUMNS = (
    Column("DELIVERY ID", field("delivery_id")),
    Column("DEAD-LETTERED (UTC)", time_field("dead_lettered_at_ms")),
    Column("ATTEMPTS", field("attempts")),
    Column("LAST OUTCOME", field("last_outcome")),
    Column("TO", dead_letter_recipients, clip=True),
    Column("SUMMARY", field("last_summary"), clip=True),
)
