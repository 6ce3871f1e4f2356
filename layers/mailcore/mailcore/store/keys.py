"""Every Redis key name the service uses, and nothing else builds one.

Every key carries a partition's hash tag (``{p0}``, ``{p1}``, ...), so every
atomic Lua step touches a single hash slot and runs unchanged on Redis Cluster
and ElastiCache Serverless. A delivery, its attempts, its index entries, its
idempotency record and its schedule entry all live in the partition its
idempotency scope hashes to (:func:`partition_of`). The control keys (the
stream offset, malformed-command records, leases) live in partition 0's
slot, so with one partition a stream batch and its offset move in one step.

The command stream is the producer's key and carries no tag; it is only read
with ``XREAD`` and trimmed with ``XTRIM``, outside scripts. A delivery id may
hold any visible ASCII, braces and colons too: the partition's tag comes
first in every key, and Redis hashes only the first ``{...}``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

CONTROL_PARTITION = 0


def partition_of(source: str, idempotency_key: str, partitions: int) -> int:
    """The partition of an idempotency scope: stable across processes and releases.

    CRC-32 rather than ``hash()``, which Python salts per process.
    """
    if partitions == 1:
        return 0
    return zlib.crc32(f"{source}\x00{idempotency_key}".encode()) % partitions


def partition_tag(partition: int) -> str:
    return f"p{partition}"


DEFAULT_PARTITION = partition_tag(CONTROL_PARTITION)


def in_any_partition(pattern: str) -> str:
    """A SCAN pattern for ``pattern`` (after the prefix) in every partition at once."""
    return f"mail:{{p*}}:{pattern}"


@dataclass(frozen=True, slots=True)
class KeySpec:
    pattern: str
    redis_type: str
    retention: str
    purpose: str


@dataclass(frozen=True, slots=True)
class RedisKeys:
    partition: str = DEFAULT_PARTITION
    # Every key starts with it; computed once (acceptance builds a dozen keys a delivery).
    prefix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", f"mail:{{{self.partition}}}:")

    @classmethod
    def of_partition(cls, partition: int) -> RedisKeys:
        return cls(partition_tag(partition))

    def delivery(self, delivery_id: str) -> str:
        return f"{self.prefix}delivery:{delivery_id}"

    def attempt(self, delivery_id: str, attempt_no: int) -> str:
        return f"{self.prefix}attempt:{delivery_id}:{attempt_no}"

    def idempotency(self, source: str, idempotency_key: str) -> str:
        return f"{self.prefix}idempotency:{source}:{idempotency_key}"

    def attempt_schedule(self) -> str:
        return f"{self.prefix}attempt_schedule"

    def index_created_at(self) -> str:
        return f"{self.prefix}idx:created_at"

    def index_status(self, status: str) -> str:
        return f"{self.prefix}idx:status:{status}"

    def index_source(self, source: str) -> str:
        return f"{self.prefix}idx:source:{source}"

    def index_recipient(self, address: str) -> str:
        # Addresses are indexed case-insensitively: operators search by what they were told.
        return f"{self.prefix}idx:recipient:{address.lower()}"

    def index_template(self, template_id: str) -> str:
        return f"{self.prefix}idx:template:{template_id}"

    def index_idempotency(self, source: str, idempotency_key: str) -> str:
        return f"{self.prefix}idx:idempotency:{source}:{idempotency_key}"

    def stream_offset(self, stream: str) -> str:
        return f"{self.prefix}stream_offset:{stream}"

    def stream_trim_marks(self, stream: str) -> str:
        return f"{self.prefix}stream_marks:{stream}"

    def malformed_command(self, stream_entry_id: str) -> str:
        return f"{self.prefix}malformed:{stream_entry_id}"

    def index_malformed(self) -> str:
        return f"{self.prefix}idx:malformed"

    def partition_count(self) -> str:
        return f"{self.prefix}partitions"

    def lease(self, name: str) -> str:
        return f"{self.prefix}lease:{name}"

    def claims(self) -> str:
        return f"{self.prefix}claims"

    def dead_letter(self, delivery_id: str) -> str:
        return f"{self.prefix}dead_letter:{delivery_id}"

    def index_dead_letters(self) -> str:
        return f"{self.prefix}idx:dead_letters"


def key_catalog(keys: RedisKeys | None = None) -> list[KeySpec]:
    """The documented key layout (``docs/redis-keys.md`` is checked against it)."""
    k = keys or RedisKeys()
    idx = "sorted set, score `created_at_ms`, member `delivery_id`"
    cleaned = "member removed by cleanup after its delivery expires"
    return [
        KeySpec(
            k.delivery("<delivery_id>"),
            "hash",
            "none while live; `MAIL_DELIVERY_TTL` from a terminal state",
            "the delivery record",
        ),
        KeySpec(
            f"{k.prefix}attempt:<delivery_id>:<attempt_no>",
            "hash",
            "none while live; `MAIL_ATTEMPT_TTL` from when it finished",
            "one attempt of a delivery, numbered from 1",
        ),
        KeySpec(
            k.idempotency("<source>", "<idempotency_key>"),
            "hash",
            "`MAIL_IDEMPOTENCY_TTL`",
            "request fingerprint, delivery id and outcome, for replays",
        ),
        KeySpec(
            k.attempt_schedule(),
            "sorted set, score due time (ms), member `delivery_id`",
            "none",
            "deliveries waiting for their next attempt",
        ),
        KeySpec(k.index_created_at(), idx, cleaned, "every delivery, newest first"),
        KeySpec(k.index_status("<status>"), idx, cleaned, "deliveries by current status"),
        KeySpec(k.index_source("<source>"), idx, cleaned, "deliveries by source"),
        KeySpec(
            f"{k.prefix}idx:recipient:<address>",
            idx,
            cleaned,
            "deliveries by envelope recipient (to, cc, bcc; lower-cased)",
        ),
        KeySpec(k.index_template("<template_id>"), idx, cleaned, "deliveries by template"),
        KeySpec(
            k.index_idempotency("<source>", "<idempotency_key>"),
            idx,
            cleaned,
            "deliveries by caller idempotency key",
        ),
        KeySpec(
            k.stream_offset("<stream>"),
            "string",
            "none",
            "id of the last command stream entry accepted or recorded malformed",
        ),
        KeySpec(
            k.stream_trim_marks("<stream>"),
            "sorted set, score entries handled so far, member stream entry id",
            "members older than the trim point are removed as the poller trims",
            "where the offset moved, written with it: how the poller finds the entry "
            "`MAIL_STREAM_RETENTION` handled entries back, to trim the stream below it",
        ),
        KeySpec(
            k.malformed_command("<stream_entry_id>"),
            "hash",
            "`MAIL_MALFORMED_COMMAND_TTL`",
            "a refused stream entry: failure code and message, redacted raw fields",
        ),
        KeySpec(
            k.index_malformed(),
            "sorted set, score recorded time (ms), member stream entry id",
            "members outlive expired records; readers skip them",
            "malformed commands, newest first",
        ),
        KeySpec(
            k.claims(),
            "sorted set, score claim deadline (ms), member `delivery_id`",
            "none",
            "deliveries handed to a worker; recovery takes back those past their deadline",
        ),
        KeySpec(
            k.dead_letter("<delivery_id>"),
            "hash",
            "`MAIL_ATTEMPT_TTL`",
            "why a delivery was dead-lettered: attempts made, last outcome and summary",
        ),
        KeySpec(
            k.index_dead_letters(),
            "sorted set, score dead-letter time (ms), member `delivery_id`",
            "members outlive expired entries; readers skip them",
            "dead letters, newest first",
        ),
        KeySpec(
            k.partition_count(),
            "string",
            "none",
            "`MAIL_REDIS_PARTITIONS` of the deployment that first wrote here; "
            "a deployment with another count refuses to work",
        ),
        KeySpec(
            k.lease("<name>"),
            "string (holder's token)",
            "lease length, renewed while held",
            "who may run a singleton loop (`stream_poller`, `scheduler`) right now",
        ),
    ]
