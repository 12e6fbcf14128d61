"""Structured JSON logs: one line per event, constant messages, context as redacted fields."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from apiplus.redact import safe_log_fields

STARTUP_GRACE_SECONDS = 60.0
COORDINATOR_LOGGER = "aiokafka.consumer.group_coordinator"
_STD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = {k: v for k, v in record.__dict__.items() if k not in _STD_ATTRS}
        entry.update(safe_log_fields(extra))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class StartupCoordinatorFilter(logging.Filter):
    """aiokafka logs `Group Coordinator Request failed` at error while the broker has no coordinator
    for the group yet (`COORDINATOR_NOT_AVAILABLE` while `__consumer_offsets` is created or loaded,
    connection refused while the broker starts): normal in a worker's first seconds, and retried.
    Such retriable failures within the start-up grace are logged at debug; a non-retriable one
    (e.g. group authorisation refused), or any after the grace, stays an error."""

    def __init__(self, grace: float = STARTUP_GRACE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self.until = clock() + grace

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Group Coordinator Request failed"):
            return True
        error = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if not getattr(error, "retriable", False) or self.clock() >= self.until:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger("aiokafka").isEnabledFor(logging.DEBUG)


def setup_logging(service: str, level: str = "INFO", kafka_level: str = "WARNING") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka is chatty at INFO about every coordinator step; APIPLUS_KAFKA_LOG_LEVEL opens it up.
    logging.getLogger("aiokafka").setLevel(kafka_level.upper())
    coordinator = logging.getLogger(COORDINATOR_LOGGER)
    coordinator.filters[:] = [f for f in coordinator.filters if not isinstance(f, StartupCoordinatorFilter)]
    coordinator.addFilter(StartupCoordinatorFilter())
