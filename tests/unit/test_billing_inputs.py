"""billing's quick input check: it only ever accepts what the schema accepts, and bad input keeps its exact error."""

from __future__ import annotations

from typing import Any

import fastjsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apiplus.errors import PermanentError
from apiplus.schemas import schema_dir, validator
from services.billing.core import INPUT_TYPES
from services.billing.inputs import quick_check
from services.billing.worker import parse_input


def _schema(kind: str) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads((schema_dir() / f"{kind}.json").read_bytes())
    return loaded


def _schema_accepts(kind: str, event: dict[str, Any]) -> bool:
    try:
        validator(kind)(event)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


_CHECKS = {kind: quick_check(_schema(kind)) for kind in INPUT_TYPES}

# Values near every edge the schemas draw: lengths, ranges, types, timestamps of every shape.
_TIMESTAMP_EDGES = [
    "2026-11-01T00:00:00Z", "2026-02-28T23:59:59.5Z", "2026-02-29T00:00:00Z", "2024-02-29T00:00:00Z",
    "2026-04-31T00:00:00Z", "2026-06-30T00:00:00Z", "2026-07-31T00:00:00Z", "2026-11-31T00:00:00Z",
    "2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z", "2026-11-01T24:00:00Z",
    "2026-11-01T00:60:00Z", "2026-11-01T00:00:60Z", "2026-11-01T00:00:00", "2026-11-01T00:00:00z",
    "2026-11-01t00:00:00Z", "2026-11-01T00:00:00+00:00", "2026-11-01T00:00:00Z\n", "2026-11-01 00:00:00Z",
    "\u0662\u0660\u0662\u0666-11-01T00:00:00Z", "2026-11-01T00:00:00.Z", "",
]
_TIMESTAMPS = st.one_of(
    st.sampled_from(_TIMESTAMP_EDGES),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,4})?Z\Z"),
)
_EDGES = [None, True, False, -1, 0, 1, 15, 31, 32, 1.0, 15.0, 31.0, 32.0, 1.5, "premium", "basic", "gold", "", "x",
          "x" * 128, "x" * 129, "x" * 256, "x" * 257, "é" * 128, "é" * 129, *INPUT_TYPES, [], {}, ["x"], {"x": 1}]
_VALUES = st.one_of(st.sampled_from(_EDGES), st.integers(), st.floats(allow_nan=False), st.text(max_size=3),
                    _TIMESTAMPS)
_FIELDS = ["event_id", "type", "occurred_at", "tenant_id", "channel_id", "invoice_id", "plan", "invoice_due_day",
           "extra"]


def _valid(kind: str, occurred_at: str = "2026-11-01T00:00:00Z") -> dict[str, Any]:
    return {"event_id": "e1", "type": kind, "occurred_at": occurred_at, "tenant_id": "t1", "channel_id": "c1",
            "invoice_id": "i1", "plan": "premium", "invoice_due_day": 15}


@st.composite
def _events(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(INPUT_TYPES))
    event = _valid(kind, draw(_TIMESTAMPS))
    for name in draw(st.lists(st.sampled_from(_FIELDS), max_size=3)):
        if draw(st.booleans()):
            event.pop(name, None)
        else:
            event[name] = draw(_VALUES)
    return kind, event


def test_every_input_type_has_a_quick_check() -> None:
    assert all(_CHECKS.values())


@settings(max_examples=3000)
@given(_events())
def test_the_quick_check_accepts_nothing_the_schema_rejects(case: tuple[str, dict[str, Any]]) -> None:
    kind, event = case
    check = _CHECKS[kind]
    assert check is not None
    if check(event):
        assert _schema_accepts(kind, event)


@pytest.mark.parametrize("kind", INPUT_TYPES)
def test_the_quick_check_accepts_nothing_the_schema_rejects_one_field_at_a_time(kind: str) -> None:
    check = _CHECKS[kind]
    assert check is not None
    assert check(_valid(kind))
    for name in _FIELDS:
        for value in [*_EDGES, *_TIMESTAMP_EDGES, "missing"]:
            event = _valid(kind)
            if value == "missing":
                event.pop(name, None)
            else:
                event[name] = value
            if check(event):
                assert _schema_accepts(kind, event), (name, value)


@pytest.mark.parametrize("kind", INPUT_TYPES)
def test_the_quick_check_accepts_the_schema_examples(kind: str) -> None:
    example = orjson.loads((schema_dir() / "examples" / f"{kind}.json").read_bytes())
    check = _CHECKS[kind]
    assert check is not None
    assert check(example)


def test_a_schema_keyword_the_check_does_not_know_means_no_quick_check() -> None:
    schema = _schema("channel.activated")
    assert quick_check({**schema, "additionalProperties": False}) is None
    assert quick_check({**schema, "properties": {**schema["properties"], "channel_id": {"type": "string",
                                                                                      "pattern": "^c"}}}) is None


@pytest.mark.parametrize(("change", "code", "message", "field"), [
    ({"occurred_at": "2026-11-01 10:00:00Z"}, "schema_violation",
     r"occurred_at must match pattern ^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$", "occurred_at"),
    ({"occurred_at": "2026-02-30T10:00:00Z"}, "schema_violation", "occurred_at must be date-time", "occurred_at"),
    ({"channel_id": ""}, "schema_violation", "channel_id must be longer than or equal to 1 characters", "channel_id"),
    ({"tenant_id": 7}, "schema_violation", "tenant_id must be string", "tenant_id"),
    ({"channel_id": None}, "schema_violation", "channel_id must be string", "channel_id"),
])
def test_bad_input_keeps_the_error_that_names_its_field(change: dict[str, Any], code: str, message: str,
                                                         field: str) -> None:
    event = {"event_id": "a1", "type": "channel.activated", "occurred_at": "2026-11-05T10:00:00Z",
             "tenant_id": "acme", "channel_id": "c1", **change}
    with pytest.raises(PermanentError) as caught:
        parse_input(orjson.dumps(event))
    assert (caught.value.code, caught.value.message, caught.value.field) == (code, message, field)


def test_a_valid_event_outside_the_quick_form_is_still_accepted() -> None:
    leap_day = {"event_id": "u1", "type": "tenant.updated", "occurred_at": "2028-02-29T23:00:00.250Z",
                "tenant_id": "acme", "plan": "premium", "invoice_due_day": 31.0}
    check = _CHECKS["tenant.updated"]
    assert check is not None
    assert not check(leap_day)
    assert not check({**leap_day, "invoice_due_day": 31})
    assert check({**leap_day, "occurred_at": "2028-03-31T23:00:00.250Z", "invoice_due_day": 31})
    assert parse_input(orjson.dumps(leap_day)) == leap_day
