"""The SQS attempt queue as a real endpoint (moto's server), and the worker's event source.

``LocalSqs`` runs moto's SQS on 127.0.0.1 and a free port, and creates the
attempt queue and its dead-letter queue as template.yaml declares them
(visibility timeout, retention, redrive after ``maxReceiveCount``). The
handlers reach it the standard way: ``AWS_ENDPOINT_URL_SQS`` points boto3 at
it, and ``MAIL_ATTEMPT_QUEUE_URL`` names the queue.

``WorkerPump`` plays the SQS event source mapping of ``attempt_worker``: it
long-polls ``ReceiveMessage`` for up to the event's ``BatchSize`` messages,
builds the SQS event Lambda would deliver, invokes the handler, deletes the
records that are not in ``batchItemFailures`` and leaves the failed ones to
come back after the visibility timeout (the whole batch when the handler
raised). One environment handles one batch at a time, so the pump invokes
the worker serially, on its own thread.

moto keeps its queues in memory: a stopped stack loses what is still queued.
Nothing accepted is lost with it: every message is a claim recorded in Redis,
and the scheduler takes back a claim whose message never arrived once its
deadline passed. The pump also drains what is queued before the stack stops.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from scripts.local_stack.lambda_runtime import LambdaFunction
from scripts.local_stack.sam_template import QueueSpec

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType
    from mypy_boto3_sqs.type_defs import (
        DeleteMessageBatchRequestEntryTypeDef,
        MessageAttributeValueOutputTypeDef,
        MessageTypeDef,
    )

QUEUE_PREFIX = "mail-local"
# Any key works with moto; a placeholder keeps real credentials away from a local fake.
PLACEHOLDER_KEY = "local"
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": PLACEHOLDER_KEY, "AWS_SECRET_ACCESS_KEY": PLACEHOLDER_KEY}
LONG_POLL_S = 1  # short enough for a prompt stop; Lambda's own poller uses 20 s
DRAIN_LIMIT_S = 15.0


def sqs_client(endpoint: str, region: str) -> SQSClient:
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


class LocalSqs:
    """moto's server with the attempt queue and its dead-letter queue."""

    def __init__(self, queue: QueueSpec, region: str) -> None:
        self.spec = queue
        self.region = region
        self.endpoint = ""
        self.queue_url = ""
        self.queue_arn = ""
        self.dead_letter_url: str | None = None
        self._server: Any = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        # moto's server logs every request through werkzeug at INFO: keep only problems.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        self._server = server
        host, port = server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        client = self.client()
        attributes: dict[QueueAttributeNameType, str] = {
            "VisibilityTimeout": str(self.spec.visibility_timeout_s),
            "MessageRetentionPeriod": str(self.spec.retention_s),
        }
        dead_letter = self.spec.dead_letter
        if dead_letter is not None and self.spec.max_receive_count:
            self.dead_letter_url = client.create_queue(
                QueueName=f"{QUEUE_PREFIX}-{dead_letter.logical_id}",
                Attributes={
                    "VisibilityTimeout": str(dead_letter.visibility_timeout_s),
                    "MessageRetentionPeriod": str(dead_letter.retention_s),
                },
            )["QueueUrl"]
            dead_letter_arn = self.arn_of(self.dead_letter_url)
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": dead_letter_arn,
                    "maxReceiveCount": self.spec.max_receive_count,
                }
            )
        self.queue_url = client.create_queue(
            QueueName=f"{QUEUE_PREFIX}-{self.spec.logical_id}", Attributes=attributes
        )["QueueUrl"]
        self.queue_arn = self.arn_of(self.queue_url)

    def client(self) -> SQSClient:
        return sqs_client(self.endpoint, self.region)

    def arn_of(self, queue_url: str) -> str:
        attributes = self.client().get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]
        return attributes["QueueArn"]

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
            print("SQS (moto) stopped", flush=True)


# --------------------------------------------------------------------------- the event source


