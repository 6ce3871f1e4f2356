"""Security: Redis over TLS with AUTH, SMTP certificate checks, the template sandbox,
and operator reads that never show a secret.

Every API method requiring IAM is proved from template.yaml by
tests/infra/test_template.py::test_every_api_method_requires_iam_authorization;
no secret in any log by the session-wide watch (tests/support/secret_watch.py,
tests/reliability/test_no_secret_in_logs.py).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailcore.config import Settings
from mailcore.errors import StoreUnavailable
from mailcore.store.client import build_redis_client
from mailcore.store.keys import RedisKeys
from mailcore.store.queries import RedisQueries
from mailcore.store.redis_store import translate_errors
from tests.support.api_events import api_event, body_of
from tests.support.commands import command, template_payload
from tests.support.handlers import cold_start, invoke, service_logs_at_debug
from tests.support.network import free_port
from tests.support.redis_server import RedisServer
from tests.support.secret_watch import (
    KNOWN_SECRETS,
    LOGIN_CODE,
    REDIS_TOKEN,
    SECRET_VARIABLE,
)
from tests.support.smtp_pipeline import accept_from_stream, smtp_environment, smtp_pipeline
from tests.support.smtp_server import Reply, SmtpServerFactory, TlsMode

pytestmark = pytest.mark.integration

KEYS = RedisKeys()
LOGIN_CODE_ROUTE = "/api/v1/internal/login-code-deliveries"
BASE = "/api/v1/internal"


# --------------------------------------------------------------------------- Redis: TLS and AUTH


@dataclass(frozen=True)
class Pki:
    ca: Path  # the test's certificate authority, PEM
    cert: Path  # the server's certificate for 127.0.0.1 and localhost, signed by the CA
    key: Path


def _pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def make_pki(directory: Path) -> Pki:
    """A CA and a server certificate it signed, as strict as Python's default checks want."""
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail-service test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return Pki(
        ca=_pem(directory / "ca.pem", ca_cert.public_bytes(pem)),
        cert=_pem(directory / "server.pem", cert.public_bytes(pem)),
        key=_pem(
            directory / "server-key.pem",
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        ),
    )


