"""HTTP to the mail service API: JSON in and out, SigV4 signing, errors as exceptions.

Standard library for HTTP (``urllib.request``); botocore only to find AWS
credentials and to sign requests for ``execute-api`` the way API Gateway's
``AWS_IAM`` authorization checks them.
"""

from __future__ import annotations

import http
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.exceptions import BotoCoreError
from botocore.session import Session

from . import __version__

DEFAULT_API_URL = "http://127.0.0.1:3000"
DEFAULT_TIMEOUT_S = 30.0
SIGNING_SERVICE = "execute-api"
# Hosts that never get a signature by default: the local stack takes none.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# <api-id>.execute-api.<region>.amazonaws.com (also the China partition and
# private APIs reached through a VPC endpoint: ....execute-api.<region>.vpce.amazonaws.com).
_EXECUTE_API_HOST = re.compile(
    r"\.execute-api\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.(?:vpce\.)?amazonaws\.com(?:\.cn)?$"
)
# Error text shown from a body that is not the service's error shape.
_MAX_RAW_MESSAGE = 200

CredentialsLoader = Callable[[], ReadOnlyCredentials]


class MailctlError(Exception):
    """A failure worth one line on stderr and exit code 1 (``str()`` is that line)."""


class ApiError(MailctlError):
    """The API answered with an error status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message} (HTTP {status})")
        self.status = status
        self.code = code
        self.message = message


class ConnectionFailed(MailctlError):
    """No answer: refused, unresolvable, reset, timed out."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: {reason}")
        self.url = url
        self.reason = reason


class SigningError(MailctlError):
    """A request that must be signed cannot be: no credentials, or no region."""


class BadAnswer(MailctlError):
    """A success status whose body is not the JSON the API promises."""


class UnsupportedUrl(MailctlError):
    """An API URL mailctl will not open: only http and https are the API."""


# --------------------------------------------------------------------------- decisions


def host_of(api_url: str) -> str:
    return (urlsplit(api_url).hostname or "").lower()


def should_sign(api_url: str, choice: bool | None = None) -> bool:
    """Sign unless told not to, or unless the API is on this machine (the local stack)."""
    if choice is not None:
        return choice
    return host_of(api_url) not in LOCAL_HOSTS


def region_from_url(api_url: str) -> str | None:
    """The region in an ``execute-api`` host name, or None for any other host."""
    match = _EXECUTE_API_HOST.search(host_of(api_url))
    return match.group("region") if match else None


def resolve_region(
    api_url: str, explicit: str | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """``--region``, else the API host's region, else AWS_REGION / AWS_DEFAULT_REGION."""
    env = os.environ if environ is None else environ
    return (
        explicit
        or region_from_url(api_url)
        or env.get("AWS_REGION")
        or env.get("AWS_DEFAULT_REGION")
        or None
    )


def validate_api_url(api_url: str) -> str | None:
    """Why ``api_url`` cannot be the API's base URL, or None when it can."""
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"not an http(s) URL: {api_url!r}"
    if parts.query or parts.fragment:
        return f"the API URL takes no query or fragment: {api_url!r}"
    return None


# --------------------------------------------------------------------------- signing


def load_credentials() -> ReadOnlyCredentials:
    """The caller's AWS credentials, from botocore's usual chain, frozen for one request."""
    hint = "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or pass --no-sigv4"
    try:
        credentials = Session().get_credentials()
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
    except BotoCoreError as error:
        raise SigningError(f"no AWS credentials for SigV4 signing ({error})") from error
    if frozen is None or not frozen.access_key or not frozen.secret_key:
        raise SigningError(f"no AWS credentials for SigV4 signing ({hint})")
    return frozen


def sign_request(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: Credentials | ReadOnlyCredentials,
    region: str,
) -> dict[str, str]:
    """``headers`` plus the SigV4 ones (Authorization, X-Amz-Date, token) for execute-api."""
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    SigV4Auth(credentials, SIGNING_SERVICE, region).add_auth(request)
    return {name: str(value) for name, value in request.headers.items()}


# --------------------------------------------------------------------------- requests


def http_only_opener() -> urllib.request.OpenerDirector:
    """urllib's opener without its file:, ftp: and data: handlers.

    ``urlopen`` would read ``file:///…`` as happily as ``https://…``; this one
    knows HTTP and HTTPS only, so neither an API URL nor a redirect can make
    mailctl read a local file or speak another protocol.
    """
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),  # HTTPS_PROXY and friends, as urlopen honours them
        urllib.request.UnknownHandler(),  # any other scheme: "unknown url type"
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


_OPENER = http_only_opener()


