"""JSON Schemas from schemas/, compiled once at start and used at the edges of every worker."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

from apiplus.errors import ErrorCode, PermanentError

SCHEMA_BASE = "https://apiplus.dev/schemas/"


def schema_dir() -> Path:
    configured = os.environ.get("APIPLUS_SCHEMAS_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[1] / "schemas"


def _load(uri: str) -> Any:
    if not uri.startswith(SCHEMA_BASE):
        raise ValueError(f"schema reference outside the project: {uri}")
    return orjson.loads((schema_dir() / uri.removeprefix(SCHEMA_BASE)).read_bytes())


@cache
def validator(name: str) -> Callable[[Any], Any]:
    """The compiled validator of `schemas/<name>.json`; compiled once per process."""
    schema = _load(SCHEMA_BASE + f"{name}.json")
    return fastjsonschema.compile(schema, handlers={"https": _load}, use_default=False)


def validate(name: str, value: Any) -> None:
    """Raise a PermanentError naming the first offending field."""
    try:
        validator(name)(value)
    except fastjsonschema.JsonSchemaValueException as exc:
        field = ".".join(str(p) for p in (exc.path or [])[1:]) or None
        code = ErrorCode.MISSING_FIELD if "must contain" in exc.message else ErrorCode.SCHEMA_VIOLATION
        message = exc.message.replace("data.", "", 1).replace("data ", "payload ", 1)
        raise PermanentError(code, message, field=field) from None


def schema_names() -> list[str]:
    return sorted(p.stem for p in schema_dir().glob("*.json"))
