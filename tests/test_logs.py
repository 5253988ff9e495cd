"""Log lines: JSON for collectors, no second timestamp under journald."""

from __future__ import annotations

import json
import logging
import sys

from daemon.logs import JsonFormatter, text_format


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "daemon.app", logging.WARNING, "x.py", 1, "rejected %s at %s", ("a", "b"), None
    )
    record.created = 1772438400.25  # 2026-03-02T08:00:00.250Z
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_json_line_has_time_level_logger_message_and_the_extra_fields() -> None:
    line = JsonFormatter().format(_record(bed="b1"))
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2026-03-02T08:00:00.250+00:00",
        "level": "WARNING",
        "logger": "daemon.app",
        "message": "rejected a at b",
        "bed": "b1",
    }


def test_a_json_line_carries_its_traceback_whole() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("wardd", logging.ERROR, "x.py", 1, "failed", None, sys.exc_info())
    body = json.loads(JsonFormatter().format(record))
    assert body["message"] == "failed"
    assert body["exception"].startswith("Traceback")
    assert body["exception"].endswith("ValueError: boom")


def test_under_journald_the_text_line_has_no_time_of_its_own() -> None:
    assert "%(asctime)s" in text_format({})
    assert "%(asctime)s" not in text_format({"JOURNAL_STREAM": "8:12345"})
