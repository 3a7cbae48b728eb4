"""Log context and formats shared by the web and the GPU worker (standard library only).

Why here and stdlib-only: the worker must stay Django-free, and the web imports this
module from settings without importing anything else of gpu_worker. A 30-line
formatter is used instead of python-json-logger: one dependency less on GPU machines,
and the fields we need (the ids below) are ours anyway.

`request_id`, `render_id` and `user_id` live in contextvars: the web's middleware sets
them per request, the worker per job; `ContextFilter` copies them onto every record,
so every line about a request or a render carries them without each call passing them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
from datetime import datetime, timezone
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
render_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("render_id", default=None)
user_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("user_id", default=None)

CONTEXT = {"request_id": request_id, "render_id": render_id, "user_id": user_id}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s%(context)s"


class ContextFilter(logging.Filter):
    """Puts the current ids on each record (an id passed in ``extra`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        shown = []
        for name, var in CONTEXT.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
            value = getattr(record, name)
            if value is not None:
                shown.append(f"{name}={value}")
        record.context = (" [" + " ".join(shown) + "]") if shown else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback only when the record carries one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in (*CONTEXT, "code"):
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def json_wanted(env: Any = os.environ) -> bool:
    return str(env.get("LOG_FORMAT", "text")).strip().lower() == "json"


def configure(level: str = "INFO", env: Any = os.environ) -> None:
    """The worker's logging: JSON lines when LOG_FORMAT=json, else readable text."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if json_wanted(env) else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
