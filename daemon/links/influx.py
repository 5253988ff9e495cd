"""Time-series storage: points from the store's outbox to InfluxDB (v1 or v2 API).

Nothing is lost while the database is away: points wait in the store's
``point_outbox`` (durable, see ``daemon.links.store``) and are sent, oldest first, once
writes succeed again. A point the database refuses for good is isolated from its
batch (the good ones are stored) and kept in ``dead_letters`` with the reason.
With ``api = "none"`` points are appended as line protocol to a file (the demo's
"keep points in a local folder").

The writers classify every answer (``SinkError.kind``: refused, too_large,
unauthorized, not_found, throttled, unavailable, unparseable), and
``write_isolating`` splits a refused batch until only its bad lines are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from daemon.clock import Clock
from daemon.config import InfluxConfig, TlsConfig
from daemon.errors import SinkError, SinkErrorKind
from daemon.events import Health, OnHealth
from daemon.links.store import StoreWriter
from daemon.links.tls import client_context
from daemon.links.tls import describe as tls_reason
from daemon.metrics import Counters, redact
from daemon.points import Point
from daemon.timefmt import iso

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)


class LineWriter(Protocol):
    """Writes a batch of line-protocol lines.

    Guarantees: raises ``SinkError`` (with ``retryable`` and ``kind``) on failure, else
    the whole batch is stored; ``close`` is awaited only after the last ``write``.
    """

    async def write(self, lines: list[str]) -> None:
        """Store one batch."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


# Telegraf's influxdb_v2 output caps a database's Retry-After at ten minutes.
MAX_RETRY_AFTER_S = 600.0
# Enough of an error answer to hold the server's reason; the rest is not read.
_MAX_ERROR_BODY_BYTES = 64 * 1024
# Length of a reason kept in errors, logs and refused lines.
REASON_MAX_CHARS = 300


def printable(text: str, max_chars: int = REASON_MAX_CHARS) -> str:
    """``text`` safe to log and store: control characters escaped, cut to ``max_chars``."""
    out = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return out if len(out) <= max_chars else out[: max_chars - 1] + "…"


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay in seconds or HTTP-date).

    ``None`` when absent or unreadable; never negative; capped at ``MAX_RETRY_AFTER_S``.
    """
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000" means UTC with no claim about local time
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _error_reason(body: bytes, headers: Mapping[str, str]) -> str:
    """The server's own words: influxd's ``{"error": ...}``, InfluxDB 2's ``{"message": ...}``, or the text."""
    text = body.decode("utf-8", errors="replace").strip()
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        if isinstance(data, dict):
            for key in ("error", "message"):
                if isinstance(data.get(key), str):
                    return str(data[key])
    return text or headers.get("X-Influxdb-Error", "") or headers.get("X-Influx-Error", "")


def classify_status(status: int, reason: str, retry_after: str | None, now: datetime) -> SinkError | None:
    """The error for an HTTP answer to a write, ``None`` for success (any 2xx).

    As Telegraf's InfluxDB outputs do: 4xx is the client's fault and permanent,
    except 408 (timeout) and 429 (throttled); 5xx and anything else is retryable.
    ``Retry-After`` is honoured on every retryable answer (503 often carries one).
    """
    if 200 <= status < 300:
        return None
    message = f"HTTP {status}: {printable(reason)}"
    if status == 429:
        kind, retryable = SinkErrorKind.THROTTLED, True
    elif status == 408 or not 400 <= status < 500:
        kind, retryable = SinkErrorKind.UNAVAILABLE, True
    elif status == 413:
        kind, retryable = SinkErrorKind.TOO_LARGE, False
    elif status in (401, 403):
        kind, retryable = SinkErrorKind.UNAUTHORIZED, False
    elif status == 404:
        kind, retryable = SinkErrorKind.NOT_FOUND, False
    else:
        kind, retryable = SinkErrorKind.REFUSED, False
    after = parse_retry_after(retry_after, now) if retryable else None
    return SinkError(message, retryable=retryable, retry_after_s=after, kind=kind)


