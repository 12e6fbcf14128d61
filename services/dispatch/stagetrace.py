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


class StageTrace:
    LINES_PER_WRITE = 500

    def __init__(self, path: str) -> None:
        # Whole lines per write on an O_APPEND descriptor: the processes of APIPLUS_DISPATCH_PROCESSES share the
        # file without one's line cut by another's (a buffered file object writes where its buffer fills).
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lines: list[str] = []

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
            self._lines.append("\t".join([command_id, *(f"{t:.6f}" for t in stages)]) + "\n")
            if len(self._lines) >= self.LINES_PER_WRITE:
                self._write()

    def _write(self) -> None:
        data = memoryview("".join(self._lines).encode())
        self._lines = []
        while data:
            data = data[os.write(self._fd, data):]

    def close(self) -> None:
        self._write()
        os.close(self._fd)


def from_env() -> StageTrace | None:
    path = os.environ.get(ENV, "")
    return StageTrace(path) if path else None
