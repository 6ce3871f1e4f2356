"""mailctl against the real local stack, both started the way an operator starts them.

The stack is ``python scripts/local_stack.py`` (what ``make local`` runs) on a
free port, with its own redis-server; mailctl runs as a separate process.
Nothing is faked: the intake and operator handler modules, the stream
poller and Redis are the real ones, in stub SMTP mode.

The tests of one module share one stack. The last one stops it with SIGINT,
as Ctrl-C would, and checks that it shuts down cleanly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import redis

from tests.support.redis_server import free_port

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_START_TIMEOUT_S = 60
STACK_STOP_TIMEOUT_S = 30
# The stream poller runs at boot and then once a minute, blocking 2 s per read:
# a command published while the stack runs is handled within a few seconds.
MALFORMED_WAIT_S = 75
BANNER_END = "Ctrl-C stops everything."
STREAM = "mail:delivery_commands"
LOGIN_CODE = "482913"


def mailctl_command() -> list[str]:
    """The installed console script next to this Python, else ``python -m mailctl``."""
    script = Path(sys.executable).with_name("mailctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mailctl"]


def clean_environment() -> dict[str, str]:
    """This environment without service settings or a mailctl default that would steer the run."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("MAIL_") and name != "LOCAL_REDIS_DIR"
    }


@dataclass
class LocalStack:
    process: subprocess.Popen[bytes]
    api_url: str
    redis_addr: str
    log_path: Path
    log_file: IO[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def redis(self) -> redis.Redis:
        host, _, port = self.redis_addr.rpartition(":")
        return redis.Redis(host=host, port=int(port), decode_responses=True)

    def stop(self) -> int:
        """Ctrl-C, and the exit code once it has shut down (killed if it will not)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=STACK_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()
        return self.process.returncode


def start_stack(workdir: Path) -> LocalStack:
    """Start the local stack on a free port and wait for its banner."""
    port = free_port()
    env = clean_environment()
    env.update(
        LOCAL_API_PORT=str(port),
        LOCAL_REDIS_DIR=str(workdir / "redis"),
        MAIL_SMTP_MODE="stub",
        PYTHONUNBUFFERED="1",
    )
    # A file, not a pipe: the handlers log every request, and a pipe nobody
    # reads would fill up and stall the stack.
    log_path = workdir / "local_stack.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "scripts/local_stack.py"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    stack = LocalStack(process, f"http://127.0.0.1:{port}", "", log_path, log_file)
    deadline = time.monotonic() + STACK_START_TIMEOUT_S
    while BANNER_END not in stack.log():
        if process.poll() is not None or time.monotonic() > deadline:
            stack.stop()
            pytest.fail(f"the local stack did not start; its output:\n{stack.log()}")
        time.sleep(0.1)
    found = re.search(r"^  redis +(\S+:\d+)", stack.log(), re.MULTILINE)
    assert found, stack.log()
    stack.redis_addr = found.group(1)
    assert f"API       {stack.api_url}" in stack.log()
    return stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = start_stack(tmp_path_factory.mktemp("local-stack"))
    yield local
    local.stop()


def mailctl(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_environment()
    return subprocess.run(
        [*mailctl_command(), "--api", stack.api_url, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def succeeded(completed: subprocess.CompletedProcess[str]) -> str:
    assert completed.returncode == 0, (completed.returncode, completed.stdout, completed.stderr)
    return completed.stdout


def as_json(completed: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(succeeded(completed))


@dataclass(frozen=True)
class SentTest:
    delivery_id: str
    idempotency_key: str
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def login_delivery(stack: LocalStack) -> SentTest:
    """One login code sent with `mailctl send-test`, with a code of the caller's."""
    key = f"e2e-{uuid.uuid4()}"
    result = mailctl(
        stack,
        "send-test", "--email", "ada@example.com", "--code", LOGIN_CODE,
        "--locale", "en", "--idempotency-key", key,
    )  # fmt: skip
    found = re.fullmatch(r"delivery (\S+): suppressed\n", succeeded(result))
    assert found, result.stdout
    return SentTest(found.group(1), key, result)


# --------------------------------------------------------------------------- the intake


def test_send_test_is_accepted_and_suppressed_in_stub_mode(login_delivery: SentTest) -> None:
    # Given the stack in stub mode, and a code sent with `send-test --code`
    result = login_delivery.result

    # Then the intake answered with a delivery id, suppressed, and the code was never shown
    assert login_delivery.delivery_id.startswith("dlv_")
    assert LOGIN_CODE not in result.stdout + result.stderr
    assert result.stderr == ""  # the key was given: nothing to remind the operator of


def test_send_test_again_with_the_same_key_is_a_replay(
    stack: LocalStack, login_delivery: SentTest
) -> None:
    # When the same request is sent again with the same idempotency key
    again = mailctl(
        stack,
        "send-test", "--email", "ada@example.com", "--code", LOGIN_CODE,
        "--idempotency-key", login_delivery.idempotency_key,
    )  # fmt: skip

    # Then the answer is the same delivery, marked as a replay
    assert succeeded(again) == (
        f"delivery {login_delivery.delivery_id}: suppressed"
        "  (a replay of an earlier request with this idempotency key)\n"
    )


def test_send_test_with_a_generated_code_shows_it_once(stack: LocalStack) -> None:
    # When send-test makes the code and the key up
    result = mailctl(stack, "send-test", "--email", "bob@example.com")

    # Then it shows the code once, the key on stderr, and the outcome
    out = succeeded(result)
    code = re.search(r"^login code: (\d{6})  \(generated by mailctl", out, re.MULTILINE)
    assert code, out
    assert (out + result.stderr).count(code.group(1)) == 1
    assert re.search(r"^delivery dlv_\S+: suppressed$", out, re.MULTILINE)
    assert result.stderr.startswith("idempotency key: ")


def test_a_known_path_with_a_wrong_method_is_405(stack: LocalStack) -> None:
    # When the intake is asked with GET
    url = f"{stack.api_url}/api/v1/internal/login-code-deliveries"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)  # noqa: S310 (the local stack's URL)

    # Then the stack answers 405 with the error body
    with refused.value as answer:
        assert answer.code == 405
        assert json.loads(answer.read())["error"]["code"] == "method_not_allowed"


