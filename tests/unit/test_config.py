from datetime import timedelta

import pytest

from mailcore.config import (
    SEED_VARIABLES_NOT_USED,
    ConfigError,
    Settings,
    SmtpMode,
    unknown_variables,
)
from mailctl import cli as mailctl_cli

MINIMAL = {"MAIL_REDIS_ADDR": "cache.internal:6379"}


def test_defaults_apply_when_only_the_redis_address_is_given() -> None:
    # Given only the one required variable
    settings = Settings.from_environ(MINIMAL)

    # Then every other setting takes its documented default
    assert settings.redis_host == "cache.internal"
    assert settings.redis_port == 6379
    assert settings.redis_db == 0
    assert settings.redis_tls_enabled is False
    assert settings.redis_password is None
    assert settings.redis_operation_timeout == timedelta(milliseconds=500)
    assert settings.smtp_mode is SmtpMode.STUB
    assert settings.idempotency_ttl == timedelta(hours=168)
    assert settings.delivery_ttl == timedelta(hours=720)
    assert settings.malformed_command_ttl == timedelta(hours=2160)
    assert settings.redis_command_stream == "mail:delivery_commands"
    assert settings.stream_block_timeout == timedelta(seconds=2)
    assert settings.stream_batch_size == 100
    assert settings.max_recipients == 50
    assert settings.max_subject_chars == 255
    assert settings.max_attachment_bytes == 10 * 1024 * 1024


def test_every_variable_is_read_with_go_durations() -> None:
    settings = Settings.from_environ(
        {
            "MAIL_REDIS_ADDR": "10.0.0.5:6380",
            "MAIL_REDIS_USERNAME": "mail",
            "MAIL_REDIS_PASSWORD": "s3cr3t-token",
            "MAIL_REDIS_DB": "3",
            "MAIL_REDIS_TLS_ENABLED": "true",
            "MAIL_REDIS_OPERATION_TIMEOUT": "750ms",
            "MAIL_SMTP_MODE": "smtp",
            "MAIL_SMTP_ADDR": "smtp.example.com:587",
            "MAIL_SMTP_FROM_EMAIL": "noreply@example.com",
            "MAIL_IDEMPOTENCY_TTL": "24h",
            "MAIL_DELIVERY_TTL": "48h",
            "MAIL_MALFORMED_COMMAND_TTL": "72h",
            "MAIL_REDIS_COMMAND_STREAM": "tenant-a:mail",
            "MAIL_STREAM_BLOCK_TIMEOUT": "500ms",
            "MAIL_STREAM_BATCH_SIZE": "25",
            "MAIL_MAX_RECIPIENTS": "5",
            "MAIL_MAX_SUBJECT_CHARS": "80",
            "MAIL_MAX_ATTACHMENT_BYTES": "1024",
            "UNRELATED": "ignored",
        }
    )
    assert settings.redis_port == 6380
    assert settings.redis_username == "mail"
    assert settings.redis_password is not None
    assert settings.redis_password.get_secret_value() == "s3cr3t-token"
    assert settings.redis_db == 3
    assert settings.redis_tls_enabled is True
    assert settings.redis_operation_timeout == timedelta(milliseconds=750)
    assert settings.smtp_mode is SmtpMode.SMTP
    assert settings.idempotency_ttl == timedelta(hours=24)
    assert settings.delivery_ttl == timedelta(hours=48)
    assert settings.malformed_command_ttl == timedelta(hours=72)
    assert settings.redis_command_stream == "tenant-a:mail"
    assert settings.stream_block_timeout == timedelta(milliseconds=500)
    assert settings.stream_batch_size == 25
    assert (settings.max_recipients, settings.max_subject_chars) == (5, 80)
    assert settings.max_attachment_bytes == 1024


def test_a_missing_redis_address_fails_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="MAIL_REDIS_ADDR is required"):
        Settings.from_environ({})


