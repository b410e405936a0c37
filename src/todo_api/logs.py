"""Structured logging: one JSON object per line on stdout, with any `extra={...}` fields merged in."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info and record.exc_info[0] is not None:
            # The type and where it was raised, never the message: database errors quote SQL and parameters.
            entry["exception"] = record.exc_info[0].__name__
            entry["stack"] = [
                f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in traceback.extract_tb(record.exc_info[2])
            ]
        return json.dumps(entry, default=str)


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed, so configuring twice (tests, reload) does not duplicate lines."""


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not any(isinstance(handler, _OurHandler) for handler in root.handlers):
        handler = _OurHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)


_audit = logging.getLogger("todo_api.audit")


def audit(event: str, **fields: Any) -> None:
    """An auth event as one log line with an `event` field (never a token, password or email body)."""
    _audit.info(event, extra={"event": event, **fields})