# --------------------------------------------------------------------------- the operator API


def test_deliveries_list_shows_the_sent_delivery(
    stack: LocalStack, login_delivery: SentTest
) -> None:
    # When deliveries are listed as a table
    out = succeeded(mailctl(stack, "deliveries", "list"))

    # Then the test delivery is a row, suppressed
    rows = [line.split() for line in out.splitlines()]
    assert rows[0][:2] == ["DELIVERY", "ID"]
    row = next(row for row in rows if row[0] == login_delivery.delivery_id)
    assert "suppressed" in row
    assert "ada@example.com" in row


def test_deliveries_get_shows_the_delivery_but_never_the_code(
    stack: LocalStack, login_delivery: SentTest
) -> None:
    # When the delivery is read, as lines and as JSON
    lines = succeeded(mailctl(stack, "deliveries", "get", login_delivery.delivery_id))
    raw = mailctl(stack, "--json", "deliveries", "get", login_delivery.delivery_id)

    # Then it is the delivery that was sent, and the login code is in neither
    assert re.search(rf"^delivery_id: +{login_delivery.delivery_id}$", lines, re.MULTILINE)
    assert re.search(r"^status: +suppressed$", lines, re.MULTILINE)
    assert re.search(r"^created_at: +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", lines, re.MULTILINE)
    delivery = as_json(raw)
    assert delivery["delivery_id"] == login_delivery.delivery_id
    assert delivery["idempotency_key"] == login_delivery.idempotency_key
    assert delivery["to"] == ["ada@example.com"]
    assert LOGIN_CODE not in lines + raw.stdout


def test_deliveries_attempts_of_a_suppressed_login_code(
    stack: LocalStack, login_delivery: SentTest
) -> None:
    # When the attempts of the stub-suppressed delivery are listed
    table = mailctl(stack, "deliveries", "attempts", login_delivery.delivery_id)
    raw = mailctl(stack, "--json", "deliveries", "attempts", login_delivery.delivery_id)

    # Then there are none: stub mode suppresses a login code without an attempt
    assert as_json(raw) == {"items": []}
    assert succeeded(table) == "no attempts\n"


def test_deliveries_list_filtered_by_status_as_json(
    stack: LocalStack, login_delivery: SentTest
) -> None:
    # When suppressed deliveries are listed as JSON
    page = as_json(mailctl(stack, "deliveries", "list", "--status", "suppressed", "--json"))

    # Then the answer is the API's page, with the test delivery and only suppressed ones
    assert set(page) == {"items", "next_cursor"}
    assert login_delivery.delivery_id in [item["delivery_id"] for item in page["items"]]
    assert {item["status"] for item in page["items"]} == {"suppressed"}


def test_deliveries_list_by_idempotency_key_pages_with_all(
    stack: LocalStack, login_delivery: SentTest
) -> None:
    # When the deliveries of one idempotency key are listed a page of one at a time
    key = login_delivery.idempotency_key
    argv = ["--json", "deliveries", "list", "--idempotency-key", key, "--limit", "1", "--all"]
    page = as_json(mailctl(stack, *argv))

    # Then the one delivery of that key is the whole answer
    assert [item["delivery_id"] for item in page["items"]] == [login_delivery.delivery_id]
    assert page["next_cursor"] is None


