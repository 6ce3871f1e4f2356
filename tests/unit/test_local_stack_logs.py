"""What `make local` prints for the functions: one readable line per event, or JSON.

All functions run in one process; each line must still name the function
that wrote it, with that function's request id, even while another function
is in the middle of an invocation. The handlers here are stand-ins written
the way the real ones are: a Powertools ``Logger`` named after the service and
``inject_lambda_context``, invoked through the stack's ``LambdaFunction``.
"""

from __future__ import annotations

import io
import json
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aws_lambda_powertools import Logger

from scripts.local_stack import logs
from scripts.local_stack.lambda_runtime import LambdaFunction
from scripts.local_stack.logs import FunctionLog, LogFormat
from scripts.local_stack.main import LocalOptions, StartError, changed_settings

HUMAN_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (?P<label>\S+) +(?P<level>[A-Z]+) +(?P<rest>.*)$")
STACK_SETTINGS = {
    "MAIL_REDIS_ADDR": "127.0.0.1:6379",
    "MAIL_SMTP_MODE": "smtp",
    "MAIL_SMTP_ADDR": "127.0.0.1:1025",
    "MAIL_SMTP_FROM_EMAIL": "noreply@mail.localhost.test",
    "MAIL_SMTP_TLS": "none",
}


class Functions:
    """A scheduler and an attempt worker as the stack loads them, logging to ``output``."""

    def __init__(self, log_format: LogFormat) -> None:
        # A service name of this test's own, so the process-wide "mail" logger is untouched.
        service = f"mail-test-{uuid.uuid4().hex[:8]}"
        self.output = io.StringIO()
        logs.install(log_format, service, self.output)
        logger = Logger(service=service)  # what each handler module creates at import
        self.worker_started = threading.Event()
        self.worker_may_finish = threading.Event()

        @logger.inject_lambda_context(log_event=False)
        def worker(event: dict[str, Any], context: Any) -> None:
            self.worker_started.set()  # its Lambda context keys are appended now
            assert self.worker_may_finish.wait(10)
            logger.info("attempt finished", delivery_id="dlv_1", status="sent")

        @logger.inject_lambda_context(log_event=False)
        def scheduler(event: dict[str, Any], context: Any) -> None:
            logger.info("scheduler run finished", claimed=3, stopped_because="time is up")

        self.worker = LambdaFunction(
            "AttemptWorkerFunction", worker, log=FunctionLog("attempt_worker")
        )
        self.scheduler = LambdaFunction(
            "SchedulerFunction", scheduler, log=FunctionLog("scheduler")
        )

    def scheduler_runs_while_the_worker_is_busy(self) -> list[str]:
        """The worker starts, the scheduler runs and logs, then the worker logs; the lines."""
        worker = threading.Thread(target=self.worker.invoke, args=({},))
        worker.start()
        assert self.worker_started.wait(10)
        self.scheduler.invoke({})
        self.worker_may_finish.set()
        worker.join()
        return self.output.getvalue().splitlines()


def line_of(lines: list[str], message: str, parse: Callable[[str], Any]) -> Any:
    found = [parse(line) for line in lines if message in line]
    assert len(found) == 1, lines
    return found[0]


def test_a_json_line_names_the_function_that_wrote_it_while_another_one_runs() -> None:
    # Given the worker in the middle of an invocation (its context keys appended)
    functions = Functions(LogFormat.JSON)

    # When the scheduler logs, and then the worker
    lines = functions.scheduler_runs_while_the_worker_is_busy()

    # Then each JSON line names its own function, request and cold start
    scheduler = line_of(lines, "scheduler run finished", json.loads)
    worker = line_of(lines, "attempt finished", json.loads)
    assert scheduler["function_name"] == "SchedulerFunction"
    assert worker["function_name"] == "AttemptWorkerFunction"
    assert scheduler["function_request_id"] != worker["function_request_id"]
    assert scheduler["cold_start"] is True
    assert worker["cold_start"] is True
    assert scheduler["claimed"] == 3
    assert worker["delivery_id"] == "dlv_1"
    assert "delivery_id" not in scheduler


def test_a_warm_invocation_is_not_a_cold_start() -> None:
    # Given a function invoked once already
    functions = Functions(LogFormat.JSON)
    functions.scheduler.invoke({})

    # When it is invoked again
    functions.scheduler.invoke({})

    # Then only its first line says cold start
    lines = [json.loads(line) for line in functions.output.getvalue().splitlines()]
    assert [line["cold_start"] for line in lines] == [True, False]