def test_an_empty_value_counts_as_unset() -> None:
    with pytest.raises(ConfigError, match="MAIL_REDIS_ADDR is required"):
        Settings.from_environ({"MAIL_REDIS_ADDR": "  "})


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("MAIL_REDIS_ADDR", "localhost", "host:port"),
        ("MAIL_REDIS_ADDR", "localhost:99999", "host:port"),
        ("MAIL_REDIS_DB", "-1", "greater than or equal to 0"),
        ("MAIL_REDIS_TLS_ENABLED", "maybe", "valid boolean"),
        ("MAIL_REDIS_OPERATION_TIMEOUT", "15", "invalid duration"),
        ("MAIL_REDIS_OPERATION_TIMEOUT", "0s", "positive duration"),
        ("MAIL_SMTP_MODE", "ses", "'stub' or 'smtp'"),
        ("MAIL_IDEMPOTENCY_TTL", "7d", "invalid duration"),
        ("MAIL_DELIVERY_TTL", "-1h", "positive duration"),
        ("MAIL_STREAM_BATCH_SIZE", "0", "greater than or equal to 1"),
        ("MAIL_STREAM_BATCH_SIZE", "many", "valid integer"),
        ("MAIL_MAX_RECIPIENTS", "5000", "less than or equal to 1000"),
        ("MAIL_MAX_SUBJECT_CHARS", "1000", "less than or equal to 998"),
        ("MAIL_STREAM_BLOCK_TIMEOUT", "2", "invalid duration"),
        ("MAIL_MAX_CLAIMS_IN_FLIGHT", "9", "greater than or equal to 10"),
        ("MAIL_MAX_CLAIMS_IN_FLIGHT", "lots", "valid integer"),
    ],
)
def test_an_invalid_value_fails_fast_naming_the_variable(
    variable: str, value: str, reason: str
) -> None:
    # Given one bad variable among good ones
    environ = {**MINIMAL, variable: value}

    # When the configuration is loaded, Then the error names the variable and the rule
    with pytest.raises(ConfigError) as raised:
        Settings.from_environ(environ)
    assert variable in str(raised.value)
    assert reason in str(raised.value)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_environ({"MAIL_SMTP_MODE": "ses", "MAIL_DELIVERY_TTL": "soon"})
    message = str(raised.value)
    assert "MAIL_REDIS_ADDR" in message
    assert "MAIL_SMTP_MODE" in message
    assert "MAIL_DELIVERY_TTL" in message


def test_the_redis_password_never_shows_in_errors_or_reprs() -> None:
    # Given a password and an invalid companion setting
    environ = {**MINIMAL, "MAIL_REDIS_PASSWORD": "hunter2-token", "MAIL_REDIS_DB": "x"}

    # Then the failure does not quote the password
    with pytest.raises(ConfigError) as raised:
        Settings.from_environ(environ)
    assert "hunter2-token" not in str(raised.value)

    # And a valid configuration does not print it either
    settings = Settings.from_environ({**MINIMAL, "MAIL_REDIS_PASSWORD": "hunter2-token"})
    assert "hunter2-token" not in repr(settings)
    assert "hunter2-token" not in str(settings.model_dump())


