"""The bench's rate window and its count of inputs a follower group has committed (nothing here times anything)."""

from __future__ import annotations

import os

import pytest

from bench.run import MachineCpu, Window, busy_pct, committed_records, machine_cpu, machine_split, role_of, split_line


def test_committed_records_counts_records_below_each_partitions_committed_offset() -> None:
    # Transactional partitions: commit markers take offsets 3 and 7 (partition 0) and 2 (partition 1).
    offsets = {0: [0, 1, 2, 4, 5, 6], 1: [0, 1], 2: [0, 1, 2]}
    assert committed_records(offsets, {}) == 0
    assert committed_records(offsets, {0: 3, 1: 1}) == 4
    # Past the last record and its marker: every record of the partition, never more.
    assert committed_records(offsets, {0: 8, 1: 3, 2: 3}) == 11
    # A committed offset ahead of the records seen so far counts only the records seen.
    assert committed_records({0: [0, 1]}, {0: 50}) == 2


def test_the_window_takes_rate_and_cpu_between_10_and_90_percent() -> None:
    cpu = iter([(1.0, (100.0, 200.0)), (3.0, (150.0, 400.0))])
    window = Window(expected=1000)
    window.update(50, now=0.5, snapshot=lambda: next(cpu))  # below 10%: nothing taken
    assert window.start is None
    window.update(100, now=1.0, snapshot=lambda: next(cpu))
    window.update(899, now=4.0, snapshot=lambda: pytest.fail("taken before 90%"))
    window.update(950, now=5.0, snapshot=lambda: next(cpu))
    window.update(1000, now=9.0, snapshot=lambda: pytest.fail("taken twice"))
    measured = window.measurement(inputs=2000)  # the rate is in inputs, whatever was counted
    assert measured.rate == pytest.approx(0.8 * 2000 / 4.0)
    assert measured.cpu_us_per_input == pytest.approx(1e6 * 2.0 / 1600)
    assert measured.machine_busy_pct == pytest.approx(25.0)


def test_both_crossings_at_once_and_a_missing_one() -> None:
    window = Window(expected=10)
    window.update(10, now=1.0, snapshot=lambda: (0.0, (0.0, 0.0)))
    assert window.start == window.end
    with pytest.raises(RuntimeError, match=r"no 10%\.\.90% window"):
        window.measurement(10)  # no time between them: no rate
    late = Window(expected=10)
    late.update(5, now=1.0, snapshot=lambda: (0.0, (0.0, 0.0)))
    with pytest.raises(RuntimeError, match=r"no 10%\.\.90% window"):
        late.measurement(10)


def test_two_stages_with_a_backlog_are_timed_on_both_stages_work() -> None:
    """The course of a real ingest run: health commits nothing until normalise is half done, then catches up
    alone. Over both stages' steps the window spans the two; over the commits alone it would be only the
    catch-up, faster than normalise by itself."""
    course = [(0.0, 0, 0), (1.0, 2000, 0), (2.0, 6000, 0), (3.0, 10000, 0), (4.0, 14000, 2000),
              (5.0, 18000, 6000), (6.0, 20000, 12000), (7.0, 20000, 18000), (8.0, 20000, 20000)]
    steps, commits = Window(2 * 20000), Window(20000)
    for at, outputs, committed in course:
        steps.update(outputs + committed, at, lambda at=at: (at, (0.0, 1.0)))  # one CPU second per second
        commits.update(committed, at, lambda at=at: (at, (0.0, 1.0)))
    assert steps.start is not None
    assert steps.end is not None
    assert (steps.start[0], steps.end[0]) == (2.0, 7.0)  # 6 000 and 38 000 of 40 000 steps
    both = steps.measurement(20000)
    assert both.rate == pytest.approx(16000 / 5.0)
    assert both.cpu_us_per_input == pytest.approx(1e6 * 5.0 / 16000)
    assert commits.measurement(20000).rate > both.rate  # what timing the commits alone would have claimed


def test_roles_come_from_the_pid_and_the_command_line() -> None:
    assert role_of(7, "/usr/bin/java -Xmx768m -cp x kafka.Kafka server.properties", under_test={7}) == "under test"
    assert role_of(8, "/usr/bin/java -Xmx768m -cp x kafka.Kafka server.properties", under_test={7}) == "broker"
    assert role_of(9, "/usr/bin/redis-server 127.0.0.1:24379", under_test=()) == "redis"
    assert role_of(9, "python -m redis-server-lookalike", under_test=()) is None
    assert role_of(10, "python -m services.cli dispatch simulator --port 1", under_test=()) == "simulator"
    assert role_of(os.getpid(), "python -m bench.run", under_test=()) == "harness"
    assert role_of(11, "python -m services.cli dispatch run", under_test=()) is None  # not under test here: rest


def test_the_machine_split_adds_up_to_busy_and_counts_processes_started_meanwhile() -> None:
    start = MachineCpu(1000.0, 4000.0, {1: ("under test", 500), 2: ("broker", 300), 3: ("redis", 10),
                                        4: ("simulator", 50)})
    # 400 of 1000 ticks busy: under test 150, broker 100, redis 0, a simulator gone meanwhile (its ticks are
    # in "rest"), a harness process seen only at the end with 40 (counted from zero).
    end = MachineCpu(1400.0, 5000.0, {1: ("under test", 650), 2: ("broker", 400), 3: ("redis", 10),
                                      5: ("harness", 40)})
    split = machine_split(start, end)
    assert busy_pct(start, end) == pytest.approx(40.0)
    assert split == pytest.approx({"under test": 15.0, "broker": 10.0, "redis": 0.0, "simulator": 0.0,
                                   "harness": 4.0, "rest": 11.0})
    assert sum(split.values()) == pytest.approx(busy_pct(start, end))
    assert split_line(split) == "under test 15%, broker 10%, redis 0%, simulator 0%, harness 4%, rest 11%"
    assert machine_split((0.0, 1.0), (1.0, 2.0)) == {}  # samples without processes: no split


def test_a_real_sample_names_this_process_as_the_harness() -> None:
    sample = machine_cpu()
    assert sample.by_pid[os.getpid()][0] == "harness"
    assert sample.busy <= sample.total