def test_the_human_line_is_time_function_level_message_and_fields() -> None:
    # Given the same two functions, printing human lines
    functions = Functions(LogFormat.HUMAN)

    # When the scheduler logs while the worker is busy, and then the worker
    lines = functions.scheduler_runs_while_the_worker_is_busy()

    # Then each event is one line naming the function that wrote it, with its fields
    scheduler = line_of(lines, "scheduler run finished", HUMAN_LINE.fullmatch)
    worker = line_of(lines, "attempt finished", HUMAN_LINE.fullmatch)
    assert (scheduler["label"], scheduler["level"]) == ("scheduler", "INFO")
    assert scheduler["rest"] == 'scheduler run finished claimed=3 stopped_because="time is up"'
    assert (worker["label"], worker["level"]) == ("attempt_worker", "INFO")
    assert worker["rest"] == "attempt finished delivery_id=dlv_1 status=sent"
    assert len(lines) == 2


def test_an_emf_document_prints_as_one_metrics_line_and_other_lines_pass() -> None:
    # Given stdout as the human format wraps it
    real = io.StringIO()
    stdout = logs.EmfAsText(real)
    document = {
        "_aws": {
            "Timestamp": 1_795_338_900_000,
            "CloudWatchMetrics": [
                {
                    "Namespace": "MailService",
                    "Dimensions": [["service"]],
                    "Metrics": [
                        {"Name": "DeliveriesSent", "Unit": "Count"},
                        {"Name": "ProviderSendDuration", "Unit": "Milliseconds"},
                    ],
                }
            ],
        },
        "service": "mail",
        "DeliveriesSent": [1.0],
        "ProviderSendDuration": [3.0, 4.5],
    }

    # When Powertools prints a metrics flush, and something else prints a line in two parts
    print(json.dumps(document, separators=(",", ":")), file=stdout)
    stdout.write("[smtp-capture] 2026-11-22T09:15:00.412Z ")
    stdout.write("-> 250\n")

    # Then the flush is one metrics line and the other line is untouched
    lines = real.getvalue().splitlines()
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{3} metrics +DeliveriesSent=1 ProviderSendDuration=3,4\.5ms", lines[0]
    )
    assert lines[1] == "[smtp-capture] 2026-11-22T09:15:00.412Z -> 250"


def test_two_threads_printing_at_once_never_share_a_line() -> None:
    # Given stdout as the human format wraps it
    real = io.StringIO()
    stdout = logs.EmfAsText(real)

    # When two threads print lines in small pieces at the same time
    def printer(name: str) -> None:
        for number in range(200):
            for piece in (name, "-", str(number), "\n"):
                stdout.write(piece)

    threads = [threading.Thread(target=printer, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then every line is whole
    lines = real.getvalue().splitlines()
    assert sorted(lines) == sorted(f"{n}-{i}" for n in ("a", "b") for i in range(200))


# --------------------------------------------------------------------------- the switch


@pytest.mark.parametrize(
    ("given", "chosen"),
    [({}, LogFormat.HUMAN), ({"LOCAL_LOG_FORMAT": "json"}, LogFormat.JSON),
     ({"LOCAL_LOG_FORMAT": "HUMAN"}, LogFormat.HUMAN)],
)  # fmt: skip
def test_the_log_format_is_human_unless_local_log_format_says_json(
    given: dict[str, str], chosen: LogFormat
) -> None:
    assert LocalOptions.from_environ(dict(given)).log_format is chosen


def test_an_unknown_log_format_stops_the_start_naming_the_choices() -> None:
    with pytest.raises(StartError, match=r"LOCAL_LOG_FORMAT must be human or json, not 'xml'"):
        LocalOptions.from_environ({"LOCAL_LOG_FORMAT": "xml"})


# --------------------------------------------------------------------------- the banner


def test_the_banner_lists_every_mail_setting_that_is_not_its_default() -> None:
    # Given the stack's settings, one the user changed, and one set to its default
    environ = {**STACK_SETTINGS, "MAIL_RETRY_SCHEDULE": "5s,5s", "MAIL_SMTP_TIMEOUT": "15s"}

    # When the banner lists the settings
    shown = dict(changed_settings(environ))

    # Then it has every setting that differs from its default, as it was set
    assert shown == {**STACK_SETTINGS, "MAIL_RETRY_SCHEDULE": "5s,5s"}


def test_the_banner_never_shows_a_secret_setting() -> None:
    # Given an SMTP password and a Redis password in the environment
    environ = {
        **STACK_SETTINGS,
        "MAIL_SMTP_USERNAME": "mailer",
        "MAIL_SMTP_PASSWORD": "hunter2-smtp",
        "MAIL_REDIS_PASSWORD": "hunter2-redis",
    }

    # When the banner lists the settings
    shown = dict(changed_settings(environ))

    # Then both are listed as set, their values masked
    assert shown["MAIL_SMTP_PASSWORD"] == "***"
    assert shown["MAIL_REDIS_PASSWORD"] == "***"
    assert shown["MAIL_SMTP_USERNAME"] == "mailer"
    assert "hunter2" not in repr(shown)
