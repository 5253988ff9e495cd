"""The time series behind the bed page's charts and the tiles' trends: vital signs and
the delivered dose rate of each bed.

Two sources, one shape (``Sample``: seconds since the epoch, value):

- ``RecentHistory``, kept in memory by the page as a pipeline observer: the last
  ``RECENT_S`` of each bed, in buckets of ``BUCKET_S`` (each the mean of its samples).
  Always there, even with no database; empty again after a restart.
- ``InfluxHistory``: what the daemon wrote to InfluxDB (the ``vitals`` and ``dose``
  measurements, ``daemon.app.vitals_point`` and ``daemon.clinical.dose.dose_point``),
  read with InfluxQL through the v1 ``/query`` API, averaged per interval so that a
  whole course is a few hundred points. A database that does not answer raises
  ``HistoryUnavailableError``; the page then falls back to memory and says so, and does
  not ask again for ``RETRY_AFTER_S`` so that pages stay fast while it is away.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime

import aiohttp

from daemon.config import InfluxConfig
from daemon.errors import WarddError
from daemon.events import Metric
from daemon.links.tls import client_context
from daemon.metrics import redact

Sample = tuple[float, float]
"""(seconds since the epoch, value)."""

DELIVERED = "delivered_ug_per_day"
"""The delivered dose rate's series (the ``dose`` measurement's field of that name)."""
VITALS = tuple(str(metric) for metric in Metric)
"""The vital signs' series, named as the ``vitals`` measurement's fields."""

RECENT_S = 24 * 3600.0
"""How far back the memory goes: a day covers a shift's questions; the course is InfluxDB's."""
BUCKET_S = 120.0
"""One memory point per bed, series and this many seconds: 720 a day per series."""
QUERY_TIMEOUT_S = 2.0
"""The page waits no longer than this for the database (it then shows the memory)."""
RETRY_AFTER_S = 30.0
"""After a failed read, the database is left alone this long (real time)."""
MAX_ERROR_CHARS = 200


class HistoryUnavailableError(WarddError):
    """The database did not give the history; ``reason`` is a counter label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class RecentHistory:
    """Each bed's recent series in memory, bucketed; bounded whatever the input rate."""

    def __init__(self, keep_s: float = RECENT_S, bucket_s: float = BUCKET_S) -> None:
        self.bucket_s = bucket_s
        self._size = math.ceil(keep_s / bucket_s) + 1
        # (bed, series) -> buckets in time order: [bucket start, sum, count].
        self._series: dict[tuple[str, str], deque[list[float]]] = {}

    def add(self, bed: str, series: str, at: datetime, value: float) -> None:
        """One sample; a late one joins its bucket, or is left out when older than the memory."""
        if not math.isfinite(value):
            return
        t = at.timestamp()
        start = t - t % self.bucket_s
        buckets = self._series.get((bed, series))
        if buckets is None:
            buckets = self._series[(bed, series)] = deque(maxlen=self._size)
        if not buckets or start > buckets[-1][0]:
            buckets.append([start, value, 1.0])
            return
        # A late sample (a monitor that buffers): its bucket, searched from the newest.
        for i in range(len(buckets) - 1, -1, -1):
            bucket = buckets[i]
            if bucket[0] == start:
                bucket[1] += value
                bucket[2] += 1.0
                return
            if bucket[0] < start:
                if len(buckets) < self._size:
                    buckets.insert(i + 1, [start, value, 1.0])
                return

    def seed(self, bed: str, series: str, samples: Sequence[Sample]) -> int:
        """Bucket means read back from the database (``(bucket start, mean)``, time order),
        kept where they are older than anything seen live; how many were kept.

        After a restart the page's memory is empty: the tiles' trends and the fallback
        charts then start from what the daemon had written before.
        """
        buckets = self._series.get((bed, series))
        first_live = buckets[0][0] if buckets else math.inf
        older = [
            [start - start % self.bucket_s, value, 1.0] for start, value in samples if start < first_live
        ]
        if not older:
            return 0
        merged = deque([*older, *(buckets or ())][-self._size :], maxlen=self._size)
        self._series[(bed, series)] = merged
        return len(older)

    def series(self, bed: str, series: str, begin: float, end: float) -> list[Sample]:
        """The bucket means between ``begin`` and ``end`` (epoch seconds), at each bucket's middle."""
        buckets = self._series.get((bed, series), ())
        half = self.bucket_s / 2
        return [
            (start + half, total / count) for start, total, count in buckets if begin <= start + half <= end
        ]

    def resampled(self, bed: str, series: str, begin: float, end: float, step_s: float) -> list[Sample]:
        """``series`` with the means of ``step_s`` intervals (at least a bucket), as the database gives them."""
        if step_s <= self.bucket_s:
            return self.series(bed, series, begin, end)
        return resample(self.series(bed, series, begin, end), begin, step_s)

    def oldest(self, bed: str) -> float | None:
        """When the bed's memory begins (epoch seconds), if it holds anything."""
        starts = [buckets[0][0] for (b, _), buckets in self._series.items() if b == bed and buckets]
        return min(starts) if starts else None


