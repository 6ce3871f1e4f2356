"""Every AWS client the functions build comes from here: explicit timeouts, bounded retries.

botocore's defaults are 60 s to connect, 60 s to wait for each read and the
legacy retry mode (five tries, backing off between them): one call to an
endpoint that takes the connection and never answers blocks for minutes,
far past any function's timeout, and a refused port costs several seconds
of retries. The values below are constants, not settings: they are about
AWS's endpoints, which answer from inside the region in milliseconds, not
about anything a deployment chooses.

- ``CONNECT_TIMEOUT_S``: an endpoint in the region (directly, through the
  NAT gateway or a VPC endpoint) connects in a few milliseconds; one second
  is many times that and still short next to a function's timeout.
- ``READ_TIMEOUT_S``: SQS SendMessageBatch, Secrets Manager GetSecretValue
  and EventBridge PutEvents answer in tens of milliseconds; two seconds
  without a byte means the endpoint is not going to answer.
- ``TOTAL_ATTEMPTS``: one retry (botocore's ``standard`` mode, which also
  retries a timeout or a refused connection), after a jittered back-off of
  at most a second: a single lost packet or a throttled call gets a second
  chance, an endpoint that is down costs no more than ``CALL_LIMIT_S``.

A client whose calls legitimately take longer (the SES API with a large raw
message) asks :func:`aws_client` for a longer ``read_timeout_s``; the caller of
a best-effort call bounds its wall time as well (``mailcore.deadlines``).
"""

from __future__ import annotations

from typing import Any

CONNECT_TIMEOUT_S = 1.0
READ_TIMEOUT_S = 2.0
TOTAL_ATTEMPTS = 2
# botocore's standard mode waits rand(0, 1) x 2**(attempt - 1) seconds before a retry.
_BACK_OFF_LIMIT_S = sum(2.0**n for n in range(TOTAL_ATTEMPTS - 1))
# The longest one call with the defaults can block, whatever the endpoint does.
CALL_LIMIT_S = TOTAL_ATTEMPTS * (CONNECT_TIMEOUT_S + READ_TIMEOUT_S) + _BACK_OFF_LIMIT_S


def aws_client(service: str, *, read_timeout_s: float = READ_TIMEOUT_S) -> Any:
    """A botocore client for ``service`` ("sqs", "secretsmanager", "sesv2", "events", ...).

    Region, credentials and endpoint come the standard AWS way (the Lambda
    environment, or ``AWS_ENDPOINT_URL_<SERVICE>`` locally). Made with
    botocore directly: importing boto3 also imports s3transfer, which costs a
    Lambda cold start about 100 ms for nothing these clients need.
    """
    import botocore.session
    from botocore.config import Config

    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=read_timeout_s,
        retries={"total_max_attempts": TOTAL_ATTEMPTS, "mode": "standard"},
    )
    return botocore.session.get_session().create_client(service, config=config)
