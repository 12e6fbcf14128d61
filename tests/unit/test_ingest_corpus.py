"""The real-traffic corpus: payloads other people captured from live gateways, each with its expected
canonical output written by hand (tests/fixtures/real/<dialect>/NNN-slug.expected.json).

An expectation lists, per event, the fields that matter (type, ids, kind, from/to, occurred_at, reply,
state…): those must be equal. It also lists the ignore reasons and error codes, in order.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apiplus.errors import PermanentError
from apiplus.offline import run_jsonl
from apiplus.schemas import validate
from services.ingest.cli import outcome_lines
from services.ingest.core import Context, Outcome, normalize
from services.ingest.worker import normalize_record

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "real"
DIALECTS = ("cloudapi", "evolution", "uazapi")
NOW_MS = 1767225600000  # 2026-01-01T00:00:00Z: the record's time, for events that carry none
MISSING = "<absent>"


def payloads(dialect: str | None = None) -> list[Path]:
    return sorted(p for d in ([dialect] if dialect else DIALECTS) for p in (CORPUS / d).glob("*.json")
                  if not p.name.endswith(".expected.json"))


def outcome_of(raw: bytes) -> tuple[Outcome | None, PermanentError | None]:
    try:
        return normalize_record(raw, Context(received_at_ms=NOW_MS), 512 * 1024), None
    except PermanentError as exc:
        return None, exc


def view(event: dict[str, Any]) -> dict[str, Any]:
    body = event.get("message") or event.get("status") or event.get("connection") or event.get("qr") or {}
    return {"type": event["type"], "occurred_at": event["occurred_at"], **body}


@pytest.mark.parametrize("path", payloads(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_payload_yields_what_its_expectation_says(path: Path) -> None:
    expected = orjson.loads(path.with_name(path.stem + ".expected.json").read_bytes())
    outcome, refused = outcome_of(path.read_bytes())
    if refused is not None:
        assert (expected.get("events", []), expected.get("ignored", []), expected.get("errors")) == \
            ([], [], [str(refused.code)]), refused.message
        return
    assert outcome is not None
    got = [view(e) for e in outcome.events]
    want = expected.get("events", [])
    assert [e["type"] for e in got] == [e["type"] for e in want]
    for actual, wanted in zip(got, want, strict=True):
        assert {k: actual.get(k, MISSING) for k in wanted} == wanted
    assert [i.reason for i in outcome.ignored] == expected.get("ignored", [])
    assert [str(e.code) for e in outcome.errors] == expected.get("errors", [])


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_payload_has_an_expectation_and_a_provenance_line(dialect: str) -> None:
    files = payloads(dialect)
    assert len(files) >= 15
    provenance = (CORPUS / dialect / "PROVENANCE.tsv").read_text()
    for path in files:
        assert path.with_name(path.stem + ".expected.json").exists(), path.name
        assert path.name in provenance, path.name


def test_redelivered_corpus_gives_the_same_event_ids_even_at_another_time() -> None:
    compared = 0
    for path in payloads():
        first, _ = outcome_of(path.read_bytes())
        try:
            later = normalize_record(path.read_bytes(), Context(received_at_ms=NOW_MS + 3_600_000), 512 * 1024)
        except PermanentError:
            continue
        assert first is not None
        assert [e["event_id"] for e in first.events] == [e["event_id"] for e in later.events], path.name
        compared += len(first.events)
    assert compared > 80


# --- nothing vanishes: mutated real payloads ---------------------------------------------------------
def _documents() -> list[dict[str, Any]]:
    docs = []
    for path in payloads():
        try:
            doc = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            docs.append(doc)
    return docs


DOCUMENTS = _documents()
ODD_VALUES = st.sampled_from([None, "", 0, -1, True, "x", [], {}, [{}], {"a": 1}, 10**20, "@lid", "1@lid"])


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value[:3]):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A real payload with a few of its fields removed or replaced by odd values."""
    doc = copy.deepcopy(draw(st.sampled_from(DOCUMENTS)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        holder: Any = doc
        for step in path[:-1]:
            holder = holder[step]
        if isinstance(holder, dict) and draw(st.booleans()):
            del holder[path[-1]]
        else:
            holder[path[-1]] = copy.deepcopy(draw(ODD_VALUES))
    return doc


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(mutated())
def test_no_input_yields_nothing_without_an_error_or_an_ignore(payload: dict[str, Any]) -> None:
    try:
        outcome = normalize(payload, Context(received_at_ms=NOW_MS))
    except PermanentError:
        return  # the whole record is refused with a reason: the worker dead-letters it
    assert outcome.events or outcome.ignored or outcome.errors, "a record yielded nothing and said nothing"
    for event in outcome.events:
        validate(event["type"], event)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(mutated())
def test_every_normalize_input_line_gets_an_event_or_a_stderr_line(payload: dict[str, Any]) -> None:
    out, err = io.BytesIO(), io.BytesIO()

    def process(line: bytes) -> Any:
        return outcome_lines(normalize_record(line, Context(received_at_ms=NOW_MS), 512 * 1024))

    line = json.dumps(payload).encode() + b"\n"  # stdlib: odd values include integers orjson will not write
    run_jsonl(process, io.BytesIO(line), out, err)
    assert out.getvalue() or err.getvalue(), "an input line yielded no event and no stderr line"
    assert all(orjson.loads(line)["line"] == 1 for line in err.getvalue().splitlines())
