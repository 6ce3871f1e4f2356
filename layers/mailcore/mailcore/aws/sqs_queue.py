"""The SQS attempt queue: claimed attempts travel to the workers as small JSON messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mailcore.contracts.attempt_message import encode_claim
from mailcore.ports import ClaimedAttempt

SQS_BATCH_LIMIT = 10  # SendMessageBatch takes at most ten entries


class SqsAttemptQueue:
    """Implements ``AttemptQueue`` with SendMessageBatch."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, claims: Sequence[ClaimedAttempt]) -> list[ClaimedAttempt]:
        failed: list[ClaimedAttempt] = []
        for start in range(0, len(claims), SQS_BATCH_LIMIT):
            batch = list(claims[start : start + SQS_BATCH_LIMIT])
            entries = [
                {"Id": str(index), "MessageBody": encode_claim(claim)}
                for index, claim in enumerate(batch)
            ]
            try:
                reply = self._client.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
            except (BotoCoreError, ClientError):
                # The claims go back to the schedule; the caller releases them.
                # So do the batches after this one: the client has already
                # spent its timeouts and its retry on SQS, and each further
                # batch would only wait as long again for the same answer.
                return failed + list(claims[start:])
            failed += [batch[int(entry["Id"])] for entry in reply.get("Failed", [])]
        return failed
