"""The driver of the offline commands: JSONL in on stdin, JSONL out on stdout, one error line per bad input."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

import orjson

from apiplus.errors import ErrorCode, PermanentError


class StderrLine(dict[str, Any]):
    """An output that belongs on stderr under its input's line number (e.g. an input deliberately ignored)."""


def error_line(line_no: int, error: PermanentError, *, with_field: bool = False, **known: Any) -> bytes:
    detail: dict[str, Any] = {"code": str(error.code)}
    if with_field:
        detail["field"] = error.field
    detail["message"] = error.message
    return orjson.dumps({"line": line_no, **known, "error": detail}) + b"\n"


def run_jsonl(
    process: Callable[[bytes], Iterable[dict[str, Any]]],
    stdin: BinaryIO,
    stdout: BinaryIO,
    stderr: BinaryIO,
    context: Callable[[bytes], dict[str, Any]] | None = None,
    with_field: bool = False,
) -> int:
    """Feed each non-blank line to `process`; refusals go to stderr and the run carries on.

    Returns 0; an error reading or writing propagates (the caller exits non-zero).
    """
    for line_no, raw in enumerate(stdin, start=1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        try:
            outputs = list(process(line))
        except PermanentError as exc:
            stderr.write(error_line(line_no, exc, with_field=with_field, **(context(line) if context else {})))
            continue
        except Exception as exc:  # noqa: BLE001 - one line must never stop the rest
            internal = PermanentError(ErrorCode.INTERNAL, f"unexpected {type(exc).__name__}")
            stderr.write(error_line(line_no, internal, with_field=with_field, **(context(line) if context else {})))
            continue
        for out in outputs:
            if isinstance(out, StderrLine):
                stderr.write(orjson.dumps({"line": line_no, **out}) + b"\n")
            else:
                stdout.write(orjson.dumps(out) + b"\n")
    stdout.flush()
    stderr.flush()
    return 0
