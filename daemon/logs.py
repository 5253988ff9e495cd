"""Log lines: plain text for a terminal, without a time of their own under journald, or
one JSON object per line for a log collector (``daemon.log_format = "json"``)."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]

# The attributes every LogRecord has: anything else was passed in ``extra=`` and is a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...}``: the ``extra=`` fields of the call
    are kept as fields, and a traceback goes whole into ``"exception"``."""

    def format(self, record: logging.LogRecord) -> str:
        """One line of JSON for ``record``."""
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                body[key] = value
        if record.exc_info and record.exc_text is None:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            body["exception"] = record.exc_text
        return json.dumps(body, ensure_ascii=False, default=str)


def text_format(environ: Mapping[str, str]) -> str:
    """The text line's layout: journald stamps every line itself (``$JOURNAL_STREAM`` is set
    when systemd connects the output to it), so the time is written only elsewhere."""
    if environ.get("JOURNAL_STREAM"):
        return "%(levelname)s %(name)s: %(message)s"
    return "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str, log_format: LogFormat = "text", environ: Mapping[str, str] = os.environ) -> None:
    """Send the daemon's logs to stderr at ``level`` in ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(text_format(environ)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
