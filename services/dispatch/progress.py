"""How far one input partition's commands got, above its committed offset. Pure.

dispatch finishes commands out of partition order, so a partition's committed offset (the first
unfinished command) can have finished commands above it, and commands whose `queued` or `held`
result is already out. That is written in the same Kafka transaction as those results and the
offset, so after a crash the next owner neither repeats a result nor loses one: it skips what is
FINISHED and does not report `queued` (or `held`) again.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

import orjson


class Mark(IntEnum):
    """What of one command is committed; each includes the ones before it."""

    NONE = 0
    QUEUED = 1  # its `queued` result
    HELD = 2  # ... and its `held` result
    FINISHED = 3  # everything: terminal result, dead letter or parked copy


@dataclass
class Progress:
    frontier: int | None = None  # the committed offset: everything below it is finished
    marks: dict[int, Mark] = field(default_factory=dict)  # offsets at or above the frontier

    def get(self, offset: int) -> Mark:
        if self.frontier is not None and offset < self.frontier:
            return Mark.FINISHED
        return self.marks.get(offset, Mark.NONE)

    def with_marks(self, marks: list[tuple[int, Mark]], frontier: int | None) -> Progress:
        """A new Progress: `marks` added (a mark never goes back), then everything below `frontier` dropped."""
        merged = dict(self.marks)
        for offset, mark in marks:
            merged[offset] = max(merged.get(offset, Mark.NONE), mark)
        frontier = self.frontier if frontier is None else frontier
        if frontier is not None:
            merged = {o: m for o, m in merged.items() if o >= frontier}
        return Progress(frontier, merged)

    def encode(self) -> bytes:
        """One byte per offset from the lowest marked one, compressed: bursts finish in runs."""
        if not self.marks:
            return orjson.dumps({"frontier": self.frontier, "first": None, "marks": ""})
        first, last = min(self.marks), max(self.marks)
        raw = bytes(self.marks.get(o, Mark.NONE) for o in range(first, last + 1))
        packed = base64.b64encode(zlib.compress(raw)).decode()
        return orjson.dumps({"frontier": self.frontier, "first": first, "marks": packed})

    @classmethod
    def decode(cls, value: bytes) -> Progress:
        data = orjson.loads(value)
        first = data.get("first")
        if first is None:
            return cls(data.get("frontier"))
        raw = zlib.decompress(base64.b64decode(data["marks"]))
        return cls(data.get("frontier"), {first + i: Mark(b) for i, b in enumerate(raw) if b})
