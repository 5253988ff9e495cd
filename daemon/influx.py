"""Time-series storage: batched writes to InfluxDB (v1 or v2 API), spooled to disk when down.

Nothing is lost while the database is away: a batch that cannot be written goes to
a spool file, and spooled batches are sent, oldest first, once writes succeed again.
A batch the database refuses as malformed (HTTP 400) is not retried forever: it is
moved to ``spool/rejected/`` and counted. With ``api = "none"`` the spool folder is
the store (the demo's "keep points in a local folder").
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from daemon.clock import Clock
from daemon.config import InfluxConfig
from daemon.errors import SinkError
from daemon.events import Health
from daemon.metrics import Counters
from daemon.points import Point
from daemon.store import write_atomic

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


class Spool:
    """Batches on disk, one file each, written atomically, read back oldest first."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.rejected_dir = directory / "rejected"
        self._max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        existing = [int(p.stem) for p in directory.glob("*.lp") if p.stem.isdigit()]
        self._seq = itertools.count(max(existing, default=0) + 1)

    def files(self) -> list[Path]:
        """Spooled batches, oldest first."""
        return sorted(self.directory.glob("*.lp"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)

    def size_bytes(self) -> int:
        """The spool's total size."""
        return sum(p.stat().st_size for p in self.files())

    def add(self, lines: list[str]) -> bool:
        """Store one batch durably; ``False`` when the spool is full."""
        body = ("\n".join(lines) + "\n").encode()
        if self.size_bytes() + len(body) > self._max_bytes:
            return False
        path = self.directory / f"{next(self._seq):012d}.lp"
        write_atomic(path, body)
        return True

    @staticmethod
    def read(path: Path) -> list[str]:
        """The lines of one spooled batch."""
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line]

    def reject(self, path: Path) -> None:
        """Move a spooled batch the database refused aside, for a person to look at."""
        self.rejected_dir.mkdir(exist_ok=True)
        path.replace(self.rejected_dir / path.name)

    def keep_rejected(self, lines: list[str]) -> None:
        """Keep a refused batch that was never spooled aside, for a person to look at."""
        self.rejected_dir.mkdir(exist_ok=True)
        path = self.rejected_dir / f"{next(self._seq):012d}.lp"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class InfluxSink:
    """Implements ``daemon.points.PointSink``: batches points and writes them in the background.

    Guarantees: ``put`` never blocks or raises; every point is written, spooled, or
    counted under ``influx.dropped`` (only when the spool is full); ``close`` flushes
    what is buffered under a timeout and spools the rest.
    """

    def __init__(
        self,
        config: InfluxConfig,
        writer: LineWriter | None,
        spool: Spool,
        *,
        counters: Counters,
        clock: Clock,
        on_health: OnHealth | None = None,
    ) -> None:
        self._config = config
        self._writer = writer
        self._spool = spool
        self._counters = counters
        self._clock = clock
        self._on_health = on_health
        self._buffer: list[str] = []
        self._full = asyncio.Event()
        self._degraded = False
        self.flushed = asyncio.Event()  # set after each flush cycle, for tests and shutdown

    def put(self, point: Point) -> None:
        """Buffer one point."""
        try:
            self._buffer.append(point.to_line())
        except (ValueError, TypeError) as exc:
            self._counters.inc("influx.dropped", "unencodable")
            log.warning("point not encodable, dropped: %s (%r)", exc, point)
            return
        self._counters.inc("influx.accepted")
        if len(self._buffer) >= self._config.batch_size:
            self._full.set()

    async def run(self) -> None:
        """Flush every ``flush_interval_s`` or when a batch fills, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.flush_interval_s):
                    await self._full.wait()
            await self.flush()

    async def flush(self) -> None:
        """Write what is buffered, then spooled batches if the database answers."""
        self._full.clear()
        while self._buffer:
            batch = self._buffer[: self._config.batch_size]
            del self._buffer[: len(batch)]
            if not await self._write_or_spool(batch):
                break
        else:
            await self._drain_spool()
        # Whatever stayed in the buffer after a failure goes to disk too.
        if self._buffer:
            batch, self._buffer = self._buffer, []
            self._to_spool(batch)
        self.flushed.set()
        self.flushed = asyncio.Event()

    async def close(self) -> None:
        """Final flush under ``timeout_s``; anything not written is spooled, then close."""
        try:
            async with asyncio.timeout(self._config.timeout_s):
                await self.flush()
        except TimeoutError:
            log.warning("storage flush timed out at shutdown; spooling %d point(s)", len(self._buffer))
        if self._buffer:
            batch, self._buffer = self._buffer, []
            self._to_spool(batch)
        if self._writer is not None:
            await self._writer.close()

    async def _write_or_spool(self, batch: list[str]) -> bool:
        if self._writer is None:
            self._to_spool(batch)
            return True
        if self._spool.files():
            # Keep order on disk while older batches wait.
            self._to_spool(batch)
            return True
        try:
            await self._writer.write(batch)
        except SinkError as exc:
            if not exc.retryable:
                self._counters.inc("influx.rejected", "refused", len(batch))
                log.error("database refused a batch of %d point(s): %s", len(batch), exc)
                self._spool.keep_rejected(batch)
                return True
            self._to_spool(batch)
            await self._set_degraded(f"storage unavailable: {exc}")
            return False
        self._counters.inc("influx.written", "", len(batch))
        await self._set_healthy()
        return True

    def _to_spool(self, batch: list[str]) -> None:
        if self._spool.add(batch):
            self._counters.inc("influx.spooled", "", len(batch))
        else:
            self._counters.inc("influx.dropped", "spool_full", len(batch))
            log.error("spool full (%d MB): %d point(s) dropped", self._config.spool_max_mb, len(batch))

    async def _drain_spool(self) -> None:
        if self._writer is None:
            return
        for path in self._spool.files():
            lines = self._spool.read(path)
            try:
                await self._writer.write(lines)
            except SinkError as exc:
                if not exc.retryable:
                    self._counters.inc("influx.rejected", "refused", len(lines))
                    log.error("database refused spooled batch %s: %s", path.name, exc)
                    self._spool.reject(path)
                    continue
                await self._set_degraded(f"storage unavailable: {exc}")
                return
            path.unlink()
            self._counters.inc("influx.written", "", len(lines))
            self._counters.inc("influx.unspooled", "", len(lines))
        await self._set_healthy()

    async def _set_degraded(self, detail: str) -> None:
        if not self._degraded:
            self._degraded = True
            log.warning("%s; spooling to %s", detail, self._spool.directory)
            if self._on_health is not None:
                await self._on_health(Health.LOST, detail)

    async def _set_healthy(self) -> None:
        if self._degraded:
            self._degraded = False
            log.info("storage reachable again")
            if self._on_health is not None:
                await self._on_health(Health.CONNECTED, "")


def make_writer(config: InfluxConfig, secret: str | None) -> LineWriter | None:
    """The writer for ``config.api`` (``None`` for ``"none"``: the spool is the store)."""
    if config.api == "v1":
        return V1Writer(config, secret)
    if config.api == "v2":
        return V2Writer(config, secret)
    return None
