"""The service's configuration: one validated model of the ``MAIL_*`` variables.

This module is the only place that reads the process environment
(:func:`load_settings`, and :func:`current_trace_header` for the per-invocation
trace header); everything else receives a :class:`Settings`.
Invalid configuration raises :class:`ConfigError` at cold start, naming every
offending variable, so a bad deploy fails loudly before it takes traffic; so
does a ``MAIL_*`` variable that is no setting (a typo, or a variable of the
seed's Go service that these functions do not have).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from mailcore.contracts.fields import EmailAddress
from mailcore.durations import parse_duration

# Variables Lambda sets that the functions read as settings, besides MAIL_*.
PLATFORM_VARIABLES = frozenset({"AWS_XRAY_DAEMON_ADDRESS"})
SETTING_PREFIX = "MAIL_"
# MAIL_* variables of the seed's Go service that these functions do not read,
# each with what to do instead. Setting one is refused like a typo: a value
# that would be silently ignored must not look as if it took effect.
SEED_VARIABLES_NOT_USED: Mapping[str, str] = {
    "MAIL_REDIS_MASTER_ADDR": "use MAIL_REDIS_ADDR",
    "MAIL_POSTGRES_PRIMARY_DSN": "all state is in Redis, there is no PostgreSQL",
    "MAIL_SHUTDOWN_TIMEOUT": "Lambda ends each invocation, and the looping functions stop "
    "shortly before their Timeout",
    "MAIL_LOG_LEVEL": "use POWERTOOLS_LOG_LEVEL",
    "MAIL_INTERNAL_HTTP_ADDR": "API Gateway serves the HTTP API",
    "MAIL_INTERNAL_HTTP_READ_HEADER_TIMEOUT": "API Gateway serves the HTTP API",
    "MAIL_INTERNAL_HTTP_READ_TIMEOUT": "API Gateway serves the HTTP API",
    "MAIL_INTERNAL_HTTP_IDLE_TIMEOUT": "API Gateway serves the HTTP API",
    "MAIL_OPERATOR_REQUEST_TIMEOUT": "an operator request is bounded by the function's Timeout "
    "and MAIL_REDIS_OPERATION_TIMEOUT",
    "MAIL_REDIS_ATTEMPT_SCHEDULE_KEY": "Redis key names are fixed, only the command stream's "
    "is set (MAIL_REDIS_COMMAND_STREAM)",
    "MAIL_REDIS_DEAD_LETTER_PREFIX": "Redis key names are fixed, only the command stream's "
    "is set (MAIL_REDIS_COMMAND_STREAM)",
    "MAIL_OTEL_STDOUT_TRACES_ENABLED": "traces go to X-Ray when Lambda sets "
    "AWS_XRAY_DAEMON_ADDRESS",
    "MAIL_OTEL_STDOUT_METRICS_ENABLED": "metrics are always written as CloudWatch EMF lines",
}
# MAIL_* variables of other tools that may share a shell with the functions
# (the local stack passes its environment on): neither settings nor typos.
OTHER_TOOLS_VARIABLES: Mapping[str, str] = {"MAIL_API_URL": "mailctl"}
# How alike an unknown name (after MAIL_) and a setting's must be for
# "did you mean": close enough for a slip of the keys or a missing letter.
SUGGESTION_CUTOFF = 0.75
TRACE_HEADER_VARIABLE = "_X_AMZN_TRACE_ID"
# Default bound on claims in flight, per attempt worker. A worker takes
# batches of 10 from the queue, so this keeps four more batches waiting for
# it (it never idles between two scheduler polls), while the last of them
# waits at most 50 / (sends per second) for a worker: 25 s at two sends a
# second, a few seconds at a normal SMTP round trip, inside the 45 s claim
# period that the wait in the queue must not outlast.
CLAIMS_IN_FLIGHT_PER_WORKER = 50
# A claim lasts MAIL_SMTP_TIMEOUT plus this: the wait in the attempt queue,
# and again, from the attempt's start, the send and recording its outcome.
CLAIM_PERIOD_EXTRA = timedelta(seconds=30)
# What a claim keeps after its send's deadline (MAIL_SMTP_SEND_TIMEOUT):
# recording the outcome (milliseconds; a short Redis outage is waited out
# for about 3 s) and any difference between the worker's and the
# scheduler's clocks. A send therefore ends well before recovery could hand
# its delivery to another worker.
SEND_DEADLINE_MARGIN = timedelta(seconds=10)
MAX_STREAM_RETENTION = 100_000_000


class ConfigError(ValueError):
    """Configuration is invalid; the message names each variable at fault."""


class SmtpMode(StrEnum):
    """How deliveries leave the service."""

    STUB = "stub"  # never send: auth mail ends `suppressed`, other mail meets the stub provider
    SMTP = "smtp"  # send over SMTP: auth mail is `queued` for a first attempt


class SmtpTls(StrEnum):
    STARTTLS = "starttls"  # plain connect (587), then STARTTLS before anything else
    IMPLICIT = "implicit"  # TLS from the first byte (465)
    NONE = "none"  # no TLS at all: only for a local capture server


def _go_duration(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be a positive duration")
    return value


def _retry_ladder(value: Any) -> Any:
    if isinstance(value, str):
        steps = [step.strip() for step in value.split(",")]
        if not all(steps):
            raise ValueError("must be a comma-separated list of durations like 1m,5m,30m")
        return tuple(parse_duration(step) for step in steps)
    return value


def _ladder_positive(value: tuple[timedelta, ...]) -> tuple[timedelta, ...]:
    if any(step <= timedelta(0) for step in value):
        raise ValueError("every retry delay must be positive")
    return value


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be host:port, for example 127.0.0.1:6379")
    return value


Duration = Annotated[timedelta, BeforeValidator(_go_duration), AfterValidator(_positive)]
RetryLadder = Annotated[
    tuple[timedelta, ...], BeforeValidator(_retry_ladder), AfterValidator(_ladder_positive)
]
HostPort = Annotated[str, AfterValidator(_host_port)]


class Settings(BaseModel):
    """Every ``MAIL_*`` setting, and the platform's X-Ray daemon address.

    The alias of each field is its variable name.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    redis_addr: HostPort = Field(
        alias="MAIL_REDIS_ADDR",
        description="Redis (or ElastiCache) endpoint as host:port. Required.",
    )
    redis_username: str | None = Field(
        default=None,
        alias="MAIL_REDIS_USERNAME",
        description="Redis ACL user name; empty for the default user.",
    )
    redis_password: SecretStr | None = Field(
        default=None,
        alias="MAIL_REDIS_PASSWORD",
        description="Redis AUTH password or token. Never logged.",
    )
    redis_password_secret_arn: str | None = Field(
        default=None,
        pattern=r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$",
        alias="MAIL_REDIS_PASSWORD_SECRET_ARN",
        description="Secrets Manager secret holding the Redis AUTH token (a plain string, or "
        'JSON {"password"}); read on each new connection through a 5-minute cache.',
    )
    redis_db: int = Field(
        default=0,
        ge=0,
        le=15,
        alias="MAIL_REDIS_DB",
        description="Logical database (standalone Redis only; clusters use 0).",
    )
    redis_tls_enabled: bool = Field(
        default=False,
        alias="MAIL_REDIS_TLS_ENABLED",
        description="Connect to Redis over TLS (required by ElastiCache Serverless).",
    )
    redis_cluster: bool = Field(
        default=False,
        alias="MAIL_REDIS_CLUSTER",
        description="Talk to Redis as a cluster (follows MOVED and ASK; required by "
        "ElastiCache Serverless and cluster-mode caches). Off: one standalone server.",
    )
    redis_partitions: int = Field(
        default=1,
        ge=1,
        le=1024,
        alias="MAIL_REDIS_PARTITIONS",
        description="How many partitions (hash tags `{p0}`, `{p1}`, ...) hold the deliveries; "
        "each delivery lives in the one its idempotency scope hashes to. Fixed for the life "
        "of a deployment's data: see docs/scaling.md before changing it.",
    )
    redis_operation_timeout: Duration = Field(
        default=timedelta(milliseconds=500),
        alias="MAIL_REDIS_OPERATION_TIMEOUT",
        description="Connect and per-command timeout; past it intake answers 503.",
    )
    smtp_mode: SmtpMode = Field(
        default=SmtpMode.STUB,
        alias="MAIL_SMTP_MODE",
        description="`stub` records auth mail as suppressed; `smtp` queues it for sending.",
    )
    idempotency_ttl: Duration = Field(
        default=timedelta(hours=168),
        alias="MAIL_IDEMPOTENCY_TTL",
        description="How long an Idempotency-Key is remembered for replays.",
    )
    delivery_ttl: Duration = Field(
        default=timedelta(hours=720),
        alias="MAIL_DELIVERY_TTL",
        description="Retention of a delivery after it reaches a terminal state.",
    )
    malformed_command_ttl: Duration = Field(
        default=timedelta(hours=2160),
        alias="MAIL_MALFORMED_COMMAND_TTL",
        description="Retention of a malformed stream command record.",
    )
    redis_command_stream: str = Field(
        default="mail:delivery_commands",
        min_length=1,
        max_length=200,
        alias="MAIL_REDIS_COMMAND_STREAM",
        description="The Redis Stream the Notification service adds mail commands to.",
    )
    stream_block_timeout: Duration = Field(
        default=timedelta(seconds=2),
        alias="MAIL_STREAM_BLOCK_TIMEOUT",
        description="How long one XREAD waits for new commands before the poller loops.",
    )
    stream_batch_size: int = Field(
        default=100,
        ge=1,
        le=1000,
        alias="MAIL_STREAM_BATCH_SIZE",
        description=(
            "Most stream entries read at a time; they are accepted in pipelined atomic "
            "steps of up to 20, each moving the offset."
        ),
    )
    stream_retention: int = Field(
        default=10_000,
        ge=0,
        le=MAX_STREAM_RETENTION,
        alias="MAIL_STREAM_RETENTION",
        description="How many handled command-stream entries the poller keeps for inspection; "
        "it trims older ones (`XTRIM MINID`), never one it has not accepted or recorded "
        "malformed. Also the margin a Redis failover that loses the last offset writes can "
        "re-read from (docs/scaling.md).",
    )
    max_recipients: int = Field(
        default=50,
        ge=1,
        le=1000,
        alias="MAIL_MAX_RECIPIENTS",
        description="Most envelope recipients (to + cc + bcc) a stream command may carry.",
    )
    max_subject_chars: int = Field(
        default=255,
        ge=1,
        le=998,
        alias="MAIL_MAX_SUBJECT_CHARS",
        description="Longest subject a rendered stream command may carry.",
    )
    max_attachment_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=0,
        le=40 * 1024 * 1024,
        alias="MAIL_MAX_ATTACHMENT_BYTES",
        description="Most attachment bytes (decoded, all attachments) per stream command.",
    )

    smtp_addr: HostPort | None = Field(
        default=None,
        alias="MAIL_SMTP_ADDR",
        description="SMTP server as host:port (587 for STARTTLS, 465 for implicit TLS). "
        "Required in smtp mode.",
    )
    smtp_tls: SmtpTls = Field(
        default=SmtpTls.STARTTLS,
        alias="MAIL_SMTP_TLS",
        description="`starttls`, `implicit` or `none` (none only for a local capture server).",
    )
    smtp_username: str | None = Field(
        default=None, alias="MAIL_SMTP_USERNAME", description="SMTP AUTH user name, if any."
    )
    smtp_password: SecretStr | None = Field(
        default=None,
        alias="MAIL_SMTP_PASSWORD",
        description="SMTP AUTH password. Prefer MAIL_SMTP_PASSWORD_SECRET_ARN. Never logged.",
    )
    smtp_password_secret_arn: str | None = Field(
        default=None,
        pattern=r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$",
        alias="MAIL_SMTP_PASSWORD_SECRET_ARN",
        description="Secrets Manager secret holding the SMTP password (a plain string, or "
        'JSON with a "password" key); read through a 5-minute cache. The user name is '
        "MAIL_SMTP_USERNAME.",
    )
    smtp_from_email: EmailAddress | None = Field(
        default=None,
        alias="MAIL_SMTP_FROM_EMAIL",
        description="Sender address (From and envelope sender). Required in smtp mode.",
    )
    smtp_from_name: str | None = Field(
        default=None,
        max_length=100,
        pattern=r"^[^\r\n]*$",
        alias="MAIL_SMTP_FROM_NAME",
        description="Sender display name.",
    )
    smtp_timeout: Duration = Field(
        default=timedelta(seconds=15),
        alias="MAIL_SMTP_TIMEOUT",
        description="Connect and per-command SMTP timeout (each wait for the server); a claim "
        "lasts this plus 30s.",
    )
    smtp_send_timeout: Duration | None = Field(
        default=None,
        alias="MAIL_SMTP_SEND_TIMEOUT",
        description="Wall-clock limit of one whole send (name lookup, connect, TLS, AUTH, MAIL, "
        "every RCPT, DATA and the answer to the message), however the server paces its "
        "answers. The message is handed over only while a whole MAIL_SMTP_TIMEOUT is left "
        "for the answer. Must be longer than MAIL_SMTP_TIMEOUT and end at least 10s before "
        "the claim does (MAIL_SMTP_TIMEOUT + 30s), so a send never outlives its claim. "
        "Unset: MAIL_SMTP_TIMEOUT + 20s (35s by default).",
    )
    smtp_insecure_skip_verify: bool = Field(
        default=False,
        alias="MAIL_SMTP_INSECURE_SKIP_VERIFY",
        description="Skip TLS certificate checks. Only for a local capture server.",
    )
    template_dir: str | None = Field(
        default=None,
        alias="MAIL_TEMPLATE_DIR",
        description="Template catalog folder; unset uses the catalog shipped in the layer.",
    )
    retry_schedule: RetryLadder = Field(
        default=(timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30)),
        alias="MAIL_RETRY_SCHEDULE",
        description="Delays before each retry of a transient failure; after the last, "
        "the delivery is dead-lettered.",
    )
    attempt_ttl: Duration = Field(
        default=timedelta(hours=2160),
        alias="MAIL_ATTEMPT_TTL",
        description="Retention of finished attempts and dead-letter entries.",
    )
    attempt_queue_url: str | None = Field(
        default=None,
        alias="MAIL_ATTEMPT_QUEUE_URL",
        description="SQS queue of claimed attempts. The scheduler needs it; without it "
        "the intakes leave first attempts to the scheduler.",
    )
    attempt_worker_concurrency: int = Field(
        default=4,
        ge=2,
        le=1000,
        alias="MAIL_ATTEMPT_WORKER_CONCURRENCY",
        description="Attempt workers running at once (the queue's MaximumConcurrency); "
        "the scheduler keeps at most 10 claims per worker in flight per poll.",
    )
    max_claims_in_flight: int | None = Field(
        default=None,
        ge=10,
        le=1_000_000,
        alias="MAIL_MAX_CLAIMS_IN_FLIGHT",
        description="Most claimed attempts outstanding at once (handed to the attempt queue "
        "and not yet finished). The scheduler and the stream poller's fast path claim only "
        "below it; the rest waits in the schedule, so a burst queues in Redis, not in SQS "
        "where claims would expire. Unset: 50 per attempt worker "
        "(200 with the default 4 workers), enough that workers never wait for "
        "the scheduler, and few enough that a worker sending two messages a second reaches "
        "the last of them within about 25 s, well inside a claim period (MAIL_SMTP_TIMEOUT + "
        "30s). If you set it, keep it below what the workers send in half a claim period. Login "
        "codes from the intake API are never held back by it.",
    )
    scheduler_poll_interval: Duration = Field(
        default=timedelta(milliseconds=250),
        alias="MAIL_SCHEDULER_POLL_INTERVAL",
        description="How often the scheduler claims due attempts.",
    )
    xray_daemon_address: HostPort | None = Field(
        default=None,
        alias="AWS_XRAY_DAEMON_ADDRESS",
        description="Set by Lambda, not by us: the X-Ray daemon as host:port, where the "
        "functions send trace subsegments over UDP. Unset sends nothing.",
    )

    @model_validator(mode="after")
    def _smtp_mode_needs_a_server(self) -> Settings:
        if self.smtp_mode is SmtpMode.SMTP:
            missing = [
                name
                for name, value in (
                    ("MAIL_SMTP_ADDR", self.smtp_addr),
                    ("MAIL_SMTP_FROM_EMAIL", self.smtp_from_email),
                )
                if value is None
            ]
            if missing:
                raise ValueError(f"MAIL_SMTP_MODE=smtp needs {' and '.join(missing)}")
        if self.claims_in_flight_bound < self.redis_partitions:
            raise ValueError(
                "MAIL_MAX_CLAIMS_IN_FLIGHT must be at least MAIL_REDIS_PARTITIONS "
                "(each partition claims within its share of the bound)"
            )
        if self.redis_cluster and self.redis_db != 0:
            raise ValueError("MAIL_REDIS_DB must be 0 with MAIL_REDIS_CLUSTER (clusters have one)")
        if self.redis_password is not None and self.redis_password_secret_arn is not None:
            raise ValueError("set MAIL_REDIS_PASSWORD or MAIL_REDIS_PASSWORD_SECRET_ARN, not both")
        if self.smtp_password is not None and self.smtp_password_secret_arn is not None:
            raise ValueError("set MAIL_SMTP_PASSWORD or MAIL_SMTP_PASSWORD_SECRET_ARN, not both")
        self._send_deadline_inside_the_claim()
        return self

    def _send_deadline_inside_the_claim(self) -> None:
        send = self.smtp_send_timeout
        if send is None:
            return
        latest = self.claim_timeout - SEND_DEADLINE_MARGIN
        if send > latest:
            raise ValueError(
                f"MAIL_SMTP_SEND_TIMEOUT must be at most {_seconds(latest)} "
                f"(the claim, MAIL_SMTP_TIMEOUT + {_seconds(CLAIM_PERIOD_EXTRA)}, less "
                f"{_seconds(SEND_DEADLINE_MARGIN)} to record the outcome), so a send never "
                "outlives its claim"
            )
        if send <= self.smtp_timeout:
            raise ValueError(
                "MAIL_SMTP_SEND_TIMEOUT must be longer than MAIL_SMTP_TIMEOUT (a whole "
                "MAIL_SMTP_TIMEOUT is kept for the answer to the message)"
            )

    @property
    def claim_timeout(self) -> timedelta:
        """How long a claimed attempt belongs to its worker before recovery takes it back."""
        return self.smtp_timeout + CLAIM_PERIOD_EXTRA

    @property
    def smtp_send_deadline(self) -> timedelta:
        """MAIL_SMTP_SEND_TIMEOUT, or its default: the latest the claim allows."""
        if self.smtp_send_timeout is not None:
            return self.smtp_send_timeout
        return self.claim_timeout - SEND_DEADLINE_MARGIN

    @property
    def claims_in_flight_bound(self) -> int:
        """MAIL_MAX_CLAIMS_IN_FLIGHT, or its default: CLAIMS_IN_FLIGHT_PER_WORKER per worker."""
        if self.max_claims_in_flight is not None:
            return self.max_claims_in_flight
        return self.attempt_worker_concurrency * CLAIMS_IN_FLIGHT_PER_WORKER

    @property
    def redis_host(self) -> str:
        return self.redis_addr.rpartition(":")[0].strip("[]")

    @property
    def redis_port(self) -> int:
        return int(self.redis_addr.rpartition(":")[2])

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Validate the ``MAIL_*`` (and platform) entries of ``environ``; empty ones are unset.

        A ``MAIL_*`` name that is no setting fails like an invalid value,
        whatever its value: a typo must not leave a default silently in force.
        """
        problems = unknown_variables(environ)
        values = {
            name: value
            for name, value in environ.items()
            if (name.startswith(SETTING_PREFIX) or name in PLATFORM_VARIABLES)
            and name not in OTHER_TOOLS_VARIABLES
            and value.strip() != ""
        }
        try:
            settings = cls.model_validate(values)
        except ValidationError as error:
            problems += _problems(error)
            raise ConfigError(_message(problems)) from None
        if problems:
            raise ConfigError(_message(problems))
        return settings

    @classmethod
    def variable_names(cls) -> list[str]:
        return [str(field.alias) for field in cls.model_fields.values()]


def _seconds(value: timedelta) -> str:
    return f"{value.total_seconds():g}s"


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A problem for each ``MAIL_*`` name in ``environ`` that is not a setting.

    The known names are the model's aliases, so a setting is known the moment
    it is declared. Names are compared case-insensitively, since the
    environment is not: ``mail_smtp_mode`` is a typo too. Values are never
    quoted (an unknown variable may hold a password).
    """
    settings = {
        name.removeprefix(SETTING_PREFIX): name
        for name in Settings.variable_names()
        if name.startswith(SETTING_PREFIX)
    }
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(SETTING_PREFIX) or name in OTHER_TOOLS_VARIABLES:
            continue
        suffix = upper.removeprefix(SETTING_PREFIX)
        if settings.get(suffix) == name:
            continue
        if upper in SEED_VARIABLES_NOT_USED:
            problems.append(f"{name} is not used by this service: {SEED_VARIABLES_NOT_USED[upper]}")
        elif suffix in settings:
            problems.append(f"{name} is not a setting (did you mean {settings[suffix]}?)")
        else:
            close = difflib.get_close_matches(suffix, settings, n=1, cutoff=SUGGESTION_CUTOFF)
            hint = f"did you mean {settings[close[0]]}?" if close else "see docs/configuration.md"
            problems.append(f"{name} is not a setting of this service ({hint})")
    return problems


def _problems(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        variable = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "is required"
        problems.append(f"{variable} {message}" if variable else message)
    return problems


def _message(problems: list[str]) -> str:
    return "invalid configuration: " + "; ".join(problems)


def load_settings() -> Settings:
    """Read the process environment once, at cold start."""
    return Settings.from_environ(os.environ)


def current_trace_header() -> str | None:
    """The X-Ray trace header of the invocation running now, if any.

    ``Root=1-…;Parent=<16 hex>;Sampled=1``, from ``_X_AMZN_TRACE_ID``. This is
    not configuration: the Lambda runtime sets it anew for every invocation,
    so it is read each time a trace starts (by :mod:`mailcore.tracing`), never
    kept from the cold start.
    """
    return os.environ.get(TRACE_HEADER_VARIABLE) or None
