"""Where a command's time goes before its provider request: an opt-in trace for benchmarks.

`APIPLUS_DISPATCH_STAGE_TRACE=<file>` (off by default) appends one tab-separated line per command at its
first provider request: command id, then wall-clock seconds when it was produced (the Kafka record's
timestamp), taken in at intake, started by its lane, claimed (the send record's first `sending`
written), and handed to the HTTP client. `make bench` joins it with the simulator's receipt times to
split the latency phase's slowest commands by stage (bench/run.py, `stage_split`). Off, it costs one
`is None` test per command at three places.
"""

from __future__ import annotations

import os
import time

ENV = "APIPLUS_DISPATCH_STAGE_TRACE"
STAGES = ("produced", "intake", "lane", "claimed", "request")


class LineFile:
    """Lines appended to a file, whole lines per write on an O_APPEND descriptor: several processes share the
    file (those of APIPLUS_DISPATCH_PROCESSES, say) without one's line cut by another's, as a buffered file
    object would cut them where its buffer fills."""

    def __init__(self, path: str, lines_per_write: int) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lines: list[str] = []
        self._per_write = lines_per_write

    def append(self, line: str) -> None:
        """One line, its newline included."""
        self._lines.append(line)
        if len(self._lines) >= self._per_write:
            self.flush()

    def flush(self) -> None:
        data = memoryview("".join(self._lines).encode())
        self._lines = []
        while data:
            data = data[os.write(self._fd, data):]

    def close(self) -> None:
        self.flush()
        os.close(self._fd)


class StageTrace:
    LINES_PER_WRITE = 500

    def __init__(self, path: str) -> None:
        self._file = LineFile(path, self.LINES_PER_WRITE)

    @staticmethod
    def start(produced_ms: int) -> list[float]:
        """A command taken in at intake: its record's timestamp and now."""
        return [produced_ms / 1000, time.time()]

    @staticmethod
    def mark(stages: list[float]) -> None:
        stages.append(time.time())

    def request(self, command_id: str, stages: list[float]) -> None:
        """The first provider request of a command traced from intake: its line is written."""
        if len(stages) == len(STAGES) - 1:
            stages.append(time.time())
            self._file.append("\t".join([command_id, *(f"{t:.6f}" for t in stages)]) + "\n")

    def close(self) -> None:
        self._file.close()


def from_env() -> StageTrace | None:
    path = os.environ.get(ENV, "")
    return StageTrace(path) if path else None
