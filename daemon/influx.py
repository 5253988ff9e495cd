"""Time-series storage: points from the store's outbox to InfluxDB (v1 or v2 API).

Nothing is lost while the database is away: points wait in the store's
``point_outbox`` (durable, see ``daemon.store``) and are sent, oldest first, once
writes succeed again. A point the database refuses for good is isolated from its
batch (the good ones are stored) and kept in ``dead_letters`` with the reason.
With ``api = "none"`` points are appended as line protocol to a file (the demo's
"keep points in a local folder").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from daemon.clock import Clock
from daemon.config import InfluxConfig
from daemon.errors import SinkError
from daemon.events import Health
from daemon.metrics import Counters
from daemon.points import Point
from daemon.store import StoreWriter
from daemon.timefmt import iso

log = logging.getLogger(__name__)

OnHealth = Callable[[Health, str], Awaitable[None]]


class LineWriter(Protocol):
    """Writes a batch of line-protocol lines.

    Guarantees: raises ``SinkError`` (with ``retryable``) on failure, else the whole
    batch is stored; ``close`` is awaited only after the last ``write``.
    """

    async def write(self, lines: list[str]) -> None:
        """Store one batch."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def _status_error(status: int, body: str, retry_after: str | None) -> SinkError:
    retryable = status >= 500 or status in (408, 429)
    after = float(retry_after) if retry_after and retry_after.isdigit() else None
    return SinkError(f"HTTP {status}: {body[:300]}", retryable=retryable, retry_after_s=after)


class V1Writer:
    """InfluxDB 1.x ``/write`` with database, retention policy and optional credentials."""

    def __init__(self, config: InfluxConfig, password: str | None) -> None:
        self._url = f"{config.url}/write"
        self._params = {"db": config.database, "precision": "ns"}
        if config.retention_policy:
            self._params["rp"] = config.retention_policy
        self._auth = aiohttp.BasicAuth(config.username, password or "") if config.username else None
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def write(self, lines: list[str]) -> None:
        """POST the batch; 204 means stored."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, auth=self._auth)
        body = ("\n".join(lines) + "\n").encode()
        try:
            async with self._session.post(self._url, params=self._params, data=body) as resp:
                if resp.status != 204:
                    raise _status_error(resp.status, await resp.text(), resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SinkError(f"{type(exc).__name__}: {exc}", retryable=True) from exc

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()


class V2Writer:
    """The InfluxDB v2 write API through influxdb-client's async client."""

    def __init__(self, config: InfluxConfig, token: str | None) -> None:
        self._config = config
        self._token = token or ""
        self._client: Any = None

    async def write(self, lines: list[str]) -> None:
        """Write the batch with nanosecond precision."""
        from influxdb_client.client.exceptions import InfluxDBError  # noqa: PLC0415 -- heavy import
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync  # noqa: PLC0415

        if self._client is None:
            self._client = InfluxDBClientAsync(
                url=self._config.url,
                token=self._token,
                org=self._config.org or "-",
                timeout=int(self._config.timeout_s * 1000),
            )
        client = self._client
        try:
            await client.write_api().write(
                bucket=self._config.bucket, org=self._config.org or "-", record="\n".join(lines)
            )
        except InfluxDBError as exc:
            response = exc.response
            status = int(getattr(response, "status", 0) or 0)
            if status:
                headers = getattr(response, "headers", {}) or {}
                raise _status_error(status, str(exc.message), headers.get("Retry-After")) from exc
            raise SinkError(str(exc), retryable=True) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SinkError(f"{type(exc).__name__}: {exc}", retryable=True) from exc

    async def close(self) -> None:
        """Close the client."""
        if self._client is not None:
            await self._client.close()


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


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What ``write_isolating`` did with a batch: lines stored, and lines refused with the reason."""

    stored: int
    refused: list[tuple[int, str]]  # (index in the batch, the database's reason)


async def write_isolating(writer: LineWriter, lines: Sequence[str]) -> WriteOutcome:
    """Write a batch; when the database refuses it for good, split it to store the good lines.

    A retryable failure raises ``SinkError`` (the caller keeps the batch and retries;
    re-sending lines already stored is harmless: same series and time overwrite).
    """
    refused: list[tuple[int, str]] = []

    async def attempt(start: int, part: Sequence[str]) -> int:
        try:
            await writer.write(list(part))
        except SinkError as exc:
            if exc.retryable:
                raise
            if len(part) == 1:
                refused.append((start, str(exc)))
                return 0
            half = len(part) // 2
            return await attempt(start, part[:half]) + await attempt(start + half, part[half:])
        return len(part)

    stored = await attempt(0, lines)
    return WriteOutcome(stored, refused)


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
        writer: LineWriter | None,
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
        self.flushed = asyncio.Event()  # set after each send cycle, for tests and shutdown

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
        if self._staged >= self._config.batch_size:
            self._staged = 0
            self._store.after_commit(self._wake.set)

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
                rows = await self._store.call(
                    self._store.store.outbox, self._sent_id, self._config.batch_size
                )
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
        if self._writer is not None:
            await self._writer.close()

    async def _send(self, rows: list[tuple[int, str]]) -> bool:
        if self._writer is None:
            return True
        lines = [line for _, line in rows]
        try:
            outcome = await write_isolating(self._writer, lines)
        except SinkError as exc:
            self._counters.inc("influx.retries", exc.kind if hasattr(exc, "kind") else "unavailable")
            await self._set_degraded(f"storage unavailable: {exc}")
            if exc.retry_after_s is not None:
                self._backoff_s = min(self.RETRY_MAX_S, max(self.RETRY_MIN_S, exc.retry_after_s))
            else:
                self._backoff_s = min(self.RETRY_MAX_S, self._backoff_s * 2)
            return False
        refused = dict(outcome.refused)
        changes = self._store.stage()
        now = iso(self._clock.now())
        for index, (row_id, line) in enumerate(rows):
            reason = refused.get(index)
            if reason is None:
                changes.points_done.append(row_id)
            else:
                changes.dead_letters.append((row_id, now, line, reason[:500]))
                log.error(
                    "database refused a point for good, kept in dead_letters: %s: %s", reason, line[:200]
                )
            self._outbox_bytes -= len(line)
        self._sent_id = rows[-1][0]
        self._counters.inc("influx.written", "", outcome.stored)
        if refused:
            self._counters.inc("influx.dead_lettered", "refused", len(refused))
        self._backoff_s = self.RETRY_MIN_S
        await self._set_healthy()
        return True

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