@dataclass(frozen=True)
class TlsRedis:
    port: int
    pki: Pki

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    """A redis-server that speaks only TLS (no plain port) and requires the AUTH token."""
    directory = tmp_path_factory.mktemp("tls-redis")
    pki = make_pki(directory)
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed; `make test` installs it"
    port = free_port()
    arguments = [
        *("--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"),
        *("--tls-cert-file", str(pki.cert), "--tls-key-file", str(pki.key)),
        *("--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "no"),
        *("--requirepass", REDIS_TOKEN, "--dir", str(directory)),
        *("--save", "", "--appendonly", "no"),
    ]
    log = directory / "redis.log"
    with log.open("wb") as output:
        process = subprocess.Popen([binary, *arguments], stdout=output, stderr=output)
    probe = redis.Redis(
        host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(pki.ca), password=REDIS_TOKEN
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            probe.ping()
            break
        except redis.ConnectionError:
            exited = process.poll() is not None
            if exited or time.monotonic() > deadline:
                process.kill()
                # Debian's redis-server is built with TLS; a build without it says so here.
                raise RuntimeError(f"TLS redis-server did not start: {log.read_text()}") from None
            time.sleep(0.05)
    probe.close()
    yield TlsRedis(port, pki)
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def trusting_the_test_ca(tls_redis: TlsRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    # The service has no setting for a private CA (ElastiCache's certificates
    # chain to public roots): OpenSSL's SSL_CERT_FILE names the trusted roots.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_redis.pki.ca))


def test_the_service_talks_to_redis_over_tls_with_its_auth_token(
    tls_redis: TlsRedis,
    trusting_the_test_ca: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a TLS-only Redis that requires the AUTH token, and the service set up for it
    environment = {
        "MAIL_REDIS_ADDR": tls_redis.addr,
        "MAIL_REDIS_TLS_ENABLED": "true",
        "MAIL_REDIS_PASSWORD": REDIS_TOKEN,
        "MAIL_SMTP_MODE": "stub",
    }
    client = build_redis_client(Settings.from_environ(environment))
    client.flushall()

    # When the intake accepts a login code through it
    intake = cold_start(monkeypatch, "intake_api", environment)
    answer = invoke(
        intake,
        api_event(
            "POST",
            LOGIN_CODE_ROUTE,
            headers={"Idempotency-Key": "tls-1"},
            body={"email": "ada@example.com", "code": LOGIN_CODE, "locale": "en"},
        ),
    )

    # Then the delivery is stored, over a TLS connection
    assert answer["statusCode"] == 200, answer["body"]
    delivery_id = body_of(answer)["delivery_id"]
    assert client.hget(KEYS.delivery(delivery_id), "status") == "suppressed"
    assert client.connection_pool.connection_class is redis.SSLConnection
    assert REDIS_TOKEN not in repr(client)


REDIS_REFUSALS = {
    # case: (MAIL_REDIS_TLS_ENABLED, MAIL_REDIS_PASSWORD, the test CA trusted)
    "plain text to a TLS-only server": ("false", REDIS_TOKEN, True),
    "a certificate from an unknown authority": ("true", REDIS_TOKEN, False),
    "a wrong AUTH token": ("true", "not-the-token", True),
    "no AUTH token": ("true", "", True),
}


@pytest.mark.parametrize("case", REDIS_REFUSALS)
def test_redis_without_tls_trust_or_the_token_is_the_store_being_unavailable(
    tls_redis: TlsRedis,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    # Given one thing missing of TLS, a trusted certificate and the token
    tls, token, trusted = REDIS_REFUSALS[case]
    if trusted:
        monkeypatch.setenv("SSL_CERT_FILE", str(tls_redis.pki.ca))
    else:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    settings = Settings.from_environ(
        {
            "MAIL_REDIS_ADDR": tls_redis.addr,
            "MAIL_REDIS_TLS_ENABLED": tls,
            "MAIL_REDIS_PASSWORD": token,
            "MAIL_REDIS_OPERATION_TIMEOUT": "1s",
        }
    )

    # When the service's client talks to Redis
    # Then it is refused, which the service treats as its store being unavailable
    with pytest.raises(StoreUnavailable), translate_errors():
        build_redis_client(settings).ping()


# --------------------------------------------------------------------------- SMTP certificates


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_a_self_signed_smtp_certificate_is_refused_unless_verification_is_switched_off(
    smtp_server: SmtpServerFactory,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    aws: Any,
    attempt_queue_url: str,
    queries: RedisQueries,
    tls: TlsMode,
) -> None:
    # Given an SMTP server with a self-signed certificate, and the service verifying it
    server = smtp_server(tls=tls)
    verifying = smtp_pipeline(
        aws, smtp_environment(redis_server.addr, attempt_queue_url, server.addr, MAIL_SMTP_TLS=tls)
    )
    refused = verifying.accept_login_code(code=LOGIN_CODE, key="verify")

    # When the worker tries to send
    verifying.work()

    # Then the certificate is refused: nothing is sent, the attempt is a transport failure
    delivery = queries.delivery(refused)
    assert delivery is not None
    assert delivery.status == "queued"  # transient: retried later on the ladder
    [attempt, _retry] = queries.attempts(refused, delivery.attempt_count)
    assert (attempt.status, attempt.outcome) == ("transport_failed", "transient_failure")
    stage = "STARTTLS" if tls == "starttls" else "connect"
    assert attempt.summary == (
        f"TLS certificate verification failed during {stage}: self-signed certificate"
    )
    assert server.received == []

    # When the operator sets MAIL_SMTP_INSECURE_SKIP_VERIFY (a test relay, say)
    insecure = smtp_pipeline(
        aws,
        smtp_environment(
            redis_server.addr,
            attempt_queue_url,
            server.addr,
            MAIL_SMTP_TLS=tls,
            MAIL_SMTP_INSECURE_SKIP_VERIFY="true",
        ),
    )
    sent = insecure.accept_login_code(code=LOGIN_CODE, key="skip-verify")
    insecure.work()

    # Then the same server gets the mail, over TLS
    delivery = queries.delivery(sent)
    assert delivery is not None
    assert delivery.status == "sent"
    [received] = server.received
    assert received.tls


def test_a_trusted_smtp_certificate_is_accepted_with_verification_on(
    smtp_server: SmtpServerFactory,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    aws: Any,
    attempt_queue_url: str,
    queries: RedisQueries,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a STARTTLS server whose certificate the machine trusts (SSL_CERT_FILE)
    server = smtp_server(tls="starttls")
    assert server.cert_path is not None
    monkeypatch.setenv("SSL_CERT_FILE", str(server.cert_path))
    pipeline = smtp_pipeline(
        aws,
        smtp_environment(
            redis_server.addr, attempt_queue_url, server.addr, MAIL_SMTP_TLS="starttls"
        ),
    )
    delivery_id = pipeline.accept_login_code(code=LOGIN_CODE)

    # When the worker sends, verifying the certificate
    pipeline.work()

    # Then verification passes: the refusal above is about trust, not about TLS
    delivery = queries.delivery(delivery_id)
    assert delivery is not None
    assert delivery.status == "sent"
    assert server.received[0].tls


# --------------------------------------------------------------------------- template sandbox

ESCAPES = {
    "class hierarchy": "{{ name.__class__.__mro__[1].__subclasses__() }}",
    "globals of a global": "{{ cycler.__init__.__globals__.os.system('touch CANARY') }}",
    "globals by item": "{{ lipsum.__globals__['os'].popen('touch CANARY').read() }}",
    "attr filter": "{{ (name|attr('__class__')).__base__ }}",
    "format string": "{{ '{0.__class__.__init__.__globals__}'.format(name) }}",
    "mutating a value": "{{ items.append('x') }}{{ items }}",
}


@pytest.mark.parametrize("escape", ESCAPES.values(), ids=ESCAPES.keys())
def test_a_template_that_tries_to_leave_the_sandbox_fails_to_render_and_runs_nothing(
    smtp_server: SmtpServerFactory,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    aws: Any,
    attempt_queue_url: str,
    queries: RedisQueries,
    tmp_path: Path,
    escape: str,
) -> None:
    # Given a catalog whose template reaches for Python internals (the canary file
    # is what a successful escape would create)
    canary = tmp_path / "escaped"
    catalog = tmp_path / "catalog" / "probe" / "en"
    catalog.mkdir(parents=True)
    (catalog / "subject.tmpl").write_text("Probe\n")
    (catalog / "text.tmpl").write_text(escape.replace("CANARY", str(canary)) + "\n")
    server = smtp_server()
    pipeline = smtp_pipeline(
        aws,
        smtp_environment(
            redis_server.addr,
            attempt_queue_url,
            server.addr,
            MAIL_TEMPLATE_DIR=str(tmp_path / "catalog"),
        ),
    )
    payload = template_payload(
        template_id="probe",
        locale="en",
        variables={"name": "Ada", "items": []},
        secret_variables=[],
    )
    accept_from_stream(pipeline, redis_client, command(1, mode="template", payload=payload))

    # When a worker renders it
    [report] = pipeline.work()

    # Then the sandbox stopped it: a classified render failure, nothing run, nothing sent
    assert (report.outcome, report.status) == ("render_failed", "failed")
    delivery = queries.delivery("notif-000001")
    assert delivery is not None
    assert delivery.status == "failed"
    [attempt] = queries.attempts("notif-000001", delivery.attempt_count)
    assert attempt.summary == "template probe (locale en) failed at text.tmpl line 1: SecurityError"
    assert not canary.exists()
    assert server.received == []


@pytest.mark.parametrize("name", ["globals of a global", "globals by item"])
def test_outside_the_sandbox_the_same_templates_would_run_a_command(
    tmp_path: Path, name: str
) -> None:
    # Given the escapes above that run a shell command, in Jinja2 without the sandbox
    canary = tmp_path / "escaped"
    source = ESCAPES[name].replace("CANARY", str(canary))

    # When rendered there
    jinja2.Environment(autoescape=False).from_string(source).render(name="Ada")  # noqa: S701

    # Then the canary exists: the sandbox test above would see an escape
    assert canary.exists()


# --------------------------------------------------------------------------- operator reads


def test_operator_reads_of_real_deliveries_never_show_a_secret(
    smtp_server: SmtpServerFactory,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    aws: Any,
    attempt_queue_url: str,
    queries: RedisQueries,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a login code refused by a server that quotes it (failed), a mail with a
    # secret variable the server quotes on every try (dead-lettered), a malformed
    # command carrying that secret, and a resend of the failed login code
    server = smtp_server()
    server.script(
        Reply(554, f"5.7.1 spam: {LOGIN_CODE}"),
        *[Reply(451, f"4.7.1 later ({SECRET_VARIABLE})")] * 3,
    )
    environment = smtp_environment(
        redis_server.addr, attempt_queue_url, server.addr, MAIL_RETRY_SCHEDULE="1s,1s"
    )
    pipeline = smtp_pipeline(aws, environment)
    login = pipeline.accept_login_code(code=LOGIN_CODE)
    pipeline.work()
    secret_mail = template_payload(
        locale="en",
        variables={"name": "Ada", "reset_token": SECRET_VARIABLE, "expires_minutes": 30},
    )
    malformed = {**secret_mail, "unexpected": True}
    accept_from_stream(
        pipeline,
        redis_client,
        command(1, mode="template", payload=secret_mail),
        command(2, mode="template", payload=malformed),
    )
    pipeline.run_ladder(rounds=2)
    operator = cold_start(monkeypatch, "operator_api", environment)

    def read(method: str, resource: str, **parameters: Any) -> dict[str, Any]:
        answer: dict[str, Any] = invoke(operator, api_event(method, resource, **parameters))
        assert answer["statusCode"] in (200, 201), answer["body"]
        return answer

    with service_logs_at_debug():
        resent = read(
            "POST",
            f"{BASE}/deliveries/{{delivery_id}}/resend",
            path_parameters={"delivery_id": login},
            headers={"Idempotency-Key": "resend-1"},
        )
        clone = body_of(resent)["delivery_id"]
        [entry] = queries.malformed_commands(10, None).items
        answers = [
            resent,
            read("GET", f"{BASE}/deliveries"),
            read("GET", f"{BASE}/deliveries", query={"status": "dead_letter"}),
            read("GET", f"{BASE}/dead-letters"),
            read("GET", f"{BASE}/malformed-commands"),
            read(
                "GET",
                f"{BASE}/malformed-commands/{{stream_entry_id}}",
                path_parameters={"stream_entry_id": entry["stream_entry_id"]},
            ),
        ]
        for delivery_id in (login, "notif-000001", clone):
            path = {"delivery_id": delivery_id}
            answers.append(read("GET", f"{BASE}/deliveries/{{delivery_id}}", path_parameters=path))
            answers.append(
                read("GET", f"{BASE}/deliveries/{{delivery_id}}/attempts", path_parameters=path)
            )

    # When an operator reads all of it, Then no answer shows a secret, only where one was
    shown = json.dumps([body_of(answer) for answer in answers])
    for name, value in KNOWN_SECRETS.items():
        assert value not in shown, name
    assert "[redacted]" in shown
    statuses = {body_of(a)["delivery_id"]: body_of(a)["status"] for a in answers[-6::2]}
    assert statuses == {login: "failed", "notif-000001": "dead_letter", clone: "queued"}