def test_variable_names_list_every_setting() -> None:
    assert Settings.variable_names() == [
        "MAIL_REDIS_ADDR",
        "MAIL_REDIS_USERNAME",
        "MAIL_REDIS_PASSWORD",
        "MAIL_REDIS_PASSWORD_SECRET_ARN",
        "MAIL_REDIS_DB",
        "MAIL_REDIS_TLS_ENABLED",
        "MAIL_REDIS_CLUSTER",
        "MAIL_REDIS_PARTITIONS",
        "MAIL_REDIS_OPERATION_TIMEOUT",
        "MAIL_SMTP_MODE",
        "MAIL_IDEMPOTENCY_TTL",
        "MAIL_DELIVERY_TTL",
        "MAIL_MALFORMED_COMMAND_TTL",
        "MAIL_REDIS_COMMAND_STREAM",
        "MAIL_STREAM_BLOCK_TIMEOUT",
        "MAIL_STREAM_BATCH_SIZE",
        "MAIL_STREAM_RETENTION",
        "MAIL_MAX_RECIPIENTS",
        "MAIL_MAX_SUBJECT_CHARS",
        "MAIL_MAX_ATTACHMENT_BYTES",
        "MAIL_SMTP_ADDR",
        "MAIL_SMTP_TLS",
        "MAIL_SMTP_USERNAME",
        "MAIL_SMTP_PASSWORD",
        "MAIL_SMTP_PASSWORD_SECRET_ARN",
        "MAIL_SMTP_FROM_EMAIL",
        "MAIL_SMTP_FROM_NAME",
        "MAIL_SMTP_TIMEOUT",
        "MAIL_SMTP_SEND_TIMEOUT",
        "MAIL_SMTP_INSECURE_SKIP_VERIFY",
        "MAIL_TEMPLATE_DIR",
        "MAIL_RETRY_SCHEDULE",
        "MAIL_ATTEMPT_TTL",
        "MAIL_ATTEMPT_QUEUE_URL",
        "MAIL_ATTEMPT_WORKER_CONCURRENCY",
        "MAIL_MAX_CLAIMS_IN_FLIGHT",
        "MAIL_SCHEDULER_POLL_INTERVAL",
        "AWS_XRAY_DAEMON_ADDRESS",
    ]


def test_the_xray_daemon_address_lambda_sets_is_read_and_checked() -> None:
    # Given no daemon address (outside Lambda, or tracing off), Then nothing is traced
    assert Settings.from_environ(MINIMAL).xray_daemon_address is None
    # Given the one Lambda sets, Then it is kept as host:port
    settings = Settings.from_environ({**MINIMAL, "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000"})
    assert settings.xray_daemon_address == "169.254.79.129:2000"
    # Given a broken one, Then the cold start fails naming it
    with pytest.raises(ConfigError, match="AWS_XRAY_DAEMON_ADDRESS must be host:port"):
        Settings.from_environ({**MINIMAL, "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129"})


def test_other_aws_variables_are_not_settings() -> None:
    settings = Settings.from_environ(
        {**MINIMAL, "AWS_REGION": "eu-west-1", "_X_AMZN_TRACE_ID": "x"}
    )
    assert "AWS_REGION" not in Settings.variable_names()
    assert settings == Settings.from_environ(MINIMAL)


def test_claims_in_flight_are_bounded_at_50_per_worker_unless_set() -> None:
    # Given the default fleet, a larger one, and an explicit bound
    default = Settings.from_environ(MINIMAL)
    larger = Settings.from_environ({**MINIMAL, "MAIL_ATTEMPT_WORKER_CONCURRENCY": "20"})
    explicit = Settings.from_environ(
        {**MINIMAL, "MAIL_ATTEMPT_WORKER_CONCURRENCY": "20", "MAIL_MAX_CLAIMS_IN_FLIGHT": "300"}
    )
    empty = Settings.from_environ({**MINIMAL, "MAIL_MAX_CLAIMS_IN_FLIGHT": ""})

    # Then unset, the bound follows the workers; set, it is what was set
    assert default.max_claims_in_flight is None
    assert default.claims_in_flight_bound == 4 * 50
    assert larger.claims_in_flight_bound == 20 * 50
    assert explicit.claims_in_flight_bound == 300
    assert empty.claims_in_flight_bound == 200


def test_partitions_default_to_one_and_are_bounded() -> None:
    # Given no partition setting, Then there is one partition on a standalone server
    settings = Settings.from_environ(MINIMAL)
    assert settings.redis_partitions == 1
    assert settings.redis_cluster is False

    # When the count is out of range, Then the variable is named
    with pytest.raises(ConfigError) as raised:
        Settings.from_environ({**MINIMAL, "MAIL_REDIS_PARTITIONS": "0"})
    assert "MAIL_REDIS_PARTITIONS" in str(raised.value)


def test_a_cluster_has_no_logical_database() -> None:
    # Given cluster mode with a database other than 0
    environ = {**MINIMAL, "MAIL_REDIS_CLUSTER": "true", "MAIL_REDIS_DB": "3"}

    # Then the configuration is refused, naming both settings
    with pytest.raises(ConfigError) as raised:
        Settings.from_environ(environ)
    assert "MAIL_REDIS_DB" in str(raised.value)
    assert "MAIL_REDIS_CLUSTER" in str(raised.value)


