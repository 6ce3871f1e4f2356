"""The ``mailctl`` command: argument parsing and one function per subcommand.

Exit codes: 0 done, 1 the request failed (one ``error: ...`` line on stderr),
2 bad usage (argparse), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO
from urllib.parse import quote

from . import __version__, render
from .client import (
    DEFAULT_API_URL,
    DEFAULT_TIMEOUT_S,
    ApiClient,
    ApiResponse,
    BadAnswer,
    MailctlError,
    resolve_region,
    should_sign,
    validate_api_url,
)

API_ENV = "MAIL_API_URL"
BASE = "/api/v1/internal"
DELIVERIES = f"{BASE}/deliveries"
MALFORMED = f"{BASE}/malformed-commands"
DEAD_LETTERS = f"{BASE}/dead-letters"
LOGIN_CODES = f"{BASE}/login-code-deliveries"
MAX_LIMIT = 200
SEND_TEST_CODE_DIGITS = 6

Command = Callable[[argparse.Namespace, ApiClient, TextIO, TextIO], int]


# --------------------------------------------------------------------------- parsing


def limit_value(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {raw!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_LIMIT}, not {value}")
    return value


def timeout_value(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {raw!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {raw}")
    return value


def add_global_options(parser: argparse.ArgumentParser, *, in_subcommand: bool) -> None:
    """The options every command takes, before or after the subcommand's name.

    In a subcommand their default is SUPPRESS, so an option given before the
    subcommand is not reset by the subcommand's parser.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if in_subcommand else value

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--api",
        metavar="URL",
        default=default(None),
        help=f"the API's base URL, with its stage path if any (default: ${API_ENV}, "
        f"else {DEFAULT_API_URL})",
    )
    group.add_argument(
        "--sigv4",
        action=argparse.BooleanOptionalAction,
        default=default(None),
        help="sign requests with SigV4 for execute-api (default: sign unless the API is "
        "on localhost / 127.0.0.1)",
    )
    group.add_argument(
        "--region",
        default=default(None),
        help="the region to sign for (default: the execute-api host's, else AWS_REGION, "
        "else AWS_DEFAULT_REGION)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the API's JSON answer instead of tables",
    )
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=timeout_value,
        default=default(DEFAULT_TIMEOUT_S),
        help=f"give up on a request after this long (default: {DEFAULT_TIMEOUT_S:g})",
    )


def add_paging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit",
        type=limit_value,
        help=f"items per page, 1 to {MAX_LIMIT} (default: the API's, 50)",
    )
    parser.add_argument("--cursor", help="start from this next_cursor of an earlier page")
    parser.add_argument("--all", action="store_true", help="follow next_cursor until the last page")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailctl",
        description="Operate the mail service: read deliveries, attempts, malformed commands "
        "and dead letters, resend a delivery, send a test login code.",
    )
    parser.add_argument("--version", action="version", version=f"mailctl {__version__}")
    add_global_options(parser, in_subcommand=False)
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def leaf(
        subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        command: Command,
        help_text: str,
    ) -> argparse.ArgumentParser:
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        add_global_options(sub, in_subcommand=True)
        sub.set_defaults(command=command)
        return sub

    deliveries = groups.add_parser("deliveries", help="read and resend deliveries")
    actions = deliveries.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = leaf(actions, "list", deliveries_list, "list deliveries, newest first")
    listing.add_argument("--recipient", help="only deliveries to this address")
    listing.add_argument("--status", help="only deliveries in this status, e.g. suppressed")
    listing.add_argument("--source", help="only deliveries from this source, e.g. notification")
    listing.add_argument("--template-id", help="only deliveries of this template")
    listing.add_argument("--idempotency-key", help="only deliveries with this idempotency key")
    add_paging_options(listing)
    leaf(actions, "get", deliveries_get, "show one delivery").add_argument("delivery_id")
    leaf(
        actions, "attempts", deliveries_attempts, "show a delivery's attempts, oldest first"
    ).add_argument("delivery_id")
    resend = leaf(
        actions,
        "resend",
        deliveries_resend,
        "resend a settled delivery (sent, suppressed, failed, dead_letter) as a linked clone",
    )
    resend.add_argument("delivery_id")
    resend.add_argument(
        "--idempotency-key",
        help="the resend's idempotency key; reuse it to retry the same resend "
        "(default: a new one, printed)",
    )

    malformed = groups.add_parser("malformed", help="stream commands that could not be accepted")
    malformed_actions = malformed.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_paging_options(
        leaf(malformed_actions, "list", malformed_list, "list malformed commands, newest first")
    )
    leaf(malformed_actions, "get", malformed_get, "show one malformed command").add_argument(
        "stream_entry_id"
    )

    dead_letters = groups.add_parser("dead-letters", help="deliveries that exhausted retries")
    dead_letter_actions = dead_letters.add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add_paging_options(leaf(dead_letter_actions, "list", dead_letters_list, "list dead letters"))

    send_test = leaf(
        groups, "send-test", send_test_code, "send a login code through the intake, as a test"
    )
    send_test.add_argument("--email", required=True, help="the address to send it to")
    send_test.add_argument("--locale", default="en", help="the reader's language (default: en)")
    send_test.add_argument(
        "--code",
        help="the login code to send (default: 6 random digits, shown once); never echoed",
    )
    send_test.add_argument(
        "--idempotency-key", help="the request's idempotency key (default: a new one, printed)"
    )
    return parser


