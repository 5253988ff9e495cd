"""Counters of what the daemon did and refused, labelled by reason, exported as points."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from daemon.points import Point

log = logging.getLogger(__name__)

MAX_LOGGED_BYTES = 200
REJECTION_LOG_PERIOD_S = 60.0
"""After a rejection is logged in full, others of the same counter and reason within this
period are only counted, and summarised in one line when it ends."""


@dataclass
class _Quiet:
    since: float
    more: int = 0
    last_where: str = ""
    last_detail: str = ""


class RejectionLog:
    """Rejections logged without flooding the log: one line in full per counter and reason
    and period, then one summary line for the rest (a burst of 100,000 bad messages made
    100,000 warning lines). Every rejection is counted whatever is logged."""

    def __init__(
        self, period_s: float = REJECTION_LOG_PERIOD_S, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._period_s = period_s
        self._monotonic = monotonic
        self._quiet: dict[tuple[str, str], _Quiet] = {}

    def log(self, name: str, reason: str, detail: str, *, where: str, payload: bytes | str) -> None:
        """Log one rejection in full, or count it towards its period's summary."""
        now = self._monotonic()
        key = (name, reason)
        quiet = self._quiet.get(key)
        if quiet is not None and now - quiet.since < self._period_s:
            quiet.more += 1
            quiet.last_where, quiet.last_detail = where, detail
            return
        if quiet is not None:
            self._summarise(key, quiet)
        self._quiet[key] = _Quiet(now)
        log.warning(
            "rejected %s at %s: %s: %s; payload: %s",
            name,
            sanitize(where),
            sanitize(reason),
            sanitize(detail),
            preview(payload),
        )

    def flush(self, *, everything: bool = False) -> None:
        """Summarise the periods that have ended (all of them at shutdown: ``everything``)."""
        now = self._monotonic()
        for key, quiet in list(self._quiet.items()):
            if everything or now - quiet.since >= self._period_s:
                self._summarise(key, quiet)
                del self._quiet[key]

    def _summarise(self, key: tuple[str, str], quiet: _Quiet) -> None:
        if quiet.more:
            log.warning(
                "rejected %s: %d more %s in %.0f s, the last at %s: %s",
                key[0],
                quiet.more,
                sanitize(key[1]),
                self._period_s,
                sanitize(quiet.last_where),
                sanitize(quiet.last_detail),
            )


class Counters:
    """Named counters with a reason label: ``counters.inc("mqtt.rejected", "invalid_json")``."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()
        self.rejections = RejectionLog()

    def inc(self, name: str, reason: str = "", n: int = 1) -> None:
        """Add ``n`` to one counter."""
        self._counts[(name, reason)] += n

    def get(self, name: str, reason: str = "") -> int:
        """One counter's value (0 if never incremented)."""
        return self._counts[(name, reason)]

    def total(self, name: str) -> int:
        """The sum of a counter over all its reasons."""
        return sum(v for (n, _), v in self._counts.items() if n == name)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """``{name: {reason: count}}``."""
        out: dict[str, dict[str, int]] = {}
        for (name, reason), value in sorted(self._counts.items()):
            out.setdefault(name, {})[reason] = value
        return out

    def points(self, time: datetime, instance: str) -> list[Point]:
        """The counters as ``wardd_counters`` points (one per name and reason)."""
        return [
            Point(
                "wardd_counters",
                {"instance": instance, "name": name, "reason": reason or "-"},
                {"count": value},
                time,
            )
            for (name, reason), value in sorted(self._counts.items())
        ]


def preview(payload: bytes | str, limit: int = MAX_LOGGED_BYTES) -> str:
    """A payload fit for one log line: truncated, non-printables escaped."""
    raw = payload.encode("utf-8", "replace") if isinstance(payload, str) else payload
    text = raw[:limit].decode("utf-8", "backslashreplace")
    shown = text.encode("unicode_escape").decode("ascii")
    return shown + (f"... ({len(raw)} bytes)" if len(raw) > limit else "")


def sanitize(text: str, limit: int = 4 * MAX_LOGGED_BYTES) -> str:
    """Text from outside fit for one log line: non-printables escaped, truncated.

    A newline or a terminal escape in a field name or a topic must not start a forged
    log line or reach the operator's terminal.
    """
    shown = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text[:limit]
    )
    return shown + ("..." if len(text) > limit else "")


REDACTED = "[redacted]"


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every occurrence of each secret replaced by ``[redacted]``.

    For text that comes from outside and may echo what we sent (a database's error
    body quoting the request's headers) and for log lines, as a last line of defence.
    """
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """A log filter that removes the configured secrets from every record's message."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        # Longest first: a secret that contains another is removed whole.
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message (its arguments merged in) without the secrets."""
        if self._secrets:
            message = record.getMessage()
            cleaned = redact(message, self._secrets)
            if record.exc_info and record.exc_text is None and record.exc_info[1] is not None:
                # Tracebacks are formatted later: format now, so that they are cleaned too.
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text, self._secrets)
            if cleaned != message or record.args:
                record.msg, record.args = cleaned, None
        return True


def reject(
    counters: Counters, name: str, reason: str, detail: str, *, where: str, payload: bytes | str
) -> None:
    """Count one rejected input and log what and where, with a truncated payload (the
    first of its counter and reason in a period; the others in a summary, ``RejectionLog``)."""
    counters.inc(name, reason)
    counters.rejections.log(name, reason, detail, where=where, payload=payload)
