"""Logging for the server: one readable line per event; a startup failure is one line, not a traceback."""

from __future__ import annotations

import logging
from typing import Any


class HideModelLoadTraceback(logging.Filter):
    """Starlette re-logs a failed lifespan as a full traceback; our own line already said what is wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Traceback") and "ModelLoadError" in message)


def log_config(level: str) -> dict[str, Any]:
    fmt = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"hide_load_traceback": {"()": HideModelLoadTraceback}},
        "formatters": {"plain": {"format": fmt}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "filters": ["hide_load_traceback"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "learnserve": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
        },
    }