def client_for(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ApiClient:
    api_url = args.api or os.environ.get(API_ENV) or DEFAULT_API_URL
    problem = validate_api_url(api_url)
    if problem:
        parser.error(f"--api: {problem}")
    return ApiClient(
        base_url=api_url,
        sign=should_sign(api_url, args.sigv4),
        region=resolve_region(api_url, args.region),
        timeout_s=args.timeout,
    )


# --------------------------------------------------------------------------- output


def print_json(payload: object, out: TextIO) -> None:
    print(json.dumps(payload, indent=2, ensure_ascii=False), file=out)


def expect_object(answer: ApiResponse) -> dict[str, Any]:
    if not isinstance(answer.body, dict):
        raise BadAnswer(f"unexpected answer (HTTP {answer.status}): not a JSON object")
    return answer.body


def expect_page(answer: ApiResponse) -> dict[str, Any]:
    body = expect_object(answer)
    if not isinstance(body.get("items"), list):
        raise BadAnswer(f"unexpected answer (HTTP {answer.status}): no items list")
    return body


def fetch_pages(
    client: ApiClient, path: str, query: Mapping[str, str | int | None], follow: bool
) -> dict[str, Any]:
    """One page, or with ``follow`` every page from there on, merged into one answer."""
    page = expect_page(client.get(path, query))
    if not follow:
        return page
    items = list(page["items"])
    seen: set[str] = set()
    cursor = page.get("next_cursor")
    while cursor:
        if cursor in seen:
            raise MailctlError(f"the API handed out cursor {cursor!r} twice; stopped paging")
        seen.add(cursor)
        page = expect_page(client.get(path, {**query, "cursor": cursor}))
        items.extend(page["items"])
        cursor = page.get("next_cursor")
    return {"items": items, "next_cursor": None}


def print_page(
    page: Mapping[str, Any],
    columns: Sequence[render.Column],
    nothing: str,
    args: argparse.Namespace,
    out: TextIO,
) -> None:
    if args.json:
        print_json(page, out)
        return
    items = [item for item in page["items"] if isinstance(item, dict)]
    print(render.table(items, columns) if items else nothing, file=out)
    cursor = page.get("next_cursor")
    if cursor:
        print(f"next cursor: {cursor}  (pass --cursor {cursor} for the next page)", file=out)


def paging_query(args: argparse.Namespace) -> dict[str, str | int | None]:
    limit = args.limit if args.limit is not None else (MAX_LIMIT if args.all else None)
    return {"limit": limit, "cursor": args.cursor}


def delivery_path(delivery_id: str, *rest: str) -> str:
    return "/".join([DELIVERIES, quote(delivery_id, safe=""), *rest])


def masked(delivery: object) -> object:
    return render.mask_secret_variables(delivery) if isinstance(delivery, dict) else delivery


# --------------------------------------------------------------------------- commands


def deliveries_list(args: argparse.Namespace, client: ApiClient, out: TextIO, err: TextIO) -> int:
    query = {
        "recipient": args.recipient,
        "status": args.status,
        "source": args.source,
        "template_id": args.template_id,
        "idempotency_key": args.idempotency_key,
        **paging_query(args),
    }
    page = fetch_pages(client, DELIVERIES, query, args.all)
    page["items"] = [masked(item) for item in page["items"]]
    print_page(page, render.DELIVERY_COLUMNS, "no deliveries", args, out)
    return 0


def deliveries_get(args: argparse.Namespace, client: ApiClient, out: TextIO, err: TextIO) -> int:
    delivery = render.mask_secret_variables(
        expect_object(client.get(delivery_path(args.delivery_id)))
    )
    if args.json:
        print_json(delivery, out)
    else:
        print(render.delivery_record(delivery), file=out)
    return 0


def deliveries_attempts(
    args: argparse.Namespace, client: ApiClient, out: TextIO, err: TextIO
) -> int:
    page = expect_page(client.get(delivery_path(args.delivery_id, "attempts")))
    print_page(page, render.ATTEMPT_COLUMNS, "no attempts", args, out)
    return 0


def deliveries_resend(args: argparse.Namespace, client: ApiClient, out: TextIO, err: TextIO) -> int:
    key = args.idempotency_key
    if not key:
        key = str(uuid.uuid4())
        # Before the request: a resend whose answer is lost can be retried with it.
        print(
            f"idempotency key: {key}  (to retry this same resend: --idempotency-key {key})",
            file=err,
        )
    answer = client.post(
        delivery_path(args.delivery_id, "resend"), headers={"Idempotency-Key": key}
    )
    clone = render.mask_secret_variables(expect_object(answer))
    if args.json:
        print_json(clone, out)
        return 0
    clone_id = render.text(clone.get("delivery_id"))
    if answer.replayed:
        print(f"already resent with this idempotency key: {clone_id} (a replay)", file=out)
    else:
        print(f"resent {args.delivery_id} as {clone_id}", file=out)
    print(render.delivery_record(clone), file=out)
    return 0


def malformed_list(args: argparse.Namespace, client: ApiClient, out: TextIO, err: TextIO) -> int:
    page = fetch_pages(client, MALFORMED, paging_query(args), args.all)
    print_page(page, render.MALFORMED_COLUMNS, "no malformed commands", args, out)
    return 0


def malformed_get(args: argparse.Namespace, client: ApiClient, out: TextIO, err: TextIO) -> int:
    path = f"{MALFORMED}/{quote(args.stream_entry_id, safe='')}"
    item = expect_object(client.get(path))
    if args.json:
        print_json(item, out)
    else:
        print(render.malformed_record(item), file=out)
    return 0


def dead_letters_list(args: argparse.Namespace, client: ApiClient, out: TextIO, err: TextIO) -> int:
    page = fetch_pages(client, DEAD_LETTERS, paging_query(args), args.all)
    for item in page["items"]:
        if isinstance(item, dict) and isinstance(item.get("delivery"), dict):
            item["delivery"] = masked(item["delivery"])
    print_page(page, render.DEAD_LETTER_COLUMNS, "no dead letters", args, out)
    return 0


def send_test_code(args: argparse.Namespace, client: ApiClient, out: TextIO, err: TextIO) -> int:
    generated = args.code is None
    code = args.code if args.code is not None else random_code()
    key = args.idempotency_key
    if not key:
        key = str(uuid.uuid4())
        print(
            f"idempotency key: {key}  (to retry this same request: --idempotency-key {key})",
            file=err,
        )
    try:
        answer = client.post(
            LOGIN_CODES,
            json_body={"email": args.email, "code": code, "locale": args.locale},
            headers={"Idempotency-Key": key},
        )
    except MailctlError as error:
        # The service never repeats a code in a message; do not trust that here either.
        raise MailctlError(str(error).replace(code, render.REDACTED)) from None
    body = expect_object(answer)
    if generated:
        # The only time a code is shown: mailctl made it up, the operator needs it.
        print(
            f"login code: {code}  (generated by mailctl; shown only this once)",
            file=err if args.json else out,
        )
    if args.json:
        print_json(body, out)
        return 0
    replay = "  (a replay of an earlier request with this idempotency key)"
    print(
        f"delivery {render.text(body.get('delivery_id'))}: {accepted_as(body.get('outcome'))}"
        + (replay if answer.replayed else ""),
        file=out,
    )
    return 0


def accepted_as(outcome: object) -> str:
    """The intake's outcome in words: ``sent`` means accepted for sending, not sent yet."""
    if outcome == "sent":
        return "accepted, queued for sending"
    if outcome == "suppressed":
        return "accepted, suppressed (nothing is sent)"
    return f"accepted, outcome {render.text(outcome)}"


def random_code() -> str:
    return "".join(secrets.choice("0123456789") for _ in range(SEND_TEST_CODE_DIGITS))


# --------------------------------------------------------------------------- entry point


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    client = client_for(args, parser)
    command: Command = args.command
    try:
        return command(args, client, out, err)
    except MailctlError as error:
        print(f"error: {error}", file=err)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return 130
    except BrokenPipeError:
        # The reader went away (`mailctl ... | head`): stop quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
