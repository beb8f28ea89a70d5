"""Logging for the server: one line per event, each with its request ID; plain text or JSON.

A startup failure is one line, not a traceback.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal


class HideModelLoadTraceback(logging.Filter):
    """Starlette re-logs a failed lifespan as a full traceback; our own line already said what is wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Traceback") and "ModelLoadError" in message)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id (and the access line's fields)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, _, status = record.args
            entry.update(client=client, method=method, path=path, status=status)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_config(level: str, fmt: Literal["plain", "json"] = "plain") -> dict[str, Any]:
    plain = "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s]: %(message)s"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "hide_load_traceback": {"()": HideModelLoadTraceback},
            "request_id": {"()": "app.api.request_id.RequestIdFilter"},
        },
        "formatters": {"plain": {"format": plain}, "json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": fmt,
                "filters": ["hide_load_traceback", "request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "learnserve": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
        },
    }
