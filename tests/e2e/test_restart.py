"""Ctrl-C stops the local stack cleanly, and work it accepted completes after a restart.

The first rung of the retry ladder is 3 s here: the stack is stopped right
after the capture server answered the first try with 451, before the retry
is due, and started again on the same data directory.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.e2e.stack import port_is_closed, read_mail, start_stack, wait_for

pytestmark = pytest.mark.integration

SLOW_FIRST_RETRY = {"MAIL_RETRY_SCHEDULE": "3s,1s,1s"}
STOP_ORDER = [
    "stopping",
    "HTTP server stopped",
    "scheduled functions stopped",
    "attempt worker stopped",
    "SQS (moto) stopped",
    "SMTP capture stopped",
    "redis-server stopped",
]


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.standalone_redis("the stack's own redis-server is what is restarted")
def test_pending_work_survives_ctrl_c_and_completes_after_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_stack(data_dir, tmp_path / "first.log", SLOW_FIRST_RETRY)
    try:
        with first.redis() as client:
            redis_pid = int(client.info("server")["process_id"])
        redis_port = int(first.redis_addr.rpartition(":")[2])

        # Given a login code whose first try the capture server refused with 451
        email = f"tempfail-once+{uuid.uuid4().hex[:10]}@example.com"
        answer = first.send_login_code(email, f"e2e-{uuid.uuid4()}")
        assert answer.status == 200, answer
        delivery_id = answer.body["delivery_id"]
        outcomes = wait_for(
            lambda: [a["outcome"] for a in first.attempts(delivery_id) if a["outcome"]] or None,
            5,
            f"the first attempt of {delivery_id} to finish",
        )
        assert outcomes == ["transient_failure"]
    finally:
        # When the stack gets Ctrl-C before the retry is due
        code = first.stop()

    # Then it stopped cleanly, in order, leaving no process or port behind
    log = first.log()
    assert code == 0, log
    positions = [log.index(line) for line in STOP_ORDER]
    assert positions == sorted(positions), log[-3000:]
    assert not process_exists(redis_pid)
    for port in (first.api_port, first.smtp_port, redis_port):
        assert port_is_closed(port), port
    # And the retry had not happened yet: the capture server saw the first try only
    assert first.mail_for(delivery_id) == []
    tries = [line for line in log.splitlines() if line.startswith("[smtp-capture]")]
    assert [line for line in tries if delivery_id in line and "-> 451 4.3.0" in line] == tries
    assert len(tries) == 1

    # When the stack starts again on the same data directory
    second = start_stack(data_dir, tmp_path / "second.log", SLOW_FIRST_RETRY)
    try:
        # Then the delivery is still there, is retried once more and delivered
        message = read_mail(second.wait_for_mail(delivery_id, 15))
        assert message["To"] == email
        delivery = second.settled(delivery_id)
        assert delivery["status"] == "sent"
        assert [a["outcome"] for a in second.attempts(delivery_id)] == [
            "transient_failure",
            "accepted",
        ]
    finally:
        assert second.stop() == 0, second.log()[-3000:]