class _HttpWriter:
    """POSTs a batch of lines and classifies the answer; the subclasses say where and how."""

    def __init__(
        self,
        url: str,
        params: Mapping[str, str],
        headers: Mapping[str, str],
        auth: aiohttp.BasicAuth | None,
        timeout_s: float,
        *,
        tls: TlsConfig | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self._url = url
        # What the database must never be able to make us repeat: a server may echo the
        # request's headers in its error body, which goes to the log, the store and alerts.
        self._secrets = tuple(s for s in secrets if s)
        self._params = dict(params)
        self._headers = {"Content-Type": "text/plain; charset=utf-8", **headers}
        self._auth = auth
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        # https:// only (the config refuses TLS settings with http://); built at start-up,
        # so that an unusable ca_file stops the daemon with its place in the config.
        self._ssl = client_context(tls or TlsConfig(), "influx") if url.startswith("https://") else None

    async def write(self, lines: list[str]) -> None:
        """Store one batch, or raise ``SinkError`` with its ``kind`` and ``retryable``."""
        # Imported here, not with the module: only a writer over HTTP needs it, and a
        # daemon that spools its lines to files never loads it (12 MiB, a fifth of its
        # start-up imports).
        import aiohttp  # noqa: PLC0415

        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl) if self._ssl is not None else None
            timeout = aiohttp.ClientTimeout(total=self._timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout, auth=self._auth, connector=connector)
        body = ("\n".join(lines) + "\n").encode()
        try:
            # No redirects: a write that lands elsewhere is a wrong URL, not a success.
            async with self._session.post(
                self._url, params=self._params, headers=self._headers, data=body, allow_redirects=False
            ) as resp:
                if 200 <= resp.status < 300:
                    return
                try:
                    reason = redact(
                        _error_reason(await resp.content.read(_MAX_ERROR_BODY_BYTES), resp.headers),
                        self._secrets,
                    )
                except aiohttp.ClientPayloadError as exc:
                    # The status line and headers were read: they decide, the body only explains.
                    reason = f"(error body unreadable: {exc})"
                error = classify_status(
                    resp.status, reason, resp.headers.get("Retry-After"), datetime.now(UTC)
                )
        except aiohttp.ClientResponseError as exc:
            # We never call raise_for_status, so this comes from aiohttp's parser: the
            # status line or headers were not valid HTTP (influxd 1.x echoes a refused
            # line, NUL and all, in a header). The database is up; the batch may be
            # what provoked it, so it is not "unavailable".
            raise SinkError(
                f"unparseable answer: {redact(printable(str(exc)), self._secrets)}",
                retryable=False,
                kind=SinkErrorKind.UNPARSEABLE,
            ) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # Refused, reset or dropped connections (ServerDisconnectedError included) and
            # timeouts: the database is away, or was while it answered. A TLS failure
            # too (it may be fixed on the server's side), said in plain words.
            kind = SinkErrorKind.TIMEOUT if isinstance(exc, TimeoutError) else SinkErrorKind.UNAVAILABLE
            detail = tls_reason(exc) or redact(f"{type(exc).__name__}: {printable(str(exc))}", self._secrets)
            raise SinkError(detail, retryable=True, kind=kind) from exc
        if error is not None:
            raise error

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()


class V1Writer(_HttpWriter):
    """InfluxDB 1.x ``/write`` with database, retention policy and optional credentials."""

    def __init__(self, config: InfluxConfig, password: str | None) -> None:
        params = {"db": config.database, "precision": "ns"}
        if config.retention_policy:
            params["rp"] = config.retention_policy
        import aiohttp  # noqa: PLC0415 -- see _HttpWriter.write

        auth = aiohttp.BasicAuth(config.username, password or "") if config.username else None
        secrets = (password or "", auth.encode() if auth else "")
        super().__init__(
            f"{config.url}/write", params, {}, auth, config.timeout_s, tls=config.tls, secrets=secrets
        )


