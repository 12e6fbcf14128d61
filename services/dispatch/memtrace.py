"""Opt-in allocation tracing of the dispatch worker, for finding what holds its memory (issue 14).

`APIPLUS_DISPATCH_TRACEMALLOC=<frames>` (off by default; 0 or empty: off) starts `tracemalloc` with that
many frames per allocation before the worker is built, and writes snapshots (`tracemalloc.Snapshot.dump`)
to `APIPLUS_DISPATCH_TRACEMALLOC_DIR` (default `.cache/tracemalloc`):

- `dispatch-<pid>-peak.snap` whenever the traced memory reaches a new high (checked every second, at
  least 5% and 1 MiB above the last one written), so the file left behind is the peak's;
- `dispatch-<pid>-usr1-<n>.snap` on `kill -USR1 <pid>`;
- `dispatch-<pid>-exit.snap` when the worker exits.

Read them with `.venv/bin/python -m bench.memtop FILE [FILE_BEFORE]`. Tracing costs CPU (several times
the worker's own): measure rates and CPU without it.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("apiplus.dispatch.memtrace")
CHECK_SECONDS = 1.0
NEW_HIGH = 1.05  # a peak snapshot is rewritten when traced memory is this much above the last one ...
MIN_STEP = 2**20  # ... and at least this many bytes


class MemTrace:
    def __init__(self, directory: Path, frames: int) -> None:
        self.directory = directory
        self.frames = frames
        self.prefix = f"dispatch-{os.getpid()}"
        self.written_at = 0  # traced bytes when the last peak snapshot was taken
        self.signals = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tracemalloc.start(self.frames)
        signal.signal(signal.SIGUSR1, self._on_signal)
        atexit.register(self.close)
        threading.Thread(target=self._watch, name="memtrace", daemon=True).start()
        log.warning("tracemalloc on", extra={"frames": self.frames, "directory": str(self.directory)})

    def dump(self, name: str) -> Path:
        path = self.directory / f"{self.prefix}-{name}.snap"
        with self._lock:
            tracemalloc.take_snapshot().dump(str(path))
        return path

    def check(self) -> bool:
        """Write the peak snapshot if traced memory is at a new high; True when written."""
        current, _ = tracemalloc.get_traced_memory()
        if current < max(self.written_at * NEW_HIGH, self.written_at + MIN_STEP):
            return False
        self.written_at = current
        self.dump("peak")
        return True

    def close(self) -> None:
        if self._stop.is_set() or not tracemalloc.is_tracing():
            return
        self._stop.set()
        self.dump("exit")

    def _on_signal(self, _signum: int, _frame: Any) -> None:
        self.signals += 1
        threading.Thread(target=self.dump, args=(f"usr1-{self.signals}",), daemon=True).start()

    def _watch(self) -> None:
        while not self._stop.wait(CHECK_SECONDS):
            self.check()


def from_env(environ: Mapping[str, str] | None = None) -> MemTrace | None:
    """Started when APIPLUS_DISPATCH_TRACEMALLOC names a frame count; None (and nothing traced) otherwise."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    raw = env.get("APIPLUS_DISPATCH_TRACEMALLOC", "").strip()
    if not raw or raw == "0":
        return None
    try:
        frames = int(raw)
    except ValueError:
        raise ValueError(f"APIPLUS_DISPATCH_TRACEMALLOC must be a frame count, not {raw!r}") from None
    if frames < 1:
        raise ValueError(f"APIPLUS_DISPATCH_TRACEMALLOC must be a frame count, not {raw!r}")
    trace = MemTrace(Path(env.get("APIPLUS_DISPATCH_TRACEMALLOC_DIR", ".cache/tracemalloc")), frames)
    trace.start()
    return trace