def test_the_bound_on_claims_in_flight_covers_every_partition() -> None:
    # Given more partitions than claims allowed in flight
    environ = {**MINIMAL, "MAIL_REDIS_PARTITIONS": "64", "MAIL_MAX_CLAIMS_IN_FLIGHT": "32"}

    # Then the configuration is refused: a partition would have no share of the bound
    with pytest.raises(ConfigError) as raised:
        Settings.from_environ(environ)
    assert "MAIL_MAX_CLAIMS_IN_FLIGHT" in str(raised.value)
    assert "MAIL_REDIS_PARTITIONS" in str(raised.value)


def test_a_send_ends_ten_seconds_before_its_claim_unless_set() -> None:
    # Given the default SMTP timeout, a shorter one, and an explicit send limit
    default = Settings.from_environ(MINIMAL)
    short = Settings.from_environ({**MINIMAL, "MAIL_SMTP_TIMEOUT": "1s"})
    explicit = Settings.from_environ({**MINIMAL, "MAIL_SMTP_SEND_TIMEOUT": "20s"})

    # Then unset, a whole send may last the claim less 10 s; set, it is what was set
    assert default.claim_timeout == timedelta(seconds=45)
    assert default.smtp_send_deadline == timedelta(seconds=35)
    assert short.smtp_send_deadline == timedelta(seconds=21)
    assert explicit.smtp_send_deadline == timedelta(seconds=20)


@pytest.mark.parametrize(
    ("environ", "reason"),
    [
        ({"MAIL_SMTP_SEND_TIMEOUT": "40s"}, "must be at most 35s"),
        ({"MAIL_SMTP_TIMEOUT": "2s", "MAIL_SMTP_SEND_TIMEOUT": "30s"}, "must be at most 22s"),
        ({"MAIL_SMTP_SEND_TIMEOUT": "15s"}, "must be longer than MAIL_SMTP_TIMEOUT"),
        ({"MAIL_SMTP_SEND_TIMEOUT": "0s"}, "must be a positive duration"),
    ],
    ids=["past the claim's margin", "past a shorter claim", "no longer than one wait", "zero"],
)
def test_a_send_limit_that_could_outlive_the_claim_fails_fast(
    environ: dict[str, str], reason: str
) -> None:
    # When the send limit would leave the claim less than its margin, or no time to send
    with pytest.raises(ConfigError) as raised:
        Settings.from_environ({**MINIMAL, **environ})

    # Then the cold start fails naming the variable and the rule
    assert "MAIL_SMTP_SEND_TIMEOUT" in str(raised.value)
    assert reason in str(raised.value)


# --------------------------------------------------------------------------- unknown names


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("MAIL_SMTP_MDOE", "MAIL_SMTP_MODE"),
        ("MAIL_RETRY_SCHEDULES", "MAIL_RETRY_SCHEDULE"),
        ("MAIL_ATEMPT_TTL", "MAIL_ATTEMPT_TTL"),
        ("MAIL_TEMPLATES_DIR", "MAIL_TEMPLATE_DIR"),
        ("mail_smtp_mode", "MAIL_SMTP_MODE"),
    ],
)
def test_a_misspelt_variable_fails_naming_it_and_the_setting_meant(typo: str, meant: str) -> None:
    # Given a valid configuration with one variable misspelt
    environ = {**MINIMAL, typo: "smtp"}

    # When the configuration is loaded, Then the cold start fails naming both names
    with pytest.raises(ConfigError) as raised:
        Settings.from_environ(environ)
    assert f"{typo} is not a setting" in str(raised.value)
    assert f"did you mean {meant}?" in str(raised.value)


def test_an_unknown_variable_with_nothing_close_fails_without_a_guess() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_environ({**MINIMAL, "MAIL_FROBNICATE": "1"})
    assert "MAIL_FROBNICATE is not a setting of this service (see docs/configuration.md)" in str(
        raised.value
    )
    assert "did you mean" not in str(raised.value)