class V2Writer(_HttpWriter):
    """The InfluxDB v2 write API (``/api/v2/write``, token auth), as victoria-metrics also serves it."""

    def __init__(self, config: InfluxConfig, token: str | None) -> None:
        params = {"org": config.org or "-", "bucket": config.bucket, "precision": "ns"}
        headers = {"Authorization": f"Token {token}"} if token else {}
        super().__init__(
            f"{config.url}/api/v2/write",
            params,
            headers,
            None,
            config.timeout_s,
            tls=config.tls,
            secrets=(token or "",),
        )


# Refusals that can come from some lines of a batch and not others: splitting the
# batch finds them. Unauthorized and not-found concern every line alike.
_SPLITTABLE = frozenset({SinkErrorKind.REFUSED, SinkErrorKind.TOO_LARGE, SinkErrorKind.UNPARSEABLE})


@dataclass(frozen=True, slots=True)
class RefusedLine:
    """One line the database refused for good: ``kind`` for counting, ``reason`` in its words."""

    line: str
    kind: SinkErrorKind
    reason: str  # printable, at most REASON_MAX_CHARS


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What became of a batch: ``stored`` lines are in the database, ``refused`` never will be."""

    stored: int
    refused: tuple[RefusedLine, ...]


class WriteInterruptedError(SinkError):
    """``write_isolating`` stopped before every line of its batch was stored or refused.

    ``kind``, ``retryable`` and ``retry_after_s`` are those of the failure that
    stopped it. ``outcome`` holds what was settled before it: that many lines
    stored, those lines refused. ``unsent`` are the remaining lines, in batch order:
    exactly what to retry (or to hold, when not retryable). Re-sending a stored
    line is harmless too: InfluxDB and victoria-metrics keep one value per series,
    field and timestamp, so the same line overwrites itself.
    """

    def __init__(self, cause: SinkError, outcome: WriteOutcome, unsent: Sequence[str]) -> None:
        self.outcome = outcome
        self.unsent = tuple(unsent)
        super().__init__(
            f"{len(self.unsent)} line(s) not written ({outcome.stored} stored, "
            f"{len(outcome.refused)} refused before): {cause}",
            retryable=cause.retryable,
            retry_after_s=cause.retry_after_s,
            kind=cause.kind,
        )


async def write_isolating(writer: LineWriter, lines: Sequence[str]) -> WriteOutcome:
    """Write ``lines``, isolating those the database refuses so the others are stored.

    When the database refuses the batch (``refused``, ``too_large``) or answers
    unparseably, the batch is split in halves, and each half is written, and split
    again while refused, down to single lines, which are then refused for good with
    the server's reason. With ``k`` bad lines among ``n`` that is about
    ``2·k·log2(n/k)`` requests, one at a time, in batch order. influxd 1.x may store
    a refused batch's good lines already ("partial write"); writing them again in a
    half overwrites them with themselves.

    If every line of a batch of two or more is refused with an unparseable answer,
    the server rather than the data is at fault: that raises a retryable
    ``WriteInterruptedError`` (kind ``unparseable``, every line unsent) instead.

    Any other failure (unavailable, throttled, unauthorized, not found) stops the
    work and raises ``WriteInterruptedError`` with that failure's ``retryable``,
    ``retry_after_s`` and ``kind``, what was settled so far, and the unsent lines.
    """
    stored = 0
    refused: list[RefusedLine] = []
    # Chunks still to write, the next one last, so halves go out in batch order.
    todo: list[list[str]] = [list(lines)] if lines else []
    while todo:
        chunk = todo.pop()
        try:
            await writer.write(chunk)
        except SinkError as exc:
            if exc.kind not in _SPLITTABLE:
                unsent = [line for pending in (chunk, *reversed(todo)) for line in pending]
                raise WriteInterruptedError(exc, WriteOutcome(stored, tuple(refused)), unsent) from exc
            if len(chunk) > 1:
                middle = len(chunk) // 2
                todo += [chunk[middle:], chunk[:middle]]
            else:
                refused.append(RefusedLine(chunk[0], exc.kind, printable(str(exc))))
        else:
            stored += len(chunk)
    if len(lines) > 1 and stored == 0 and all(r.kind is SinkErrorKind.UNPARSEABLE for r in refused):
        cause = SinkError(
            f"every one of {len(lines)} lines drew an unparseable answer: the server is at fault, "
            f"last: {refused[-1].reason}",
            retryable=True,
            kind=SinkErrorKind.UNPARSEABLE,
        )
        raise WriteInterruptedError(cause, WriteOutcome(0, ()), lines)
    return WriteOutcome(stored, tuple(refused))


class LineFileWriter:
    """``api = "none"``: points appended as line protocol to one file (the demo's local store)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "points.lp"

    async def write(self, lines: list[str]) -> None:
        """Append the batch and make it durable (the outbox forgets it next)."""
        try:
            await asyncio.to_thread(self._append, lines)
        except OSError as exc:
            raise SinkError(f"{self.path}: {exc}", retryable=True) from exc

    def _append(self, lines: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
            out.flush()
            os.fsync(out.fileno())

    async def close(self) -> None:
        """Nothing to release."""


MIN_BATCH_SIZE = 10
"""The smallest batch the outbox shrinks to after timeouts."""
SUSPECT_ROUNDS = 3
"""Unparseable rounds in a row after which the outbox is sent one line at a time."""


class InfluxSink:
    """Implements ``daemon.points.PointSink``: points go to the store's outbox, then the database.

    Guarantees: ``put`` never blocks or raises; a point is staged in the outbox in the
    same store transaction as the effects of the input that made it, and leaves the
    outbox only once the database has it or has refused it for good (then it is kept
    in ``dead_letters`` with the reason, counted under ``influx.dead_lettered``); points
    are sent oldest first; while the database is away nothing is dropped unless the
    outbox passes ``spool_max_mb`` (counted under ``influx.dropped``).
    """

    RETRY_MIN_S = 0.5
    RETRY_MAX_S = 30.0

    def __init__(
        self,
        config: InfluxConfig,
        writer: LineWriter,
        store: StoreWriter,
        *,
        counters: Counters,
        clock: Clock,
        on_health: OnHealth | None = None,
    ) -> None:
        self._config = config
        self._writer = writer
        self._store = store
        self._counters = counters
        self._clock = clock
        self._on_health = on_health
        self._wake = asyncio.Event()
        self._staged = 0
        self._sent_id = 0  # rows up to here are written (or being forgotten) this run
        self._outbox_bytes = store.store.outbox_stats()[1]
        self._max_bytes = config.spool_max_mb * 1024 * 1024
        self._degraded = False
        self._backoff_s = self.RETRY_MIN_S
        self._suspect_rounds = 0
        # Halved after a timeout, grown by a quarter after a success: a database too busy for
        # a large batch in timeout_s still takes smaller ones, instead of none at all.
        self._batch_size = config.batch_size
        self.flushed = asyncio.Event()  # set after each send cycle, for tests and shutdown

    @property
    def outbox_bytes(self) -> int:
        """Bytes of points waiting in the store's outbox (``spool_max_mb`` bounds them)."""
        return self._outbox_bytes

    @property
    def degraded(self) -> bool:
        """True while the database is unavailable."""
        return self._degraded

    def put(self, point: Point) -> None:
        """Stage one point in the outbox."""
        try:
            line = point.to_line()
        except (ValueError, TypeError) as exc:
            self._counters.inc("influx.dropped", "unencodable")
            log.warning("point not encodable, dropped: %s (%r)", exc, point)
            return
        if self._outbox_bytes + len(line) > self._max_bytes:
            self._counters.inc("influx.dropped", "spool_full")
            log.error("point outbox full (%d MB): point dropped", self._config.spool_max_mb)
            return
        self._outbox_bytes += len(line)
        self._store.stage().points.append((self._store.store.next_id("point_outbox"), line))
        self._counters.inc("influx.accepted")
        self._staged += 1
        if self._staged >= self._batch_size:
            self._staged = 0
            self._store.after_commit(self._wake.set, urgent=False)

    async def run(self) -> None:
        """Send the outbox every ``flush_interval_s`` or when a batch fills, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.flush_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            if not await self.flush():
                await asyncio.sleep(self._backoff_s)

    async def flush(self) -> bool:
        """Send what the outbox holds (committed), oldest first; ``False`` if the database is away."""
        try:
            while True:
                rows = await self._store.call(self._store.store.outbox, self._sent_id, self._batch_size)
                if not rows:
                    return True
                if not await self._send(rows):
                    return False
        finally:
            self.flushed.set()
            self.flushed = asyncio.Event()

    async def close(self) -> None:
        """A last send under ``timeout_s``; what is left stays in the outbox for the next run."""
        await self._store.flush()
        try:
            async with asyncio.timeout(self._config.timeout_s):
                await self.flush()
        except TimeoutError:
            log.warning("storage flush timed out at shutdown; the rest stays in the outbox")
        await self._store.flush()
        await self._writer.close()

    async def _send(self, rows: list[tuple[int, str]]) -> bool:
        if self._suspect_rounds >= SUSPECT_ROUNDS:
            # Unparseable answers to whole batches, again and again: one line at a time
            # tells a broken server (every line fails, nothing is refused: it stays
            # retryable) from one line the server chokes on (refused alone).
            rows = rows[:1]
        lines = [line for _, line in rows]
        try:
            outcome = await write_isolating(self._writer, lines)
        except WriteInterruptedError as exc:
            settled = len(lines) - len(exc.unsent)
            self._settle(rows[:settled], exc.outcome)
            self._counters.inc("influx.retries", str(exc.kind))
            self._suspect_rounds = self._suspect_rounds + 1 if exc.kind is SinkErrorKind.UNPARSEABLE else 0
            if exc.kind is SinkErrorKind.TIMEOUT:
                self._batch_size = max(MIN_BATCH_SIZE, self._batch_size // 2)
            await self._set_degraded(f"storage unavailable: {exc}")
            if exc.retry_after_s is not None:
                self._backoff_s = min(self.RETRY_MAX_S, max(self.RETRY_MIN_S, exc.retry_after_s))
            else:
                self._backoff_s = min(self.RETRY_MAX_S, self._backoff_s * 2)
            return False
        self._settle(rows, outcome)
        self._suspect_rounds = 0
        self._batch_size = min(
            self._config.batch_size, self._batch_size + max(MIN_BATCH_SIZE, self._batch_size // 4)
        )
        self._backoff_s = self.RETRY_MIN_S
        await self._set_healthy()
        return True

    def _settle(self, rows: Sequence[tuple[int, str]], outcome: WriteOutcome) -> None:
        """Forget the rows the database has, dead-letter those it refused (in the next commit)."""
        if not rows:
            return
        refused: dict[str, list[RefusedLine]] = {}
        for refusal in outcome.refused:
            refused.setdefault(refusal.line, []).append(refusal)
        changes = self._store.stage()
        now = iso(self._clock.now())
        for row_id, line in rows:
            pending = refused.get(line)
            if pending:
                why = pending.pop()
                changes.dead_letters.append((row_id, now, line, f"{why.kind}: {why.reason}"))
                log.error(
                    "database refused a point for good (%s), kept in dead_letters: %s", why.reason, line[:200]
                )
                self._counters.inc("influx.dead_lettered", str(why.kind))
            else:
                changes.points_done.append(row_id)
            self._outbox_bytes -= len(line)
        self._sent_id = max(self._sent_id, rows[-1][0])
        self._counters.inc("influx.written", "", outcome.stored)

    async def _set_degraded(self, detail: str) -> None:
        if not self._degraded:
            self._degraded = True
            log.warning("%s; points wait in the store's outbox", detail)
            if self._on_health is not None:
                await self._on_health(Health.LOST, detail)

    async def _set_healthy(self) -> None:
        if self._degraded:
            self._degraded = False
            log.info("storage reachable again")
            if self._on_health is not None:
                await self._on_health(Health.CONNECTED, "")


def make_writer(config: InfluxConfig, secret: str | None, state_dir: Path) -> LineWriter:
    """The writer for ``config.api`` (``"none"``: line protocol in ``spool_dir``)."""
    if config.api == "v1":
        return V1Writer(config, secret)
    if config.api == "v2":
        return V2Writer(config, secret)
    return LineFileWriter(config.spool_dir or state_dir / "spool")
