"""The bench's rate window and its count of inputs a follower group has committed (nothing here times anything)."""

from __future__ import annotations

import pytest

from bench.run import Window, committed_records


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
