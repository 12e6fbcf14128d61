"""A quick check that a lifecycle event is valid, derived from its JSON Schema. Pure.

The compiled schema validator costs a few µs per event, most of it the two regular expressions of
`occurred_at` (its pattern and the `date-time` format). `quick_check(schema)` builds a check from the
same schema that only ever answers True for an event the schema accepts: plain strings of allowed
length, integers in range, enum and const values, and timestamps of the form `YYYY-MM-DDThh:mm:ss[.f]Z`
with ASCII digits and a day that exists in that month in every year (so the `date-time` format holds;
29 February is left to the full validator). Anything else — a bad event, but also a valid one outside
that form (29 February, a second 60, a float `invoice_due_day` the schema allows) — is answered False
and goes through the full validator, which accepts it or names the first offending field exactly as
before. A schema with a keyword the check does not know gets no quick check at all (`None`): every
event then takes the full validator.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# The timestamp pattern the lifecycle schemas use for occurred_at (with "format": "date-time").
UTC_TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"
# Stricter than that pattern and the date-time format together: whatever this matches, both accept.
_PLAIN_TIMESTAMP = re.compile(
    r"[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?Z"
).fullmatch
_SCHEMA_KEYS = {"$schema", "$id", "title", "description", "type", "properties", "required"}
_PROPERTY_KEYS = {"type", "minLength", "maxLength", "minimum", "maximum", "enum", "const", "pattern", "format",
                  "description"}

Check = Callable[[Any], bool]


def quick_check(schema: dict[str, Any]) -> Callable[[dict[str, Any]], bool] | None:
    """True only for events `schema` accepts; None when the schema uses what this does not cover."""
    if not schema.keys() <= _SCHEMA_KEYS or schema.get("type") != "object":
        return None
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    if not required <= properties.keys():
        return None
    checks: list[tuple[str, bool, Check]] = []
    for name, rule in properties.items():
        check = _property_check(rule)
        if check is None:
            return None
        checks.append((name, name in required, check))
    missing = object()

    def accepted(event: dict[str, Any]) -> bool:
        for name, needed, check in checks:
            value = event.get(name, missing)
            if value is missing:
                if needed:
                    return False
            elif not check(value):
                return False
        return True

    return accepted


def _property_check(rule: dict[str, Any]) -> Check | None:
    if not rule.keys() <= _PROPERTY_KEYS:
        return None
    if "const" in rule:
        const = rule["const"]
        return None if len(rule) > 1 or type(const) is not str else (lambda v: type(v) is str and v == const)
    if "enum" in rule:
        options = frozenset(rule["enum"])
        if len(rule) > 1 or not all(type(o) is str for o in options):
            return None
        return lambda v: type(v) is str and v in options
    if rule.get("type") == "integer":
        if rule.keys() - {"type", "minimum", "maximum", "description"}:
            return None
        low, high = rule.get("minimum", float("-inf")), rule.get("maximum", float("inf"))
        return lambda v: type(v) is int and low <= v <= high  # bool is not int here, nor is 5.0
    if rule.get("type") == "string":
        shortest, longest = rule.get("minLength", 0), rule.get("maxLength", float("inf"))
        timestamp = "pattern" in rule or "format" in rule
        if timestamp:
            if (rule.get("pattern"), rule.get("format")) != (UTC_TIMESTAMP_PATTERN, "date-time") or (
                "minLength" in rule or "maxLength" in rule
            ):
                return None
            return lambda v: type(v) is str and _PLAIN_TIMESTAMP(v) is not None
        return lambda v: type(v) is str and shortest <= len(v) <= longest
    return None