def test_resend_of_a_suppressed_delivery_makes_a_linked_clone(
    stack: LocalStack, login_delivery: SentTest
) -> None:
    parent_id = login_delivery.delivery_id
    key = f"resend-{uuid.uuid4()}"

    # When the suppressed delivery is resent
    first = mailctl(stack, "deliveries", "resend", parent_id, "--idempotency-key", key)

    # Then a clone was made, from operator_resend, linked to its parent
    out = succeeded(first)
    resent = re.match(rf"resent {parent_id} as (dlv_\S+)\n", out)
    assert resent, out
    clone_id = resent.group(1)
    assert clone_id != parent_id
    assert re.search(r"^source: +operator_resend$", out, re.MULTILINE)
    assert re.search(rf"^parent_delivery_id: +{parent_id}$", out, re.MULTILINE)

    # When the same resend is sent again with the same key
    again = as_json(
        mailctl(stack, "--json", "deliveries", "resend", parent_id, "--idempotency-key", key)
    )

    # Then it is the same clone
    assert again["delivery_id"] == clone_id
    assert again["parent_delivery_id"] == parent_id
    assert again["source"] == "operator_resend"

    # And the parent is untouched
    parent = as_json(mailctl(stack, "--json", "deliveries", "get", parent_id))
    assert parent["status"] == "suppressed"
    assert parent["parent_delivery_id"] is None


def test_resend_without_a_key_prints_the_one_it_made_up(
    stack: LocalStack, login_delivery: SentTest
) -> None:
    # When a resend is asked without --idempotency-key
    result = mailctl(stack, "--json", "deliveries", "resend", login_delivery.delivery_id)

    # Then the generated key is on stderr, ready to retry the same resend
    clone = as_json(result)
    found = re.match(r"idempotency key: (\S+)  \(to retry this same resend", result.stderr)
    assert found, result.stderr
    assert clone["idempotency_key"] == found.group(1)


def test_an_unknown_delivery_is_an_error_line_and_exit_1(stack: LocalStack) -> None:
    # When a delivery that does not exist is asked for
    result = mailctl(stack, "deliveries", "get", "dlv_00000000000000000000000000")

    # Then mailctl exits 1 with the API's not_found error on stderr
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: not_found: ")
    assert result.stderr.endswith("(HTTP 404)\n")


def test_a_malformed_stream_command_shows_in_malformed_list(stack: LocalStack) -> None:
    # Given a command without most required fields, published to the stack's stream
    with stack.redis() as client:
        entry_id = str(client.xadd(STREAM, {"delivery_id": "e2e-bad-1", "source": "notification"}))

    # When the stream poller has handled it
    deadline = time.monotonic() + MALFORMED_WAIT_S
    while True:
        page = as_json(mailctl(stack, "--json", "malformed", "list"))
        if entry_id in [item["stream_entry_id"] for item in page["items"]]:
            break
        assert time.monotonic() < deadline, f"{entry_id} never became malformed:\n{stack.log()}"
        time.sleep(0.5)

    # Then it is listed, and readable on its own with its failure code and raw fields
    assert entry_id in succeeded(mailctl(stack, "malformed", "list"))
    record = as_json(mailctl(stack, "--json", "malformed", "get", entry_id))
    assert record["stream_entry_id"] == entry_id
    assert record["failure_code"] == "missing_field"
    assert record["raw_fields"]["delivery_id"] == "e2e-bad-1"
    lines = succeeded(mailctl(stack, "malformed", "get", entry_id))
    assert re.search(r"^failure_code: +missing_field$", lines, re.MULTILINE)


def test_dead_letters_list_answers(stack: LocalStack) -> None:
    # When dead letters are listed (stub mode makes none)
    page = as_json(mailctl(stack, "--json", "dead-letters", "list"))

    # Then the answer is an empty page
    assert page == {"items": [], "next_cursor": None}
    assert succeeded(mailctl(stack, "dead-letters", "list")) == "no dead letters\n"


# --------------------------------------------------------------------------- stopping


def test_ctrl_c_stops_the_stack_cleanly(stack: LocalStack) -> None:
    # When the stack gets SIGINT, as from Ctrl-C
    code = stack.stop()

    # Then it stops the poller, the HTTP server and Redis in order, and exits 0
    log = stack.log()
    assert code == 0, log
    assert log.index("scheduled functions stopped") < log.index("HTTP server stopped")
    assert log.index("HTTP server stopped") < log.index("redis-server stopped")