def test_an_unknown_variable_fails_even_when_empty() -> None:
    # An empty value means "unset" for a setting; a misspelt name is still a mistake.
    with pytest.raises(ConfigError, match="MAIL_SMTP_TIMOUT is not a setting"):
        Settings.from_environ({**MINIMAL, "MAIL_SMTP_TIMOUT": ""})


@pytest.mark.parametrize(
    ("variable", "instead"),
    [
        ("MAIL_SHUTDOWN_TIMEOUT", "Timeout"),
        ("MAIL_INTERNAL_HTTP_ADDR", "API Gateway"),
        ("MAIL_REDIS_MASTER_ADDR", "use MAIL_REDIS_ADDR"),
        ("MAIL_POSTGRES_PRIMARY_DSN", "no PostgreSQL"),
        ("MAIL_REDIS_ATTEMPT_SCHEDULE_KEY", "MAIL_REDIS_COMMAND_STREAM"),
        ("MAIL_LOG_LEVEL", "use POWERTOOLS_LOG_LEVEL"),
    ],
)
def test_a_seed_variable_this_service_lacks_fails_saying_what_to_do_instead(
    variable: str, instead: str
) -> None:
    # Given a variable the seed's Go service read, carried over into a deploy
    environ = {**MINIMAL, variable: "5s"}

    # Then the cold start fails saying it is not used here, and what replaces it
    with pytest.raises(ConfigError) as raised:
        Settings.from_environ(environ)
    assert f"{variable} is not used by this service: " in str(raised.value)
    assert instead in str(raised.value)


def test_every_seed_variable_refused_is_no_setting() -> None:
    # A seed variable that becomes a setting must leave the list of those refused.
    assert set(SEED_VARIABLES_NOT_USED).isdisjoint(Settings.variable_names())


def test_the_value_of_an_unknown_variable_is_never_quoted() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_environ({**MINIMAL, "MAIL_SMTP_PASWORD": "hunter2-token"})
    assert "MAIL_SMTP_PASWORD" in str(raised.value)
    assert "hunter2-token" not in str(raised.value)


def test_unknown_names_and_invalid_values_are_reported_together() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_environ({"MAIL_REDIS_ADR": "cache:6379", "MAIL_DELIVERY_TTL": "soon"})
    message = str(raised.value)
    assert "MAIL_REDIS_ADR is not a setting of this service (did you mean MAIL_REDIS_ADDR?)" in (
        message
    )
    assert "MAIL_REDIS_ADDR is required" in message
    assert "MAIL_DELIVERY_TTL" in message


def test_every_setting_the_model_declares_is_accepted_by_name() -> None:
    # Given every variable the model has (set empty: unset, so defaults apply)
    environ = {**dict.fromkeys(Settings.variable_names(), ""), **MINIMAL}

    # Then none of them is taken for an unknown one
    assert unknown_variables(environ) == []
    Settings.from_environ(environ)


def test_mailctls_api_url_in_the_same_shell_is_not_a_typo() -> None:
    # Given an operator's shell with mailctl's variable, where the local stack starts
    environ = {**MINIMAL, mailctl_cli.API_ENV: "http://127.0.0.1:3000"}

    # Then the functions start, and ignore it
    assert Settings.from_environ(environ) == Settings.from_environ(MINIMAL)


def test_the_stream_retention_is_a_count_of_handled_entries_kept() -> None:
    # Given no setting, Then the poller keeps the last 10,000 handled entries
    assert Settings.from_environ(MINIMAL).stream_retention == 10_000
    # And 0 (keep none) is a choice; a negative or non-number count is refused, named
    assert Settings.from_environ({**MINIMAL, "MAIL_STREAM_RETENTION": "0"}).stream_retention == 0
    for bad in ("-1", "10k"):
        with pytest.raises(ConfigError, match="MAIL_STREAM_RETENTION"):
            Settings.from_environ({**MINIMAL, "MAIL_STREAM_RETENTION": bad})