def _record_attribute(value: MessageAttributeValueOutputTypeDef) -> dict[str, Any]:
    """A message attribute as Lambda's SQS event spells it (camelCase, binary in base64)."""
    binary = value.get("BinaryValue")
    return {
        "stringValue": value.get("StringValue"),
        "binaryValue": base64.b64encode(binary).decode("ascii") if binary is not None else None,
        "stringListValues": list(value.get("StringListValues", [])),
        "binaryListValues": [
            base64.b64encode(item).decode("ascii") for item in value.get("BinaryListValues", [])
        ],
        "dataType": value.get("DataType"),
    }


def sqs_event(messages: Sequence[MessageTypeDef], queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping hands the function for one batch."""
    records = []
    for message in messages:
        body = message.get("Body", "")
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": body,
                "attributes": {
                    str(name): value for name, value in message.get("Attributes", {}).items()
                },
                "messageAttributes": {
                    name: _record_attribute(value)
                    for name, value in message.get("MessageAttributes", {}).items()
                },
                "md5OfBody": message.get("MD5OfBody")
                or hashlib.md5(body.encode("utf-8"), usedforsecurity=False).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
        )
    return {"Records": records}


def failed_message_ids(result: Any, batch: Sequence[str]) -> set[str]:
    """The records to leave for redelivery, read from the handler's answer as Lambda reads it.

    ``{"batchItemFailures": [{"itemIdentifier": id}, …]}`` names the failures;
    an empty list, ``None`` or ``{}`` means every record succeeded. An answer
    Lambda cannot read (an unknown or empty identifier, a wrong shape) fails
    the whole batch.
    """
    if result is None:
        return set()
    if not isinstance(result, Mapping):
        return set(batch)
    failures = result.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return set(batch)
    failed: set[str] = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
        if not isinstance(identifier, str) or identifier not in batch:
            return set(batch)
        failed.add(identifier)
    return failed


class WorkerPump:
    """Feeds the attempt worker from the queue, one batch at a time, on its own thread."""

    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        queue_arn: str,
        worker: LambdaFunction,
        *,
        batch_size: int,
        region: str,
        long_poll_s: int = LONG_POLL_S,
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._worker = worker
        self._batch_size = batch_size
        self._region = region
        self._long_poll_s = long_poll_s
        self._finishing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="attempt-worker-pump")
        self.batches = 0
        self.records = 0
        self.failed = 0

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        """Finish the batch at hand, handle what is already queued, then stop."""
        self._finishing.set()
        self._thread.join()
        print(
            f"attempt worker stopped after {self.batches} batches "
            f"({self.records} records, {self.failed} left for redelivery)",
            flush=True,
        )

    def _run(self) -> None:
        while not self._finishing.is_set():
            self._pump(self._long_poll_s)
        # Nothing adds to the queue any more (the API and the scheduled runs
        # have stopped): hand the worker what is queued, so it is sent now
        # rather than after a restart and a claim timeout.
        deadline = time.monotonic() + DRAIN_LIMIT_S
        while time.monotonic() < deadline and self._pump(0):
            pass

    def _pump(self, wait_s: int) -> bool:
        """One receive, and one invocation if it got anything; True if it did."""
        try:
            messages = self._client.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=self._batch_size,
                WaitTimeSeconds=wait_s,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
        except (BotoCoreError, ClientError) as error:
            print(f"attempt queue: ReceiveMessage failed: {error}", file=sys.stderr, flush=True)
            self._finishing.wait(1.0)
            return False
        if not messages:
            return False
        ids = [message["MessageId"] for message in messages]
        try:
            result = self._worker.invoke(sqs_event(messages, self._queue_arn, self._region))
        except Exception:
            # Lambda logs it and the whole batch comes back after the visibility timeout.
            print(f"{self._worker.name} failed; the batch is retried:", file=sys.stderr)
            traceback.print_exc()
            failed = set(ids)
        else:
            failed = failed_message_ids(result, ids)
        self.batches += 1
        self.records += len(messages)
        self.failed += len(failed)
        done: list[DeleteMessageBatchRequestEntryTypeDef] = [
            {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
            for index, message in enumerate(messages)
            if message["MessageId"] not in failed
        ]
        if done:
            try:
                self._client.delete_message_batch(QueueUrl=self._queue_url, Entries=done)
            except (BotoCoreError, ClientError) as error:
                # Redelivered later; the worker skips a claim it already finished.
                print(f"attempt queue: DeleteMessageBatch failed: {error}", file=sys.stderr)
        return True
