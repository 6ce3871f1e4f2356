"""Mail as the Notification service's Go publisher writes it, delivered by the local stack.

Each ``go-*`` example of ``docs/asyncapi.yaml`` (unset values as ``""`` or
``null``, route ids like ``email:<notification id>:<user id>``, locales like
``en_US`` or one no template has) is added to the stack's command stream with
``XADD``, made unique for this run, and must arrive at the SMTP capture
server, be readable by operators through its percent-encoded id, and say
which locale it was rendered in. Login codes with such locales go through the
REST intake the same way.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml  # type: ignore[import-untyped]

from mailcore.mail import message_id_for
from tests.e2e.stack import SENDER_DOMAIN, STREAM, LocalStack, read_mail, text_of, wait_for
from tests.e2e.test_mailctl_against_local_api import as_json, mailctl

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DELIVERY_WITHIN_S = 5.0


def go_examples() -> dict[str, dict[str, str]]:
    document = yaml.safe_load((REPO_ROOT / "docs" / "asyncapi.yaml").read_text(encoding="utf-8"))
    examples = document["components"]["messages"]["deliveryCommand"]["examples"]
    return {e["name"]: e["payload"] for e in examples if e["name"].startswith("go-")}


# What each example becomes: the locale rendered, whether that was a fallback, the subject.
EXPECTED: dict[str, tuple[str | None, bool | None, str]] = {
    "go-rendered-zero-values": (None, None, "Your weekly summary"),
    "go-template-posix-locale": ("en", True, "Reset your password"),
    "go-template-unsupported-locale": ("de", True, "Passwort zurücksetzen"),
    "go-template-no-locale": ("en", False, "Reset your password"),
}


def unique_copy(fields: dict[str, str]) -> tuple[dict[str, str], str]:
    """The example with its ids and recipient made unique for this run; and the recipient."""
    run = uuid.uuid4().hex[:10]
    recipient = f"go-{run}@example.com"
    payload: dict[str, Any] = json.loads(fields["payload_json"])
    payload["to"] = [recipient]
    copy = {
        **fields,
        "delivery_id": f"{fields['delivery_id']}/{run}",
        "idempotency_key": f"{fields['idempotency_key']}/{run}",
        "payload_json": json.dumps(payload),
    }
    return copy, recipient


def mail_to(stack: LocalStack, recipient: str) -> Path:
    def captured() -> Path | None:
        for path in stack.mail_dir.glob("*.eml"):
            if read_mail(path)["X-Envelope-To"] == recipient:
                return path
        return None

    return wait_for(captured, DELIVERY_WITHIN_S, f"mail to {recipient}\n{stack.log()[-3000:]}")


def test_every_go_encoding_is_an_example_here() -> None:
    assert set(go_examples()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_command_as_the_go_publisher_writes_it_is_delivered(
    smtp_stack: LocalStack, name: str
) -> None:
    # Given a command written the Go publisher's way
    fields, recipient = unique_copy(go_examples()[name])
    delivery_id = fields["delivery_id"]

    # When it is added to the command stream
    with smtp_stack.redis() as client:
        client.xadd(STREAM, dict(fields))

    # Then its mail arrives, with the Message-ID the id escapes into
    message = read_mail(mail_to(smtp_stack, recipient))
    resolved_locale, fallback, subject = EXPECTED[name]
    assert message["Subject"] == subject
    assert message["Message-ID"] == message_id_for(delivery_id, SENDER_DOMAIN)
    assert message["Cc"] is None
    assert message["Reply-To"] is None
    assert text_of(message)

    # And operators read it through its percent-encoded id: sent, with the
    # zero values as absent and the locale it was rendered in
    delivery = smtp_stack.settled(quote(delivery_id, safe=""))
    assert delivery["delivery_id"] == delivery_id
    assert delivery["status"] == "sent"
    assert (delivery["request_id"], delivery["trace_id"]) == (None, None)
    assert (delivery["cc"], delivery["bcc"], delivery["reply_to"]) == ([], [], [])
    assert (delivery["resolved_locale"], delivery["locale_fallback_used"]) == (
        resolved_locale,
        fallback,
    )
    attempts = smtp_stack.attempts(quote(delivery_id, safe=""))
    assert [a["outcome"] for a in attempts] == ["accepted"]


@pytest.mark.parametrize(
    ("locale", "stored", "resolved", "subject"),
    [
        ("en_US", "en-US", "en", "Your login code"),
        ("de_AT", "de-AT", "de", "Ihr Anmeldecode"),
        ("pt-BR", "pt-BR", "en", "Your login code"),
    ],
)
def test_a_login_code_in_a_locale_we_do_not_ship_falls_back_and_says_so(
    smtp_stack: LocalStack, locale: str, stored: str, resolved: str, subject: str
) -> None:
    recipient = f"locale-{uuid.uuid4().hex[:10]}@example.com"

    # When a login code is asked for in a locale no template of ours has exactly
    answer = smtp_stack.send_login_code(recipient, f"e2e-{uuid.uuid4()}", locale=locale)

    # Then it is accepted and delivered in the nearest language we have
    assert answer.status == 200, answer
    message = read_mail(mail_to(smtp_stack, recipient))
    assert message["Subject"] == subject
    # And the delivery records what was asked, what was used, and that it fell back
    delivery = smtp_stack.settled(answer.body["delivery_id"])
    assert (delivery["locale"], delivery["resolved_locale"], delivery["locale_fallback_used"]) == (
        stored,
        resolved,
        True,
    )


def test_mailctl_reads_a_delivery_by_its_go_route_id(smtp_stack: LocalStack) -> None:
    # Given a delivered command whose id is a Go route id with ':' and '/'
    fields, recipient = unique_copy(go_examples()["go-rendered-zero-values"])
    delivery_id = fields["delivery_id"]
    with smtp_stack.redis() as client:
        client.xadd(STREAM, dict(fields))
    mail_to(smtp_stack, recipient)
    smtp_stack.settled(quote(delivery_id, safe=""))

    # When an operator asks mailctl for it and for its attempts, id as it is
    shown = as_json(mailctl(smtp_stack, "--json", "deliveries", "get", delivery_id))
    attempts = as_json(mailctl(smtp_stack, "--json", "deliveries", "attempts", delivery_id))

    # Then mailctl percent-encodes it and the operator API finds it
    assert shown["delivery_id"] == delivery_id
    assert [a["outcome"] for a in attempts["items"]] == ["accepted"]
