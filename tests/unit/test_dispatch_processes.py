"""APIPLUS_DISPATCH_PROCESSES: several dispatch workers under one `dispatch run`."""

from __future__ import annotations

import sys
import time

from services.dispatch.cli import child_env, supervise


def test_each_process_is_one_worker_on_its_own_port() -> None:
    envs = [child_env(i, 9102) for i in range(3)]
    assert [e["APIPLUS_DISPATCH_HTTP_PORT"] for e in envs] == ["9102", "9103", "9104"]
    assert {e["APIPLUS_DISPATCH_PROCESSES"] for e in envs} == {"1"}
    assert child_env(2, 0)["APIPLUS_DISPATCH_HTTP_PORT"] == "0"  # any free port stays any free port


def test_all_exit_cleanly() -> None:
    assert supervise(2, 0, [sys.executable, "-c", "pass"]) == 0


def test_one_failing_stops_the_others_and_its_status_is_returned() -> None:
    # each child learns its port; the one on port 1 fails, the other would sleep for a minute
    script = ("import os, sys, time\n"
              "if os.environ['APIPLUS_DISPATCH_HTTP_PORT'] == '1': sys.exit(3)\n"
              "time.sleep(60)\n")
    started = time.monotonic()
    assert supervise(2, 1, [sys.executable, "-c", script]) == 3
    assert time.monotonic() - started < 30
