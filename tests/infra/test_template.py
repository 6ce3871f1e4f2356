"""Infrastructure checks on template.yaml: what the deployed bundle promises."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

from mailcore.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_template() -> dict[str, Any]:
    template, problems = decode(str(REPO_ROOT / "template.yaml"))
    assert problems == []
    assert template is not None
    return dict(template)


TEMPLATE = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
FUNCTIONS = {
    name: resource["Properties"]
    for name, resource in RESOURCES.items()
    if resource["Type"] == "AWS::Serverless::Function"
}
GLOBAL_FUNCTION: dict[str, Any] = TEMPLATE["Globals"]["Function"]


def api_events() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (function, event_name, event["Properties"])
        for function, properties in FUNCTIONS.items()
        for event_name, event in properties.get("Events", {}).items()
        if event["Type"] == "Api"
    ]


def test_functions_run_python_3_13_on_arm64_with_the_shared_layer() -> None:
    assert GLOBAL_FUNCTION["Runtime"] == "python3.13"
    assert GLOBAL_FUNCTION["Architectures"] == ["arm64"]
    assert GLOBAL_FUNCTION["Layers"] == [{"Ref": "MailCoreLayer"}]
    for properties in FUNCTIONS.values():
        assert "Runtime" not in properties or properties["Runtime"] == "python3.13"
        assert "Architectures" not in properties


def test_the_layer_is_built_for_the_same_runtime_and_architecture() -> None:
    layer = RESOURCES["MailCoreLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": "arm64"}
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    content = REPO_ROOT / layer["Properties"]["ContentUri"]
    recipe = (content / "Makefile").read_text()
    assert "build-MailCoreLayer:" in recipe
    assert "LAYER_PLATFORM ?= manylinux2014_aarch64" in recipe
    assert "--python-version 3.13" in recipe
    assert (content / "mailcore" / "__init__.py").is_file()
    requirements = [
        line
        for line in (content / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert requirements
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", line) for line in requirements)


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_each_handler_exists_with_a_unique_module_name(function: str) -> None:
    properties = FUNCTIONS[function]
    module, _, attribute = properties["Handler"].rpartition(".")
    source = REPO_ROOT / properties["CodeUri"] / f"{module}.py"
    assert source.is_file()
    defined = {
        node.name
        for node in ast.parse(source.read_text()).body
        if isinstance(node, ast.FunctionDef)
    }
    assert attribute in defined
    modules = [p["Handler"].rpartition(".")[0] for p in FUNCTIONS.values()]
    assert modules.count(module) == 1
    assert module == Path(properties["CodeUri"]).name


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_each_function_has_sample_events(function: str) -> None:
    module = FUNCTIONS[function]["Handler"].rpartition(".")[0]
    assert sorted((REPO_ROOT / "events").glob(f"{module}_*.json"))


def test_every_api_method_requires_iam_authorization() -> None:
    apis = {n: r for n, r in RESOURCES.items() if r["Type"] == "AWS::Serverless::Api"}
    assert apis
    for api in apis.values():
        assert api["Properties"]["Auth"]["DefaultAuthorizer"] == "AWS_IAM"
    events = api_events()
    assert events
    for function, event_name, properties in events:
        assert properties["RestApiId"]["Ref"] in apis, (function, event_name)
        assert properties.get("Auth", {}).get("Authorizer", "AWS_IAM") == "AWS_IAM"
    assert not [r for r in RESOURCES.values() if r["Type"] == "AWS::Serverless::HttpApi"]


def test_the_auth_intake_route_is_wired() -> None:
    routes = {(p["Method"].lower(), p["Path"]) for _, _, p in api_events()}
    assert ("post", "/api/v1/internal/login-code-deliveries") in routes


def test_every_mail_variable_the_template_sets_is_a_known_setting() -> None:
    variables = set(GLOBAL_FUNCTION["Environment"]["Variables"])
    for properties in FUNCTIONS.values():
        variables |= set(properties.get("Environment", {}).get("Variables", {}))
    mail_variables = {name for name in variables if name.startswith("MAIL_")}
    assert "MAIL_REDIS_ADDR" in mail_variables
    assert mail_variables <= set(Settings.variable_names())


LOG_GROUPS = {
    name: resource["Properties"]
    for name, resource in RESOURCES.items()
    if resource["Type"] == "AWS::Logs::LogGroup"
}
ALARMS = {
    name: resource["Properties"]
    for name, resource in RESOURCES.items()
    if resource["Type"] == "AWS::CloudWatch::Alarm"
}
QUEUES = {
    name: resource["Properties"]
    for name, resource in RESOURCES.items()
    if resource["Type"] == "AWS::SQS::Queue"
}


def scheduled_functions() -> list[str]:
    return sorted(
        name
        for name, properties in FUNCTIONS.items()
        if any(event["Type"] == "Schedule" for event in properties.get("Events", {}).values())
    )


def test_every_function_keeps_its_logs_for_a_bounded_time() -> None:
    for properties in FUNCTIONS.values():
        group = RESOURCES[properties["LoggingConfig"]["LogGroup"]["Ref"]]
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_a_kms_key_given_encrypts_every_log_group_and_retention_bounds_each() -> None:
    # Given the stack's log groups: one per function and the API's access log
    assert len(LOG_GROUPS) == len(FUNCTIONS) + 1
    assert TEMPLATE["Conditions"]["HasLogKmsKey"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "LogKmsKeyArn"}, ""]}]
    }
    for name, group in LOG_GROUPS.items():
        # Then each is kept LogRetentionDays, and encrypted with LogKmsKeyArn when it is set
        assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
        assert group["KmsKeyId"] == {
            "Fn::If": ["HasLogKmsKey", {"Ref": "LogKmsKeyArn"}, {"Ref": "AWS::NoValue"}]
        }, name


def test_the_log_key_parameter_takes_a_key_arn_or_nothing() -> None:
    # CloudWatch Logs takes a key ARN only: CloudFormation refuses an alias or a bare id
    parameter = TEMPLATE["Parameters"]["LogKmsKeyArn"]
    assert parameter["Default"] == ""
    pattern = re.compile(parameter["AllowedPattern"])
    for value in (
        "",
        "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws-cn:kms:cn-north-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab",
    ):
        assert pattern.fullmatch(value), value
    for value in (
        "alias/mail-logs",
        "arn:aws:kms:eu-west-1:123456789012:alias/mail-logs",
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws:kms:eu-west-1:1234:key/1234abcd",
    ):
        assert not pattern.fullmatch(value), value


def test_every_queue_is_encrypted_at_rest() -> None:
    assert set(QUEUES) >= {"AttemptQueue", "AttemptDeadLetterQueue", "ScheduledRunFailureQueue"}
    for name, queue in QUEUES.items():
        assert queue.get("SqsManagedSseEnabled") is True or queue.get("KmsMasterKeyId"), name


def test_the_scheduled_functions_run_one_at_a_time() -> None:
    # The lease-guarded poller and scheduler (and the cleanup) are singletons:
    # a tick that meets a running one is throttled and retried, never run beside it
    assert scheduled_functions() == ["CleanupFunction", "SchedulerFunction", "StreamPollerFunction"]
    for name in scheduled_functions():
        assert FUNCTIONS[name]["ReservedConcurrentExecutions"] == 1, name
    for name in set(FUNCTIONS) - set(scheduled_functions()):
        assert "ReservedConcurrentExecutions" not in FUNCTIONS[name], name


@pytest.mark.parametrize("function", scheduled_functions())
def test_a_failed_or_dropped_scheduled_run_reaches_an_alarmed_queue(function: str) -> None:
    config = FUNCTIONS[function]["EventInvokeConfig"]
    # A failed run is not run again, and a tick not started within a minute is
    # dropped (the next one is due): neither piles up behind a stuck run
    assert config["MaximumRetryAttempts"] == 0
    assert config["MaximumEventAgeInSeconds"] == 60  # the least Lambda allows
    # Either is recorded, with its error, in an encrypted queue that an alarm watches
    destination = config["DestinationConfig"]["OnFailure"]
    assert destination == {
        "Type": "SQS",
        "Destination": {"Fn::GetAtt": ["ScheduledRunFailureQueue", "Arn"]},
    }
    queue = QUEUES["ScheduledRunFailureQueue"]
    assert queue["SqsManagedSseEnabled"] is True
    queue_name = {"Fn::GetAtt": ["ScheduledRunFailureQueue", "QueueName"]}
    watched = [
        alarm
        for alarm in ALARMS.values()
        if alarm.get("MetricName") == "ApproximateNumberOfMessagesVisible"
        and alarm["Dimensions"] == [{"Name": "QueueName", "Value": queue_name}]
    ]
    assert [(a["Threshold"], a["ComparisonOperator"]) for a in watched] == [
        (0, "GreaterThanThreshold")
    ]
    assert "ScheduledRunFailureQueueUrl" in TEMPLATE["Outputs"]


# Every $context variable API Gateway may put in an access log line that would
# carry what a caller sent rather than who sent it and what became of it.
REQUEST_CONTENT = re.compile(
    r"\$input|\$method|\$context\.requestOverride|\$context\.responseOverride"
    r"|body|header|querystring|authorizer",
    re.IGNORECASE,
)


def test_the_api_access_log_names_the_request_and_the_caller_and_never_a_body() -> None:
    # Given the API stage's access log setting
    [api] = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::Serverless::Api"]
    setting = api["AccessLogSetting"]
    assert setting["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    line_format = setting["Format"]
    assert "\n" not in line_format

    # When API Gateway fills in its variables, each line is one JSON object
    line = json.loads(re.sub(r"\$context\.[A-Za-z.]+", "x", line_format))
    fields = dict(re.findall(r'"(\w+)":"(\$context\.[A-Za-z.]+)"', line_format))
    assert set(fields) == set(line)

    # Then it names the request (and its Lambda invocation and trace) and the
    # IAM identity that signed it, with the route and the answer's status
    assert {
        "$context.requestId",
        "$context.integration.requestId",
        "$context.xrayTraceId",
        "$context.identity.caller",
        "$context.identity.userArn",
        "$context.identity.accountId",
        "$context.resourcePath",
        "$context.status",
    } <= set(fields.values())
    # And never a body, a header or a query string
    assert not REQUEST_CONTENT.search(line_format)


def test_the_attempt_queue_has_a_dead_letter_queue_and_outlasts_the_worker() -> None:
    queue = RESOURCES["AttemptQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["AttemptDeadLetterQueue", "Arn"]
    }
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 3
    worker = FUNCTIONS["AttemptWorkerFunction"]
    assert queue["VisibilityTimeout"] >= 6 * worker["Timeout"]


def test_the_attempt_worker_reports_partial_batch_failures_with_bounded_concurrency() -> None:
    [event] = FUNCTIONS["AttemptWorkerFunction"]["Events"].values()
    assert event["Type"] == "SQS"
    properties = event["Properties"]
    assert properties["Queue"] == {"Fn::GetAtt": ["AttemptQueue", "Arn"]}
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "AttemptWorkerConcurrency"}
    variables = GLOBAL_FUNCTION["Environment"]["Variables"]
    assert variables["MAIL_ATTEMPT_WORKER_CONCURRENCY"] == {"Ref": "AttemptWorkerConcurrency"}


def test_the_bound_on_claims_in_flight_is_a_parameter_empty_by_default() -> None:
    # Every function gets it (the intakes, the poller and the scheduler claim)
    variables = GLOBAL_FUNCTION["Environment"]["Variables"]
    assert variables["MAIL_MAX_CLAIMS_IN_FLIGHT"] == {"Ref": "MaxClaimsInFlight"}
    parameter = TEMPLATE["Parameters"]["MaxClaimsInFlight"]
    # Empty is unset: the functions derive it from the workers (50 per worker)
    assert parameter["Default"] == ""
    base = {"MAIL_REDIS_ADDR": "x:1", "MAIL_ATTEMPT_WORKER_CONCURRENCY": "4"}
    assert Settings.from_environ({**base, "MAIL_MAX_CLAIMS_IN_FLIGHT": ""}).claims_in_flight_bound
    # CloudFormation refuses what the functions would refuse at cold start
    pattern = re.compile(parameter["AllowedPattern"])
    for value in ("10", "200", "1000000"):
        assert pattern.fullmatch(value)
        settings = Settings.from_environ({**base, "MAIL_MAX_CLAIMS_IN_FLIGHT": value})
        assert settings.claims_in_flight_bound == int(value)
    for value in ("0", "9", "010", "-5", "many", " 200"):
        assert not pattern.fullmatch(value), value


@pytest.mark.parametrize("function", ["SchedulerFunction", "StreamPollerFunction"])
def test_looping_functions_are_ticked_every_minute_and_outlive_the_tick(function: str) -> None:
    properties = FUNCTIONS[function]
    [event] = properties["Events"].values()
    assert event["Type"] == "Schedule"
    assert event["Properties"]["Schedule"] == "rate(1 minute)"
    assert properties["Timeout"] > 60


@pytest.mark.parametrize(
    "function", ["IntakeApiFunction", "StreamPollerFunction", "SchedulerFunction"]
)
def test_functions_that_dispatch_attempts_may_send_to_the_queue(function: str) -> None:
    policies = FUNCTIONS[function]["Policies"]
    assert {
        "SQSSendMessagePolicy": {"QueueName": {"Fn::GetAtt": ["AttemptQueue", "QueueName"]}}
    } in (policies)


def test_the_openapi_document_lists_exactly_the_routes_the_template_deploys() -> None:
    document = json.loads((REPO_ROOT / "docs" / "openapi.json").read_text())
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    deployed = {(p["Method"].upper(), p["Path"]) for _, _, p in api_events()}
    assert documented == deployed


def test_there_is_an_alarm_for_each_incident_the_runbook_covers() -> None:
    metrics = {props.get("MetricName") for props in ALARMS.values()}
    assert {
        "ApproximateNumberOfMessagesVisible",  # attempt DLQ not empty
        "DeadLetters",
        "AttemptScheduleOldestAge",
        "MalformedCommands",
    } <= metrics
    expressions = [
        props
        for props in ALARMS.values()
        if any("Expression" in m for m in props.get("Metrics", []))
    ]
    lambda_metrics = {
        m["MetricStat"]["Metric"]["MetricName"]
        for props in expressions
        for m in props["Metrics"]
        if "MetricStat" in m
    }
    assert lambda_metrics == {"Errors", "Throttles"}

    def covered(metric: str) -> set[str]:
        return {
            m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"]
            for props in expressions
            for m in props["Metrics"]
            if "MetricStat" in m and m["MetricStat"]["Metric"]["MetricName"] == metric
        }

    # every function's errors raise an alarm
    assert covered("Errors") == set(FUNCTIONS)
    # and so do its throttles, but for the two ticked every minute with reserved
    # concurrency 1, where a tick meeting the previous run is throttled by design
    assert covered("Throttles") == set(FUNCTIONS) - {"SchedulerFunction", "StreamPollerFunction"}


def test_service_metric_alarms_match_what_the_code_emits() -> None:
    from mailcore.telemetry import METRICS_NAMESPACE, SERVICE_NAME, Metric

    for props in ALARMS.values():
        if props.get("Namespace") == METRICS_NAMESPACE:
            assert props["MetricName"] in {m.value for m in Metric}
            assert props["Dimensions"] == [{"Name": "service", "Value": SERVICE_NAME}]


def dashboard_metrics() -> list[list[str]]:
    """Every metric row of the dashboard, CloudWatch's "." and "..." shorthands expanded."""
    body = RESOURCES["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    document = json.loads(re.sub(r"\$\{[^}]+\}", "substituted", body))
    rows: list[list[str]] = []
    for widget in document["widgets"]:
        previous: list[str] = []
        for row in widget["properties"]["metrics"]:
            values = [value for value in row if not isinstance(value, dict)]
            if values[0] == "...":  # the previous row, with its last values replaced
                values = previous[: len(previous) - len(values) + 1] + values[1:]
            else:  # "." repeats the previous row's value at that place
                values = [previous[n] if value == "." else value for n, value in enumerate(values)]
            rows.append(values)
            previous = values
    return rows