@dataclass(frozen=True)
class ApiResponse:
    status: int
    headers: Mapping[str, str]  # names lower-cased
    body: Any

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def replayed(self) -> bool:
        return (self.header("Idempotent-Replayed") or "").lower() == "true"


@dataclass
class ApiClient:
    """Calls one deployment of the API: ``base_url`` may carry the stage path."""

    base_url: str
    sign: bool = False
    region: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    credentials_loader: CredentialsLoader = load_credentials
    _credentials: ReadOnlyCredentials | None = field(default=None, init=False, repr=False)

    def url_for(self, path: str, query: Mapping[str, str | int | None] | None = None) -> str:
        url = self.base_url.rstrip("/") + path
        given = {name: str(value) for name, value in (query or {}).items() if value is not None}
        if given:
            # %20 rather than +: one spelling for the signature and for API Gateway.
            url += "?" + urlencode(given, quote_via=quote)
        return url

    def get(self, path: str, query: Mapping[str, str | int | None] | None = None) -> ApiResponse:
        return self.request("GET", path, query=query)

    def post(
        self, path: str, *, json_body: object = None, headers: Mapping[str, str] | None = None
    ) -> ApiResponse:
        return self.request("POST", path, json_body=json_body, headers=headers)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | None] | None = None,
        json_body: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> ApiResponse:
        problem = validate_api_url(self.base_url)
        if problem is not None:
            raise UnsupportedUrl(f"cannot call the API: {problem}")
        url = self.url_for(path, query)
        body = b""
        all_headers = {"Accept": "application/json", **(headers or {})}
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode("utf-8")
            all_headers["Content-Type"] = "application/json"
        if self.sign:
            all_headers = self._signed(method, url, all_headers, body)
        # Not signed (botocore leaves it out of the signature anyway).
        all_headers["User-Agent"] = f"mailctl/{__version__}"
        request = urllib.request.Request(  # noqa: S310 (checked above: http or https only)
            url,
            data=body if method != "GET" else None,
            headers=all_headers,
            method=method,
        )
        where = url.split("?", 1)[0]
        try:
            with _OPENER.open(request, timeout=self.timeout_s) as answer:
                status = int(answer.status)
                answer_headers = {name.lower(): value for name, value in answer.headers.items()}
                raw = answer.read()
        except urllib.error.HTTPError as error:
            with error:
                raw = error.read()
                error_headers = {name.lower(): value for name, value in error.headers.items()}
            raise api_error(int(error.code), error_headers, raw) from None
        except urllib.error.URLError as error:
            raise ConnectionFailed(where, describe_reason(error.reason)) from None
        except TimeoutError:
            raise ConnectionFailed(where, f"no answer within {self.timeout_s:g} s") from None
        except OSError as error:  # reset, closed half way through the answer, ...
            raise ConnectionFailed(where, describe_reason(error)) from None
        return ApiResponse(status, answer_headers, parse_json(raw, status, where))

    def _signed(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> dict[str, str]:
        if not self.region:
            raise SigningError("no AWS region for SigV4 signing (pass --region or set AWS_REGION)")
        if self._credentials is None:
            self._credentials = self.credentials_loader()
        return sign_request(
            method=method,
            url=url,
            headers=headers,
            body=body,
            credentials=self._credentials,
            region=self.region,
        )


def describe_reason(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return str(reason.strerror)
    return str(reason) or type(reason).__name__


def parse_json(raw: bytes, status: int, where: str) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise BadAnswer(f"unexpected answer from {where} (HTTP {status}): not JSON") from None


def api_error(status: int, headers: Mapping[str, str], raw: bytes) -> ApiError:
    """The service's ``{"error": {"code", "message"}}``, or the best reading of another body.

    API Gateway answers some failures itself (a bad signature, a missing
    permission, a throttled call) with ``{"message": ...}`` and names the kind in
    the ``x-amzn-ErrorType`` header.
    """
    try:
        payload = json.loads(raw) if raw.strip() else None
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            return ApiError(status, error["code"], str(error.get("message", "")))
    gateway_kind = (headers.get("x-amzn-errortype") or "").split(":", 1)[0].strip()
    code = gateway_kind or status_name(status)
    if isinstance(payload, dict) and isinstance(payload.get("message"), str):
        message = payload["message"]
    else:
        text = raw.decode("utf-8", errors="replace").strip()
        message = text[:_MAX_RAW_MESSAGE] or status_phrase(status)
    return ApiError(status, code, " ".join(message.split()))


def status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "HTTP error"


def status_name(status: int) -> str:
    return status_phrase(status).lower().replace(" ", "_").replace("-", "_")
