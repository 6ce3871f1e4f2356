"""The SQS attempt queue: claimed attempts travel to the workers as small JSON messages."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mailcore.ports import ClaimedAttempt

SQS_BATCH_LIMIT = 10  # SendMessageBatch takes at most ten entries


def encode_claim(claim: ClaimedAttempt) -> str:
    return json.dumps(
        {
            "delivery_id": claim.delivery_id,
            "attempt_no": claim.attempt_no,
            "claim_token": claim.claim_token,
        },
        separators=(",", ":"),
    )


def decode_claim(body: str) -> ClaimedAttempt:
    """Raises ValueError (or KeyError/TypeError) for a body that is not a claim."""
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("attempt message must be a JSON object")
    delivery_id, attempt_no, token = data["delivery_id"], data["attempt_no"], data["claim_token"]
    if not (isinstance(delivery_id, str) and isinstance(token, str)):
        raise ValueError("delivery_id and claim_token must be strings")
    if not isinstance(attempt_no, int) or isinstance(attempt_no, bool) or attempt_no < 1:
        raise ValueError("attempt_no must be a positive integer")
    return ClaimedAttempt(delivery_id, attempt_no, token)


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
                failed += batch
                continue
            failed += [batch[int(entry["Id"])] for entry in reply.get("Failed", [])]
        return failed
