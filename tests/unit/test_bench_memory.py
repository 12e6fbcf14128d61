"""The bench's memory and CPU figures follow a worker's children (APIPLUS_DISPATCH_PROCESSES=N runs a
supervisor whose children do the work), and the tracemalloc knob of the dispatch worker."""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from bench.memtop import load, report
from bench.run import RssTrack, course, cpu_seconds, process_tree, rss_mb, worker_rss_mb
from services.dispatch import memtrace

CHILD = ("import time; b = bytearray(120 * 2**20); b[::4096] = b'x' * len(b[::4096]); sum(range(40_000_000)); "
         "time.sleep(60)")
SUPERVISOR = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', sys.argv[1]]); time.sleep(60)"


def test_the_worker_figure_is_the_largest_process_of_the_tree_and_cpu_counts_the_children() -> None:
    parent = subprocess.Popen([sys.executable, "-c", SUPERVISOR, CHILD])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (worker_rss_mb([parent]) < 120 or cpu_seconds([parent]) < 0.3):
            time.sleep(0.1)
        tree = process_tree(parent.pid)
        assert len(tree) == 2
        assert rss_mb(parent.pid) < 60  # the supervisor alone
        assert worker_rss_mb([parent]) >= 120  # its child, which holds the memory
        assert cpu_seconds([parent]) >= 0.3  # the child's loop; the supervisor itself only starts
        track = RssTrack([parent])
        track.sample()
        track.sample(force=True)
        assert track.peak >= 120
        assert len(track.samples) == 2
    finally:
        for pid in reversed(process_tree(parent.pid)):
            subprocess.run(["kill", str(pid)], check=False)
        parent.wait(10)


def test_course_picks_a_few_samples_and_always_the_last() -> None:
    samples = [(float(t), float(100 + t)) for t in range(30)]
    text = course(samples, points=5)
    assert text.startswith("0s:100 ")
    assert text.endswith("29s:129 MB")
    assert len(text.split()) <= 8
    assert course([]) == "-"


def test_tracemalloc_is_off_unless_asked_and_refuses_a_bad_frame_count(tmp_path: Path) -> None:
    assert memtrace.from_env({}) is None
    assert memtrace.from_env({"APIPLUS_DISPATCH_TRACEMALLOC": "0"}) is None
    with pytest.raises(ValueError, match="frame count"):
        memtrace.from_env({"APIPLUS_DISPATCH_TRACEMALLOC": "lots"})
    with pytest.raises(ValueError, match="frame count"):
        memtrace.from_env({"APIPLUS_DISPATCH_TRACEMALLOC": "-3"})


def test_peak_snapshots_are_written_on_a_new_high_and_read_back_by_memtop(tmp_path: Path) -> None:
    trace = memtrace.MemTrace(tmp_path, frames=3)
    tracemalloc.start(3)
    try:
        assert not trace.check()  # less than a MiB traced: not worth a file
        base = [bytearray(1024) for _ in range(4_000)]
        assert trace.check()
        assert not trace.check()  # nothing new
        held = [bytearray(1024) for _ in range(20_000)]  # ~20 MiB more
        assert trace.check()
        peak = tmp_path / f"{trace.prefix}-peak.snap"
        assert peak.exists()
        trace.close()
        assert (tmp_path / f"{trace.prefix}-exit.snap").exists()
    finally:
        tracemalloc.stop()
    text = "\n".join(report(load(str(peak)), None, top=5, traces=1))
    assert "test_bench_memory.py" in text
    assert float(text.split()[1]) >= 19  # "traced   NN.N MiB ..."
    del held, base
