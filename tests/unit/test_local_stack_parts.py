"""The local stack's pure parts: what it reads from template.yaml, the capture server's
rules and file names, the SQS event it builds, partial batch answers, and the
environment it gives the handlers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cfnlint.decode import decode

from scripts.local_stack.attempt_queue import DUMMY_CREDENTIALS, failed_message_ids, sqs_event
from scripts.local_stack.http_api import build_routes
from scripts.local_stack.main import (
    LocalOptions,
    StartError,
    configure_handler_environment,
    function_specs,
)
from scripts.local_stack.sam_template import SamTemplate, parse_rate
from scripts.local_stack.smtp_capture import Rule, file_name, rule_for

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageTypeDef

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = SamTemplate.load(REPO_ROOT / "template.yaml")


def raw_template() -> dict[str, Any]:
    template, problems = decode(str(REPO_ROOT / "template.yaml"))
    assert problems == []
    assert template is not None
    return dict(template)


RAW_TEMPLATE = raw_template()


def function_properties(logical_id: str) -> dict[str, Any]:
    return dict(RAW_TEMPLATE["Resources"][logical_id]["Properties"])


# --------------------------------------------------------------------------- template.yaml


@pytest.mark.parametrize("module", ["stream_poller", "scheduler", "attempt_worker", "intake_api"])
def test_timeouts_come_from_the_function_or_the_globals(module: str) -> None:
    spec = TEMPLATE.function_for_module(module)
    assert spec is not None
    properties = function_properties(spec.logical_id)
    expected = properties.get("Timeout", RAW_TEMPLATE["Globals"]["Function"]["Timeout"])
    assert spec.timeout_s == expected
    assert spec.code_dir == (REPO_ROOT / properties["CodeUri"]).resolve()


def test_the_queue_and_batch_size_are_the_templates() -> None:
    worker = TEMPLATE.function_for_module("attempt_worker")
    assert worker is not None
    queue = TEMPLATE.queue_of(worker)
    declared = RAW_TEMPLATE["Resources"]["AttemptQueue"]["Properties"]
    assert queue.logical_id == "AttemptQueue"
    assert queue.visibility_timeout_s == declared["VisibilityTimeout"]
    assert queue.max_receive_count == declared["RedrivePolicy"]["maxReceiveCount"]
    assert queue.dead_letter is not None
    assert queue.dead_letter.logical_id == "AttemptDeadLetterQueue"
    batch = function_properties(worker.logical_id)["Events"]["Attempts"]["Properties"]["BatchSize"]
    assert TEMPLATE.batch_size(worker) == min(batch, 10)


def test_scheduled_functions_run_at_their_rules_rate() -> None:
    for module in ("stream_poller", "scheduler"):
        spec = TEMPLATE.function_for_module(module)
        assert spec is not None
        assert [s.every_s for s in TEMPLATE.schedules(spec)] == [60.0]


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(1 minute)", 60.0),
        ("rate(5 minutes)", 300.0),
        ("rate(2 hours)", 7200.0),
        ("rate(1 day)", 86400.0),
        ("cron(0 12 * * ? *)", None),
    ],
)
def test_rates(expression: str, seconds: float | None) -> None:
    assert parse_rate(expression) == seconds


def test_a_function_missing_from_the_template_gets_the_globals() -> None:
    spec = TEMPLATE.default_function("LaterFunction", "later")
    assert spec.timeout_s == RAW_TEMPLATE["Globals"]["Function"]["Timeout"]
    assert spec.code_dir == REPO_ROOT / "functions" / "later"


# --------------------------------------------------------------------------- the sample events


def sample_api_events() -> list[Path]:
    return sorted(REPO_ROOT.glob("events/*_api_*.json"))


@pytest.mark.parametrize("path", sample_api_events(), ids=lambda path: path.name)
def test_every_sample_api_event_is_what_the_stack_would_send(path: Path) -> None:
    # Given a sample API Gateway event
    event = json.loads(path.read_text())
    routes = build_routes(lambda e, c: None, lambda e, c: None)

    # Then its method and path resolve to its resource, with its path parameters
    resolution = routes.resolve(event["httpMethod"], event["path"])
    assert resolution is not None
    assert resolution.route is not None
    assert resolution.route.resource == event["resource"]
    assert resolution.route.function.name.lower().startswith(path.name.split("_api")[0])
    assert resolution.path_parameters == event["pathParameters"]
    assert event["requestContext"]["resourcePath"] == event["resource"]


def test_every_api_route_has_a_sample_event() -> None:
    routes = build_routes(lambda e, c: None, lambda e, c: None)
    samples = {
        (event["httpMethod"], event["resource"])
        for event in (json.loads(path.read_text()) for path in sample_api_events())
    }
    assert {(route.method, route.resource) for route in routes.routes} <= samples


# --------------------------------------------------------------------------- the capture server


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("ada@example.com", Rule.ACCEPT),
        ("tempfail-once@example.com", Rule.TEMPFAIL_ONCE),
        ("Tempfail-Once+abc@example.com", Rule.TEMPFAIL_ONCE),
        ("tempfail-always.7@example.com", Rule.TEMPFAIL_ALWAYS),
        ("reject@example.com", Rule.REJECT),
        ("rejected-too@example.com", Rule.REJECT),
        ("ada@reject.example.com", Rule.ACCEPT),  # only the local part counts
        ("ada.tempfail-once@example.com", Rule.ACCEPT),
    ],
)
def test_the_recipients_local_part_picks_the_answer(address: str, rule: Rule) -> None:
    assert rule_for(address) is rule


def test_mail_files_sort_by_arrival_and_name_the_message() -> None:
    arrived = datetime(2026, 11, 22, 9, 15, 0, 123_456, tzinfo=UTC)
    assert file_name(arrived, "<dlv_01M8@mail.localhost.test>") == (
        "20261122T091500.123-dlv_01M8@mail.localhost.test.eml"
    )
    assert file_name(arrived, "<a/../b c\r\n@x>") == "20261122T091500.123-a_.._b_c_@x.eml"
    assert file_name(arrived, None) == "20261122T091500.123-no-message-id.eml"
    later = datetime(2026, 11, 22, 9, 15, 1, 0, tzinfo=UTC)
    assert file_name(arrived, "<z@x>") < file_name(later, "<a@x>")


# --------------------------------------------------------------------------- the SQS event source


def message(number: int) -> MessageTypeDef:
    return {
        "MessageId": f"m-{number}",
        "ReceiptHandle": f"r-{number}",
        "MD5OfBody": "d41d8cd98f00b204e9800998ecf8427e",
        "Body": json.dumps({"n": number}),
        "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1795338900000"},
        "MessageAttributes": {
            "kind": {"StringValue": "claim", "DataType": "String"},
            "raw": {"BinaryValue": b"\x00\x01", "DataType": "Binary"},
        },
    }


def test_the_event_is_the_sqs_event_lambda_delivers() -> None:
    arn = "arn:aws:sqs:us-east-1:123456789012:mail-local-AttemptQueue"
    event = sqs_event([message(1), message(2)], arn, "us-east-1")

    sample = json.loads((REPO_ROOT / "events" / "attempt_worker_sqs_batch.json").read_text())
    assert [set(record) for record in event["Records"]] == [set(sample["Records"][0])] * 2
    record = event["Records"][0]
    assert record["messageId"] == "m-1"
    assert record["receiptHandle"] == "r-1"
    assert record["body"] == '{"n": 1}'
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == arn
    assert record["awsRegion"] == "us-east-1"
    assert record["messageAttributes"]["kind"] == {
        "stringValue": "claim",
        "binaryValue": None,
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }
    assert record["messageAttributes"]["raw"]["binaryValue"] == "AAE="


@pytest.mark.parametrize(
    ("result", "failed"),
    [
        (None, set()),
        ({}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, {"b"}),
        ({"batchItemFailures": [{"itemIdentifier": "x"}]}, {"a", "b", "c"}),  # unknown id
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, {"a", "b", "c"}),
        ({"batchItemFailures": "b"}, {"a", "b", "c"}),
        ("done", {"a", "b", "c"}),
    ],
)
def test_partial_batch_answers_are_read_as_lambda_reads_them(result: Any, failed: set[str]) -> None:
    assert failed_message_ids(result, ["a", "b", "c"]) == failed


# --------------------------------------------------------------------------- handler environment


def test_the_capture_server_settings_fill_only_what_is_unset() -> None:
    environ = {"MAIL_SMTP_FROM_NAME": "Mine", "MAIL_RETRY_SCHEDULE": "1s"}
    configure_handler_environment(
        environ,
        redis_addr="127.0.0.1:7000",
        capture_addr="127.0.0.1:1025",
        sqs_endpoint="http://127.0.0.1:5000",
        queue_url="http://127.0.0.1:5000/123456789012/q",
    )
    assert environ["MAIL_REDIS_ADDR"] == "127.0.0.1:7000"
    assert environ["MAIL_SMTP_MODE"] == "smtp"
    assert environ["MAIL_SMTP_ADDR"] == "127.0.0.1:1025"
    assert environ["MAIL_SMTP_TLS"] == "none"
    assert environ["MAIL_SMTP_FROM_EMAIL"] == "noreply@mail.localhost.test"
    assert environ["MAIL_SMTP_FROM_NAME"] == "Mine"
    assert environ["MAIL_RETRY_SCHEDULE"] == "1s"
    assert environ["MAIL_ATTEMPT_QUEUE_URL"] == "http://127.0.0.1:5000/123456789012/q"
    assert environ["AWS_ENDPOINT_URL_SQS"] == "http://127.0.0.1:5000"
    assert environ["AWS_ACCESS_KEY_ID"] == DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"]
    assert environ["AWS_REGION"] == environ["AWS_DEFAULT_REGION"]


def test_the_stack_refuses_a_near_miss_of_its_settings_and_leaves_other_tools_alone() -> None:
    # Given another tool's LOCAL_ variable and mailctl's MAIL_API_URL, Then the stack starts
    quiet = {"LOCAL_RANK": "0", "MAIL_API_URL": "http://127.0.0.1:3000", "LOCAL_API_PORT": "3001"}
    assert LocalOptions.from_environ(quiet).api_port == 3001

    # Given a misspelt name of its own, Then it refuses to start, naming the one meant
    with pytest.raises(StartError, match=r"LOCAL_DATADIR .*did you mean LOCAL_DATA_DIR\?"):
        LocalOptions.from_environ({"LOCAL_DATADIR": "/tmp/x"})


def test_a_given_smtp_server_and_mode_are_kept() -> None:
    environ = {
        "MAIL_SMTP_MODE": "stub",
        "MAIL_SMTP_ADDR": "smtp.example.com:587",
        "MAIL_REDIS_ADDR": "redis.internal:6379",
        "AWS_PROFILE": "dev",
        "AWS_REGION": "eu-west-1",
    }
    notes = configure_handler_environment(
        environ,
        redis_addr=None,
        capture_addr=None,
        sqs_endpoint="http://127.0.0.1:5000",
        queue_url="http://127.0.0.1:5000/123456789012/q",
    )
    assert notes == []
    assert environ["MAIL_SMTP_MODE"] == "stub"
    assert environ["MAIL_SMTP_ADDR"] == "smtp.example.com:587"
    assert environ["MAIL_REDIS_ADDR"] == "redis.internal:6379"
    assert "MAIL_SMTP_TLS" not in environ
    assert "AWS_ACCESS_KEY_ID" not in environ  # the profile's credentials are used
    assert environ["AWS_DEFAULT_REGION"] == "eu-west-1"


# --------------------------------------------------------------------------- which functions run


def test_every_function_of_the_template_runs() -> None:
    specs, missing = function_specs(TEMPLATE)
    assert set(specs) >= {"intake_api", "operator_api", "stream_poller", "scheduler"}
    assert specs["attempt_worker"].logical_id == "AttemptWorkerFunction"
    if (REPO_ROOT / "functions" / "cleanup" / "cleanup.py").is_file():
        assert "cleanup" in specs
        assert missing == []


def test_a_cleanup_without_code_is_skipped_and_one_outside_the_template_gets_globals(
    tmp_path: Path,
) -> None:
    # Given a template without a cleanup function, over a tree without its code
    template = {
        "Globals": {"Function": {"Timeout": 7}},
        "Resources": {
            name: resource
            for name, resource in RAW_TEMPLATE["Resources"].items()
            if name != "CleanupFunction"
        },
    }
    specs, missing = function_specs(SamTemplate(template, tmp_path))

    # Then cleanup is reported missing, named as the template would name it
    assert "cleanup" not in specs
    assert [(spec.logical_id, spec.timeout_s) for spec in missing] == [("CleanupFunction", 7)]

    # And once its code exists, it runs on the Globals' timeout
    (tmp_path / "functions" / "cleanup").mkdir(parents=True)
    (tmp_path / "functions" / "cleanup" / "cleanup.py").write_text("")
    specs, missing = function_specs(SamTemplate(template, tmp_path))
    assert missing == []
    assert specs["cleanup"].timeout_s == 7
