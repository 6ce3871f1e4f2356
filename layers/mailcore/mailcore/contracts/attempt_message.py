"""The attempt message: a claimed attempt as it travels through SQS to a worker.

Kept apart from the SQS adapter so the worker, which only reads these
messages, does not import botocore at cold start.
"""

from __future__ import annotations

import json

from mailcore.ports import ClaimedAttempt


def encode_claim(claim: ClaimedAttempt) -> str:
    message: dict[str, str | int] = {
        "delivery_id": claim.delivery_id,
        "attempt_no": claim.attempt_no,
        "claim_token": claim.claim_token,
    }
    if claim.partition:
        # Absent means partition 0: messages from before partitions still decode.
        message["partition"] = claim.partition
    return json.dumps(message, separators=(",", ":"))


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
    partition = data.get("partition", 0)
    if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
        raise ValueError("partition must be a non-negative integer")
    return ClaimedAttempt(delivery_id, attempt_no, token, partition)