def test_the_dashboard_shows_only_metrics_the_code_emits_with_its_dimensions() -> None:
    from mailcore.domain.states import DeliveryStatus
    from mailcore.telemetry import METRICS_NAMESPACE, SERVICE_NAME, STATUS_DIMENSION, Metric

    ours = [row for row in dashboard_metrics() if row[0] == METRICS_NAMESPACE]
    assert ours
    for _, name, *dimensions in ours:
        assert name in {m.value for m in Metric}, name
        pairs = dict(zip(dimensions[::2], dimensions[1::2], strict=True))
        if name == Metric.DELIVERIES_BY_STATUS:
            assert pairs.keys() == {"service", STATUS_DIMENSION}
            assert pairs[STATUS_DIMENSION] in {s.value for s in DeliveryStatus}
        else:
            assert pairs.keys() == {"service"}
        assert pairs["service"] == SERVICE_NAME


def test_the_oldest_scheduled_age_alarm_sits_above_the_retry_ladder() -> None:
    from mailcore.config import Settings

    ladder = Settings.from_environ({"MAIL_REDIS_ADDR": "x:1"}).retry_schedule
    threshold_ms = ALARMS["OldestScheduledAgeAlarm"]["Threshold"]
    assert threshold_ms > sum(step.total_seconds() for step in ladder) * 1000


def test_only_the_attempt_worker_may_read_the_smtp_secret() -> None:
    readers = [
        name
        for name, properties in FUNCTIONS.items()
        if "SmtpPasswordSecretArn" in json.dumps(properties.get("Policies", []))
    ]
    assert readers == ["AttemptWorkerFunction"]


def test_every_function_may_read_the_redis_token_and_nothing_else_broad() -> None:
    for name, properties in FUNCTIONS.items():
        policies = json.dumps(properties.get("Policies", []))
        assert "RedisAuthSecretArn" in policies, name
        # No wildcard or managed admin policies: SAM policy templates scoped to one resource.
        assert "AdministratorAccess" not in policies
        assert '"*"' not in policies


def test_redis_is_either_given_or_created_as_elasticache_serverless() -> None:
    cache = RESOURCES["Cache"]
    assert cache["Type"] == "AWS::ElastiCache::ServerlessCache"
    assert cache["Condition"] == "CreateCache"
    address = GLOBAL_FUNCTION["Environment"]["Variables"]["MAIL_REDIS_ADDR"]
    assert address["Fn::If"][0] == "CreateCache"
