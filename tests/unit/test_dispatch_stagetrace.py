"""The stage trace's file: whole lines, whichever of several processes wrote them (nothing here times anything)."""

from __future__ import annotations

from pathlib import Path

from services.dispatch.stagetrace import STAGES, StageTrace


def test_two_writers_on_one_file_leave_only_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "stages.tsv"
    writers = [StageTrace(str(path)), StageTrace(str(path))]  # as the processes of APIPLUS_DISPATCH_PROCESSES do
    n = 3 * StageTrace.LINES_PER_WRITE + 7  # several writes each, and a partial batch left for close()
    for i in range(n):
        for w, trace in enumerate(writers):
            stages = trace.start(1_700_000_000_000 + i)
            for _ in STAGES[2:-1]:
                trace.mark(stages)
            trace.request(f"w{w}-command-{i}-" + "x" * 40, stages)
    for trace in writers:
        trace.close()
    lines = path.read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == sorted(
        f"w{w}-command-{i}-" + "x" * 40 for w in range(2) for i in range(n))
    for line in lines:
        fields = line.split("\t")
        assert len(fields) == 1 + len(STAGES)
        assert all(float(t) > 0 for t in fields[1:])


def test_a_command_not_traced_from_intake_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "stages.tsv"
    trace = StageTrace(str(path))
    trace.request("partial", [1.0, 2.0])  # fewer marks than a command taken in at intake has by its request
    trace.close()
    assert path.read_text() == ""