def resample(samples: Sequence[Sample], begin: float, step_s: float) -> list[Sample]:
    """The mean of each ``step_s`` interval from ``begin`` that holds samples, at its middle."""
    sums: dict[int, list[float]] = {}
    for at, value in samples:
        slot = sums.setdefault(int((at - begin) // step_s), [0.0, 0.0])
        slot[0] += value
        slot[1] += 1
    return [(begin + (i + 0.5) * step_s, total / n) for i, (total, n) in sorted(sums.items())]


def _quoted(text: str) -> str:
    # InfluxQL string literal: the ids are checked by daemon.ids already; escaping keeps it safe anyway.
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def influxql(  # noqa: PLR0917 - the query's parts, in the order the query names them
    measurement: str, fields: Sequence[str], ward: str, bed: str, begin: float, end: float, step_s: int
) -> str:
    """One bed's ``fields`` of ``measurement``, the mean of each ``step_s`` interval."""
    columns = ", ".join(f'mean("{name}") AS "{name}"' for name in fields)
    # Names are the daemon's own constants; the tag values are checked ids, and quoted.
    where = f'"ward" = {_quoted(ward)} AND "bed" = {_quoted(bed)}'
    span = f"time >= {int(begin)}s AND time <= {math.ceil(end)}s"
    return (
        f'SELECT {columns} FROM "{measurement}" WHERE {where} AND {span} GROUP BY time({step_s}s) fill(none)'  # noqa: S608
    )


def parse_results(data: object) -> list[dict[str, list[Sample]]]:
    """InfluxDB's ``/query`` answer (``epoch=s``) as one ``{field: samples}`` per statement.

    Raises ``HistoryUnavailableError("influx_error", ...)`` with the server's words for
    an error answer or a shape it does not know.
    """
    if not isinstance(data, Mapping):
        raise HistoryUnavailableError("influx_error", "the answer is not a JSON object")
    if isinstance(data.get("error"), str):
        raise HistoryUnavailableError("influx_error", str(data["error"])[:MAX_ERROR_CHARS])
    results = data.get("results")
    if not isinstance(results, list):
        raise HistoryUnavailableError("influx_error", "the answer has no results")
    out: list[dict[str, list[Sample]]] = []
    for result in results:
        if not isinstance(result, Mapping):
            raise HistoryUnavailableError("influx_error", "a result is not an object")
        if isinstance(result.get("error"), str):
            raise HistoryUnavailableError("influx_error", str(result["error"])[:MAX_ERROR_CHARS])
        found: dict[str, list[Sample]] = {}
        for series in result.get("series") or ():
            columns = series.get("columns") if isinstance(series, Mapping) else None
            rows = series.get("values") if isinstance(series, Mapping) else None
            if not isinstance(columns, list) or not isinstance(rows, list | None):
                raise HistoryUnavailableError("influx_error", "a series is not columns and values")
            for row in rows or ():
                if not isinstance(row, list) or not row or not _number(row[0]):
                    raise HistoryUnavailableError("influx_error", "a row is not a time and values")
                for name, value in zip(columns[1:], row[1:], strict=False):
                    if _number(value):
                        found.setdefault(str(name), []).append((float(row[0]), float(value)))
        out.append(found)
    return out


def _number(value: object) -> bool:
    # JSON numbers only: not booleans, not the NaN or Infinity Python's parser lets through.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class InfluxHistory:
    """Reads one bed's series back from InfluxDB 1.x (``/query``, InfluxQL)."""

    def __init__(self, config: InfluxConfig, password: str | None) -> None:
        self._config = config
        self._url = f"{config.url}/query"
        self._auth = aiohttp.BasicAuth(config.username, password or "") if config.username else None
        self._secrets = tuple(s for s in (password or "", self._auth.encode() if self._auth else "") if s)
        self._ssl = client_context(config.tls, "influx") if config.url.startswith("https://") else None
        self._session: aiohttp.ClientSession | None = None
        self._failed_at: float | None = None

    @property
    def resting(self) -> bool:
        """Whether a recent failure keeps the database alone for now."""
        return self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_AFTER_S

    async def read(self, statements: Sequence[str]) -> list[dict[str, list[Sample]]]:
        """The answers to ``statements`` (``influxql``), one mapping per statement.

        Raises ``HistoryUnavailableError`` (reason ``influx_unavailable``, ``influx_error``
        or ``influx_resting``) when the database does not give them.
        """
        if self.resting:
            raise HistoryUnavailableError("influx_resting", "the database failed moments ago")
        try:
            data = await self._query("; ".join(statements))
            results = parse_results(data)
        except HistoryUnavailableError:
            self._failed_at = time.monotonic()
            raise
        self._failed_at = None
        if len(results) != len(statements):
            raise HistoryUnavailableError(
                "influx_error", f"{len(results)} results for {len(statements)} queries"
            )
        return results

    async def _query(self, text: str) -> object:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl) if self._ssl is not None else None
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=min(QUERY_TIMEOUT_S, self._config.timeout_s)),
                auth=self._auth,
                connector=connector,
            )
        params = {"db": self._config.database, "q": text, "epoch": "s"}
        if self._config.retention_policy:
            params["rp"] = self._config.retention_policy
        try:
            async with self._session.get(self._url, params=params, allow_redirects=False) as response:
                if response.status != 200:
                    body = redact(
                        (await response.content.read(4096)).decode("utf-8", "replace"), self._secrets
                    )
                    raise HistoryUnavailableError(
                        "influx_unavailable" if response.status >= 500 else "influx_error",
                        f"HTTP {response.status}: {body.strip()[:MAX_ERROR_CHARS]}",
                    )
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            detail = redact(f"{type(exc).__name__}: {exc}", self._secrets)[:MAX_ERROR_CHARS]
            raise HistoryUnavailableError("influx_unavailable", detail) from exc

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def step_for(begin: float, end: float, points: int, floor_s: float) -> int:
    """Whole seconds per interval so that ``begin``..``end`` holds about ``points`` of them."""
    return max(int(floor_s), math.ceil((end - begin) / max(points, 1)))


TREND_S = 6 * 3600.0
"""A tile's trend covers this much: the hours a nurse looks back on at a handover."""
TREND_POINTS = 24
"""Points per trend (15 min each): a small line, and a small message at every ward update."""


def trend(recent: RecentHistory, bed: str, series: str, now: datetime) -> list[float | None]:
    """``TREND_POINTS`` means over the last ``TREND_S``, oldest first; ``None`` where nothing came."""
    end = now.timestamp()
    begin = end - TREND_S
    width = TREND_S / TREND_POINTS
    sums = [0.0] * TREND_POINTS
    counts = [0] * TREND_POINTS
    for at, value in recent.series(bed, series, begin, end):
        slot = min(int((at - begin) / width), TREND_POINTS - 1)
        sums[slot] += value
        counts[slot] += 1
    return [round(total / n, 1) if n else None for total, n in zip(sums, counts, strict=True)]
