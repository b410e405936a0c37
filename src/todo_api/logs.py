"""Logging: one line per record on stdout, JSON (`LOG_FORMAT=json`) or readable text (`console`), with any
`extra={...}` fields included."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["console", "json"]

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _exception(record: logging.LogRecord) -> tuple[str, list[str]] | None:
    """The exception's type and where it was raised, never its message: database errors quote SQL and parameters."""
    if not record.exc_info or record.exc_info[0] is None:
        return None
    frames = traceback.extract_tb(record.exc_info[2])
    return record.exc_info[0].__name__, [f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in frames]


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extra_fields(record))
        exception = _exception(record)
        if exception:
            entry["exception"], entry["stack"] = exception
        return json.dumps(entry, default=str)


def _console_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text and not any(char.isspace() or char in '"=' for char in text):
        return text
    return json.dumps(text)  # quoted, with newlines escaped: one field never reads as two, nor a record as two


class ConsoleFormatter(logging.Formatter):
    """For people at a terminal: time (UTC), level, logger and message, then the extra fields as key=value; an
    exception adds its type and, on indented lines, where it was raised (never its message, as in JSON)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace("\r", "\\r").replace("\n", "\\n")
        when = _timestamp(record).replace("+00:00", "Z")
        parts = [f"{when} {record.levelname:<7} {record.name}: {message}"]
        parts += [f"{key}={_console_value(value)}" for key, value in _extra_fields(record).items()]
        exception = _exception(record)
        if exception is None:
            return " ".join(parts)
        name, stack = exception
        parts.append(f"exception={name}")
        return "\n    at ".join([" ".join(parts), *stack])


_FORMATTERS: dict[LogFormat, type[logging.Formatter]] = {"console": ConsoleFormatter, "json": JsonFormatter}


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed, so configuring twice (tests, reload) does not duplicate lines."""


def configure_logging(level: str, log_format: LogFormat) -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    handler = next((handler for handler in root.handlers if isinstance(handler, _OurHandler)), None)
    if handler is None:
        handler = _OurHandler(sys.stdout)
        root.addHandler(handler)
    handler.setFormatter(_FORMATTERS[log_format]())


_audit = logging.getLogger("todo_api.audit")


def audit(event: str, **fields: Any) -> None:
    """An auth event as one log line with an `event` field (never a token, password or email body)."""
    _audit.info(event, extra={"event": event, **fields})
