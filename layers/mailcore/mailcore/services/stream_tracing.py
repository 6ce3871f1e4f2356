"""The stream intake with one X-Ray subsegment per accepted batch.

A subclass rather than a change to :class:`StreamIntake`: the poller hands
every batch to ``accept``, so tracing it here covers stream acceptance
without the intake knowing about tracing. Annotations are counts and stream
entry ids only, never a field of a command.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from mailcore.ports import EntryVerdict, StreamEntry
from mailcore.services.stream_intake import IntakeResult, StreamIntake
from mailcore.tracing import Subsegment, XRayProvider


class TracedStreamIntake(StreamIntake):
    def __init__(self, *args: Any, tracing: XRayProvider, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tracing = tracing

    def accept(self, offset: str, entries: Sequence[StreamEntry]) -> IntakeResult:
        with self._tracing.in_subsegment(Subsegment.ACCEPT_STREAM_BATCH) as segment:
            segment.put_annotation("entries", len(entries))
            if entries:
                segment.put_annotation("first_entry_id", entries[0].entry_id)
                segment.put_annotation("last_entry_id", entries[-1].entry_id)
            result = super().accept(offset, entries)
            verdicts = Counter(entry.verdict for entry in result.handled)
            segment.put_annotation("accepted", verdicts[EntryVerdict.CREATED])
            segment.put_annotation("duplicates", verdicts[EntryVerdict.DUPLICATE])
            segment.put_annotation("malformed", verdicts[EntryVerdict.MALFORMED])
            segment.put_annotation("offset_moved", result.offset_moved)
        return result
