"""Let moto's SQS server keep pace with tens of thousands of queued messages.

moto keeps a queue's messages in one Python list, and several of its steps
walk that whole list:

- whenever it reads one of the queue's attributes, it recomputes all of them,
  including three approximate counts that each walk the list; it does so for
  every message sent (to look up ContentBasedDeduplication) and, through
  GetQueueAttributes, up to three times for every message received (to look
  up the retention period);
- every ReceiveMessage (and every wake-up of a long poll) first copies the
  list of all visible messages, however few it hands out;
- every DeleteMessage walks the list twice to find the message.

The end-to-end benchmark queues up to 20,000 claims within seconds, so those
walks, which real SQS does not make, would set the pace: measured before
these patches, the whole pipeline managed about 100 deliveries/s with 4,000
deliveries and slowed as the queue grew, with moto's process busy in these
walks and the poller and the workers waiting on it.

:func:`apply` patches moto's classes in the process that runs moto's server
(the benchmark's SQS process only; the local stack and the tests use moto as
it is). Every answer stays the same; only the walks go:

- the three approximate counts are computed at most once a second per queue
  (SQS documents them as approximate, and they lag in SQS too);
- the retention check reads the queue's retention period directly;
- the visible messages are produced lazily from the head of the list, so a
  receive stops once it has its batch (what is still in flight, at most a
  few batches, sits at the head);
- a delete finds its message by receipt handle in a dict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from moto.core.utils import unix_time
from moto.sqs.exceptions import ReceiptHandleIsInvalid
from moto.sqs.models import Message, Queue, SQSBackend

_by_receipt_handle: dict[str, Any] = {}


class _VisibleMessages:
    """``Queue.messages`` without the copy: the visible messages, found as they are needed."""

    def __init__(self, messages: list[Any]) -> None:
        self._messages = messages

    def __iter__(self) -> Iterator[Any]:
        # A snapshot of the references (a C-level copy): receive may move some to the DLQ.
        return (m for m in list(self._messages) if m.visible and not m.delayed)

    def __bool__(self) -> bool:
        return any(True for _ in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _messages(self: Any) -> _VisibleMessages:
    return _VisibleMessages(self._messages)


def _retention_ok(self: Any, queue_name: str, message: Any) -> bool:
    retention_period = int(self.get_queue(queue_name).message_retention_period)
    return bool(retention_period + message.sent_timestamp / 1000 > unix_time())


_original_mark_received = Message.mark_received


def _mark_received(self: Any, visibility_timeout: int | None = None) -> None:
    _original_mark_received(self, visibility_timeout)
    _by_receipt_handle[self.receipt_handle] = self


def _delete_message(self: Any, receipt_handle: str) -> None:
    if receipt_handle in self.deleted_messages:
        return  # already deleted: moto (and SQS) accept that quietly
    message = _by_receipt_handle.get(receipt_handle)
    if message is None:
        raise ReceiptHandleIsInvalid()
    try:
        self._messages.remove(message)  # by identity, and in flight means near the head
    except ValueError:
        raise ReceiptHandleIsInvalid() from None
    self.pending_messages.discard(message)
    self.deleted_messages.update(message.all_receipt_handles)
    for handle in message.all_receipt_handles:
        _by_receipt_handle.pop(handle, None)


COUNTS = (
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
)
COUNT_LIFETIME_S = 1.0


def _at_most_once_a_second(name: str, compute: Callable[[Any], int]) -> property:
    def count(self: Any) -> int:
        cache: dict[str, tuple[float, int]] = self.__dict__.setdefault("_bench_counts", {})
        now = time.monotonic()
        kept = cache.get(name)
        if kept is not None and now - kept[0] < COUNT_LIFETIME_S:
            return kept[1]
        value = compute(self)
        cache[name] = (now, value)
        return value

    return property(count)


def apply() -> None:
    for name in COUNTS:
        setattr(Queue, name, _at_most_once_a_second(name, getattr(Queue, name).fget))
    Queue.messages = property(_messages)  # type: ignore[method-assign, assignment]
    Queue.delete_message = _delete_message  # type: ignore[method-assign]
    Message.mark_received = _mark_received  # type: ignore[method-assign]
    SQSBackend.is_message_valid_based_on_retention_period = _retention_ok  # type: ignore[method-assign]
