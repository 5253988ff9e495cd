"""The health probes over HTTP (``[health] port``): ``/healthz``, ``/readyz``, ``/metrics``.

What they answer is ``daemon.health``'s; this module only serves it. It is imported
when a port is set, and only then: aiohttp and prometheus-client are a fifth of a
daemon's start-up imports and about 13 MiB of its memory.

With ``daemon.workers > 1`` the port is the supervisor's (``WorkerProbes``): each
worker serves its own probes on a private socket, and the supervisor answers for the
daemon as a whole from what they say, as it already does to systemd.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from daemon.config import HealthConfig
from daemon.errors import ListenError
from daemon.health import Gauge, Histogram, Probes
from daemon.metrics import Counters

log = logging.getLogger("daemon.health")


_NOT_METRIC = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(counter: str) -> str:
    """A ``Counters`` name as a Prometheus metric name: ``mqtt.rejected`` → ``wardd_mqtt_rejected``."""
    return "wardd_" + _NOT_METRIC.sub("_", counter)


@dataclass(eq=False)  # the registry keys collectors by identity
class _Collector(Collector):
    counters: Counters
    gauges: Sequence[Gauge | Histogram]

    def collect(self) -> Iterator[Metric]:
        for name, reasons in self.counters.snapshot().items():
            family = CounterMetricFamily(
                metric_name(name), f"Counter {name} of the daemon, by reason", labels=["reason"]
            )
            for reason, count in reasons.items():
                family.add_metric([reason or "-"], count)
            yield family
        for gauge in self.gauges:
            metric: CounterMetricFamily | GaugeMetricFamily
            if isinstance(gauge, Histogram):
                yield _histogram(gauge)
                continue
            if gauge.counter:
                metric = CounterMetricFamily(gauge.name, gauge.help, labels=list(gauge.labels))
            else:
                metric = GaugeMetricFamily(gauge.name, gauge.help, labels=list(gauge.labels))
            for labels, value in gauge.samples.items():
                metric.add_metric(list(labels), value)
            yield metric


def _histogram(histogram: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(histogram.name, histogram.help, labels=[histogram.label])
    for value, (buckets, total) in histogram.buckets().items():
        family.add_metric([value], buckets, total)
    return family


def metrics_text(counters: Counters, gauges: Sequence[Gauge | Histogram]) -> bytes:
    """Every counter and gauge in the Prometheus text format."""
    return _rendered(_Collector(counters, gauges))


@dataclass(eq=False)
class _Families(Collector):
    families: Sequence[Metric]

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def _rendered(collector: Collector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)


_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # prometheus-client's, version included


class HealthServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` over plain HTTP (a pipeline service)."""

    name = "health.http"

    def __init__(
        self, settings: HealthConfig, probes: Probes, counters: Counters, *, private: str | None = None
    ) -> None:
        """``private``: a worker's, served on this abstract Unix socket for its supervisor
        (``WorkerProbes``) instead of ``settings``' address."""
        self._settings = settings
        self._probes = probes
        self._counters = counters
        self._private = private
        self.port: int | None = None  # the bound port, once serving
        self.serving = asyncio.Event()
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._app = app

    async def run(self) -> None:
        """Serve until cancelled."""
        runner = web.AppRunner(self._app, access_log=None)
        await runner.setup()
        try:
            if self._private is not None:
                await web.UnixSite(runner, self._private).start()
            else:
                await self._listen(runner)
            self.serving.set()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    async def _listen(self, runner: web.AppRunner) -> None:
        host, port = self._settings.host, self._settings.port or 0
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ListenError("the health probes", "health.host, health.port", host, port, exc) from exc
        server = site._server  # aiohttp exposes the bound port only here
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._settings.port
        log.info("health probes on http://%s:%s/healthz", host, self.port)

    async def _healthz(self, request: web.Request) -> web.Response:
        stalled_s = self._probes.stalled_s()
        live = stalled_s < self._settings.stall_after_s
        body = {"live": live, "stalled_s": round(stalled_s, 3), "stall_after_s": self._settings.stall_after_s}
        return web.json_response(body, status=200 if live else 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        checks = self._probes.readiness()
        body = {
            "ready": checks.ready,
            "recovered": checks.recovered,
            "broker_connected": checks.broker_connected,
            "store_writable": checks.store_writable,
        }
        return web.json_response(body, status=200 if checks.ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        text = metrics_text(self._counters, self._probes.gauges())
        return web.Response(body=text, headers={"Content-Type": _CONTENT_TYPE})


# --- a supervisor's probes (daemon.workers > 1) ---------------------------------------

WORKER_ANSWER_S = 2.0
"""How long the supervisor waits for a worker's answer to a probe: a worker that takes
longer counts as not answering (its event loop is held up)."""


def bind_probes(settings: HealthConfig) -> list[socket.socket]:
    """The supervisor's listening sockets for ``settings``, bound before any worker is
    forked: an address in use stops the daemon before anything starts (``ListenError``).

    One socket for every address the host resolves to, as one worker's ``TCPSite``
    binds them (``localhost``: ``127.0.0.1`` and ``::1``; an empty host: every
    interface of both families), so that the probes answer at the same addresses
    whatever ``daemon.workers`` says. With port 0 the addresses after the first take
    the port the first was given: one port to read from the log.
    """
    host, port = settings.host or None, settings.port or 0
    bound: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, resolved in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # Each family its own socket, as asyncio's create_server does.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            address = resolved
            if port == 0 and len(bound) > 1:
                address = (resolved[0], bound[0].getsockname()[1], *resolved[2:])
            sock.bind(address)
            sock.listen()
    except OSError as exc:
        for sock in bound:
            sock.close()
        raise ListenError("the health probes", "health.host, health.port", settings.host, port, exc) from exc
    return bound


def merged_metrics(texts: Mapping[str, str | None]) -> bytes:
    """The workers' metrics as one text: each sample labelled with its ``worker``, each
    family once, and ``wardd_worker_answering`` (0 for a worker whose text is ``None``)."""
    answering = GaugeMetricFamily(
        "wardd_worker_answering",
        "1 if the worker answered the supervisor's probe in time",
        labels=["worker"],
    )
    families: dict[str, Metric] = {}
    for worker, text in texts.items():
        answering.add_metric([worker], float(text is not None))
        for family in text_string_to_metric_families(text or ""):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type)
            merged.samples.extend(
                sample._replace(labels={**sample.labels, "worker": worker}) for sample in family.samples
            )
    return _rendered(_Families([answering, *families.values()]))


def read_histogram(text: str, name: str, label: str) -> dict[str, dict[str, float]]:
    """Histogram ``name`` from a /metrics text, by its ``label``: the cumulative counts by
    bound (``le``, ``+Inf`` included), ``count`` and ``sum``, each added up over the
    samples that share the label value (several workers' in a supervisor's text)."""
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            series = out.setdefault(sample.labels[label], {})
            key = sample.labels["le"] if sample.name.endswith("_bucket") else sample.name.rsplit("_", 1)[1]
            series[key] = series.get(key, 0.0) + sample.value
    return out


class WorkerProbes:
    """``/healthz``, ``/readyz`` and ``/metrics`` of a supervisor: one address for the whole
    daemon, each answer made of every worker's own (``HealthServer`` with ``private``).

    Alive and ready only when every worker says so within ``WORKER_ANSWER_S``; the
    bodies keep what each worker said, by partition. It runs its own event loop in a
    thread of the supervisor (``start``), started after the workers are forked.
    """

    def __init__(self, socks: Sequence[socket.socket], workers: Mapping[str, str]) -> None:
        """``socks``: from ``bind_probes``; ``workers``: each worker's socket, by partition."""
        self._socks = list(socks)
        self._workers = dict(workers)
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._thread = threading.Thread(target=self._main, name="wardd-probes", daemon=True)
        self._started = threading.Event()

    def start(self) -> None:
        """Serve in a thread of its own until ``stop``."""
        self._thread.start()
        self._started.wait()
        for sock in self._socks:
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
            log.info("health probes on http://%s:%s/healthz for %d workers", shown, port, len(self._workers))

    def stop(self) -> None:
        """Stop serving and wait for the thread (a second at most)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=1.0)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._sessions = {
            worker: aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path))
            for worker, path in self._workers.items()
        }
        try:
            for sock in self._socks:
                await web.SockSite(runner, sock).start()
            self._started.set()
            await self._stop.wait()
        finally:
            self._started.set()  # a failure to serve must not leave ``start`` waiting
            for session in self._sessions.values():
                await session.close()
            await runner.cleanup()

    async def _ask(self, worker: str, path: str) -> tuple[int, str] | None:
        """Worker ``worker``'s answer to ``path``, or ``None`` if none came in time."""
        try:
            async with asyncio.timeout(WORKER_ANSWER_S):
                async with self._sessions[worker].get(f"http://worker{path}") as reply:
                    return reply.status, await reply.text()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None

    async def _answers(self, path: str) -> dict[str, tuple[int, str] | None]:
        answers = await asyncio.gather(*(self._ask(worker, path) for worker in self._workers))
        return dict(zip(self._workers, answers, strict=True))

    async def _all(self, path: str, key: str) -> web.Response:
        """``/healthz`` or ``/readyz``: ``key`` holds only if it does at every worker."""
        said: dict[str, object] = {}
        holds = True
        for worker, answer in (await self._answers(path)).items():
            if answer is None:
                holds = False
                said[worker] = {key: False, "answer": f"none within {WORKER_ANSWER_S:g} s"}
                continue
            status, text = answer
            holds = holds and status == 200
            said[worker] = json.loads(text)
        return web.json_response({key: holds, "workers": said}, status=200 if holds else 503)

    async def _healthz(self, request: web.Request) -> web.Response:
        return await self._all("/healthz", "live")

    async def _readyz(self, request: web.Request) -> web.Response:
        return await self._all("/readyz", "ready")

    async def _metrics(self, request: web.Request) -> web.Response:
        texts = {
            worker: answer[1] if answer is not None and answer[0] == 200 else None
            for worker, answer in (await self._answers("/metrics")).items()
        }
        return web.Response(body=merged_metrics(texts), headers={"Content-Type": _CONTENT_TYPE})
