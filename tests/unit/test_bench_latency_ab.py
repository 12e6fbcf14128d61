"""bench.latency_ab's variants and its line per run (no broker: the run itself is bench.run's latency phase)."""

from __future__ import annotations

import argparse

import pytest

from bench.latency_ab import line, parse_variant


def test_a_variant_is_the_defaults_or_names_with_values() -> None:
    assert parse_variant("-") == {}
    assert parse_variant("APIPLUS_DISPATCH_PROCESSES=2") == {"APIPLUS_DISPATCH_PROCESSES": "2"}
    assert parse_variant("A=1;B=x=y;") == {"A": "1", "B": "x=y"}
    assert parse_variant("EMPTY=") == {"EMPTY": ""}
    for bad in ("A", "=1", "A=1;B"):
        with pytest.raises(argparse.ArgumentTypeError, match="not NAME=VALUE"):
            parse_variant(bad)


def test_the_line_carries_the_run_s_figures_and_leaves_out_what_was_not_measured() -> None:
    run = {"rate": 1800.0, "cpu_us_per_command": 391.2, "p50_ms": 7.04, "p99_ms": 61.46, "p999_ms": 80.0,
           "broker_p99_ms": 12.5, "machine_split_pct": {"under test": 33.4, "rest": 1.0}}
    text = line("defaults", run)
    assert text.startswith("defaults: 1,800/s, 391 cpu us/command, p50 7.0 ms, p99 61.5 ms, p99.9 80.0 ms;")
    assert "produced -> readable p99 12.5 ms" in text
    assert "loop probe not read" in text
    assert "stage trace not read" in text
    assert text.endswith("machine: under test 33%, rest 1%")  # no fetch trace: nothing about fetches
