"""The bench's fetch trace: its figures from a trace, and the wrapper that runs a module with it (no broker)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import ROOT, fetch_cycle, fetch_line


def test_the_cycle_splits_each_fetch_from_the_gap_until_the_next_in_the_window() -> None:
    trace = "\n".join([
        "t.commands\t99.000\t99.100",  # before the window
        "t.commands\t100.000\t100.010",  # 10 ms, then 5 ms until the next
        "registry\t100.001\t100.501",  # another consumer's fetch: not counted
        "t.commands\t100.015\t100.035",  # 20 ms, then 65 ms
        "t.commands\t100.100\t100.110",  # 10 ms
        "cut\tline",
        "t.commands\t200.000\t200.010",  # after the window
    ])
    figures = fetch_cycle(trace, "t.commands", 100.0, 150.0)
    assert figures["fetches"] == 3
    assert figures["fetch_p50_ms"] == pytest.approx(10)
    assert figures["fetch_max_ms"] == pytest.approx(20)
    assert figures["gap_max_ms"] == pytest.approx(65)
    assert fetch_cycle(trace, "t.commands", 300.0, 400.0) == {}
    assert fetch_line(figures).startswith("; 3 fetches of commands, each p50/p99 10.0/")
    assert fetch_line({}) == ""


def test_the_wrapper_runs_the_module_with_the_fetcher_timed(tmp_path: Path) -> None:
    probe = tmp_path / "probe_module.py"
    probe.write_text("import sys\nfrom aiokafka.consumer.fetcher import Fetcher\n"
                     "print(Fetcher._proc_fetch_request.__name__, sys.argv[1:])\n")
    out = subprocess.run([sys.executable, "-m", "bench.fetchtrace", str(tmp_path / "f.tsv"), "probe_module", "a", "b"],
                         cwd=ROOT, env={"PYTHONPATH": f"{ROOT}:{tmp_path}"}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "timed ['a', 'b']"
