"""The daemon's exception hierarchy. Each exception carries where it happened."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class WarddError(Exception):
    """Base of every error the daemon raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a configuration file: where (``beds[1].weight_kg``) and why."""

    location: str
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}" if self.location else self.reason


class ConfigError(WarddError):
    """A configuration is invalid; ``issues`` lists every problem at once."""

    def __init__(self, source: str, issues: Sequence[ConfigIssue]) -> None:
        self.source = source
        self.issues = tuple(issues)
        lines = "\n".join(f"  {issue}" for issue in self.issues)
        super().__init__(f"{source}: {len(self.issues)} error(s)\n{lines}")


class ListenError(WarddError):
    """A server of the daemon (the health probes, the ward page) cannot take its address."""

    def __init__(self, what: str, options: str, host: str, port: int, exc: OSError) -> None:
        # A name that does not resolve has a negative errno (socket.gaierror): its own text.
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else str(exc)
        super().__init__(f"cannot serve {what} on {host}:{port} ({options}): {reason}")


class InputError(WarddError):
    """A message from a device or a person was rejected.

    ``reason`` is a short stable key used as a counter label (``invalid_json``,
    ``unknown_code``, ``bad_crc`` ...); ``where`` names the topic, port or file.
    """

    def __init__(self, reason: str, detail: str, where: str = "") -> None:
        self.reason = reason
        self.detail = detail
        self.where = where
        super().__init__(f"{where}: {reason}: {detail}" if where else f"{reason}: {detail}")


class FrameError(InputError):
    """A serial frame could not be parsed (bad CRC, garbage, wrong address ...)."""


class DeviceError(WarddError):
    """A device link failed (port closed, timeout); the source retries."""


class LinkDownError(WarddError):
    """The broker refused the connection, or it broke or went silent; the link backs off and connects again."""


class SinkErrorKind(StrEnum):
    """Why a sink could not write: a stable counter label, one per way of failing."""

    REFUSED = "refused"  # the database refused the data (400, 422, other 4xx): a retry fails again
    TOO_LARGE = "too_large"  # 413: the request was too large; smaller batches may pass
    UNAUTHORIZED = "unauthorized"  # 401, 403: credentials or permissions, not the data
    NOT_FOUND = "not_found"  # 404: no such database, bucket or URL, not the data
    THROTTLED = "throttled"  # 429: the database asks to slow down (see retry_after_s)
    UNAVAILABLE = "unavailable"  # 5xx, 408, connection refused or dropped
    TIMEOUT = "timeout"  # no answer in time: down, or too busy for a batch this size
    UNPARSEABLE = "unparseable"  # the answer was not valid HTTP: neither stored nor "down"


class SinkError(WarddError):
    """A sink could not write.

    ``retryable`` says whether trying the same request again may succeed, after
    ``retry_after_s`` when the database said so; ``kind`` says why, for counting.
    Without a ``kind``, a retryable error counts as unavailable, any other as refused.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
        kind: SinkErrorKind | None = None,
    ) -> None:
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        if kind is None:
            kind = SinkErrorKind.UNAVAILABLE if retryable else SinkErrorKind.REFUSED
        self.kind = kind
        super().__init__(message)
