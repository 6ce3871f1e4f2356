"""Micro-benchmark: build and write one message, as an attempt worker does for each delivery.

    python bench/mime_build.py [--iterations N]

Three messages: a login code (``auth.login_code`` in ``en``: text and HTML),
a rendered command with cc, bcc and two small attachments (one inline), and a
template command in German (quoted-printable bodies, an encoded subject), the
last two as ``bench/end_to_end.py`` sends them. Each is built with
``mailcore.mail.build_message`` and written as the SMTP provider writes it;
prints the best and median microseconds per message over five rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailcore.contracts.stream import DeliveryCommand, decode_command
from mailcore.domain.model import Delivery, Envelope, PayloadMode, Source
from mailcore.domain.states import DeliveryStatus
from mailcore.mail import Sender, build_message
from mailcore.providers.smtp import _wire_bytes
from mailcore.rendering.catalog import (
    RenderedMessage,
    TemplateCatalog,
    default_catalog_dir,
    render_delivery,
)
from mailcore.services.stream_intake import delivery_from_command
from tests.support.commands import command

SENDER = Sender("noreply@mail.bench.test", "Example Mail")
NOW = datetime(2026, 11, 22, 9, 15, tzinfo=UTC)
ROUNDS = 5


def cases(catalog: TemplateCatalog) -> dict[str, tuple[Delivery, RenderedMessage]]:
    login = Delivery(
        delivery_id="dlv_01M80V9H2T8868TPANAKDAMX8J",
        source=Source.AUTHSESSION,
        status=DeliveryStatus.QUEUED,
        payload_mode=PayloadMode.TEMPLATE,
        envelope=Envelope(to=("ada@example.com",)),
        idempotency_key="bench",
        created_at_ms=1_795_338_900_000,
        updated_at_ms=1_795_338_900_000,
        template_id="auth.login_code",
        locale="en",
        variables={"code": "482913"},
        secret_variables=frozenset({"code"}),
    )
    found = {"login_code": (login, render_delivery(catalog, login))}
    for number, (name, mode) in enumerate(
        [("rendered_2_attachments", "rendered"), ("template_de", "template")], start=1
    ):
        fields = command(number, mode=mode)
        decoded = decode_command(
            f"{number}-0", [(k.encode(), v.encode()) for k, v in fields.items()]
        )
        if not isinstance(decoded, DeliveryCommand):
            raise SystemExit(f"command {name} is malformed")
        delivery, _ = delivery_from_command(decoded, 1_795_338_900_000)
        found[name] = (delivery, render_delivery(catalog, delivery))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--iterations", type=int, default=2000, help="messages per round")
    iterations: int = parser.parse_args().iterations
    for name, (delivery, rendered) in cases(TemplateCatalog.load(default_catalog_dir())).items():

        def once(delivery: Delivery = delivery, rendered: RenderedMessage = rendered) -> bytes:
            message = build_message(
                delivery,
                rendered.subject,
                rendered.text_body,
                rendered.html_body,
                SENDER,
                now=NOW,
            )
            return _wire_bytes(message)

        size = len(once())
        for _ in range(min(iterations, 200)):  # warm up
            once()
        rounds = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            for _ in range(iterations):
                once()
            rounds.append((time.perf_counter() - started) / iterations * 1e6)
        print(
            f"{name:24s} best {min(rounds):7.1f} µs, median {statistics.median(rounds):7.1f} µs"
            f" per message ({size:,} bytes)"
        )


if __name__ == "__main__":
    main()
