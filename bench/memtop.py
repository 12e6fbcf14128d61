"""Read tracemalloc snapshots a worker wrote (services/dispatch/memtrace.py): where its memory is.

    .venv/bin/python -m bench.memtop SNAPSHOT [BEFORE] [--top N] [--traces K]

Prints the traced total, the top N source lines (with BEFORE: the growth since that snapshot), the
totals per file, and the K largest allocation sites with their call stacks.
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from collections.abc import Sequence

IGNORED = (tracemalloc.__file__, "<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>",
           "<unknown>")


def load(path: str) -> tracemalloc.Snapshot:
    snapshot = tracemalloc.Snapshot.load(path)
    return snapshot.filter_traces([tracemalloc.Filter(False, name) for name in IGNORED])


def mib(size: float) -> str:
    return f"{size / 2**20:8.1f} MiB"


def report(snapshot: tracemalloc.Snapshot, before: tracemalloc.Snapshot | None, top: int, traces: int) -> list[str]:
    total = sum(stat.size for stat in snapshot.statistics("filename"))
    lines = [f"traced {mib(total)} in {sum(s.count for s in snapshot.statistics('filename')):,} blocks"]
    if before is not None:
        lines.append(f"growth since the earlier snapshot, by line (top {top}):")
        for diff in snapshot.compare_to(before, "lineno")[:top]:
            frame = diff.traceback[0]
            lines.append(f"{mib(diff.size_diff)} {diff.count_diff:+9,} blocks  {frame.filename}:{frame.lineno}")
    lines.append(f"by line (top {top}):")
    for stat in snapshot.statistics("lineno")[:top]:
        frame = stat.traceback[0]
        lines.append(f"{mib(stat.size)} {stat.count:9,} blocks {stat.size // max(stat.count, 1):6,} B each  "
                     f"{frame.filename}:{frame.lineno}")
    lines.append(f"by file (top {top}):")
    lines.extend(f"{mib(stat.size)} {stat.count:9,} blocks  {stat.traceback[0].filename}"
                 for stat in snapshot.statistics("filename")[:top])
    for stat in snapshot.statistics("traceback")[:traces]:
        lines.append(f"{mib(stat.size)} {stat.count:,} blocks, allocated at:")
        lines.extend(f"    {line}" for line in stat.traceback.format(most_recent_first=True)[::2])
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.memtop", description=__doc__.split("\n\n")[0])
    parser.add_argument("snapshot")
    parser.add_argument("before", nargs="?")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--traces", type=int, default=8)
    args = parser.parse_args(argv)
    before = load(args.before) if args.before else None
    print("\n".join(report(load(args.snapshot), before, args.top, args.traces)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
