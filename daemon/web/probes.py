"""The health probes over HTTP (``[health] port``): ``/healthz``, ``/readyz``, ``/metrics``.

What they answer is ``daemon.health``'s; this module only serves it. It is imported
when a port is set, and only then: aiohttp and prometheus-client are a fifth of a
daemon's start-up imports and about 13 MiB of its memory.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.config import HealthConfig
from daemon.errors import ListenError
from daemon.health import Gauge, Probes
from daemon.metrics import Counters

log = logging.getLogger("daemon.health")


_NOT_METRIC = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(counter: str) -> str:
    """A ``Counters`` name as a Prometheus metric name: ``mqtt.rejected`` → ``wardd_mqtt_rejected``."""
    return "wardd_" + _NOT_METRIC.sub("_", counter)


@dataclass(eq=False)  # the registry keys collectors by identity
class _Collector(Collector):
    counters: Counters
    gauges: Sequence[Gauge]

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
            if gauge.counter:
                metric = CounterMetricFamily(gauge.name, gauge.help, labels=list(gauge.labels))
            else:
                metric = GaugeMetricFamily(gauge.name, gauge.help, labels=list(gauge.labels))
            for labels, value in gauge.samples.items():
                metric.add_metric(list(labels), value)
            yield metric


def metrics_text(counters: Counters, gauges: Sequence[Gauge]) -> bytes:
    """Every counter and gauge in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(counters, gauges))
    return generate_latest(registry)


class HealthServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` over plain HTTP (a pipeline service)."""

    name = "health.http"

    def __init__(self, settings: HealthConfig, probes: Probes, counters: Counters) -> None:
        self._settings = settings
        self._probes = probes
        self._counters = counters
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
            site = web.TCPSite(runner, self._settings.host, self._settings.port or 0)
            try:
                await site.start()
            except OSError as exc:
                host, port = self._settings.host, self._settings.port or 0
                raise ListenError("the health probes", "health.host, health.port", host, port, exc) from exc
            server = site._server  # aiohttp exposes the bound port only here
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1] if sockets else self._settings.port
            log.info("health probes on http://%s:%s/healthz", self._settings.host, self.port)
            self.serving.set()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

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
        # prometheus-client's own content type, version parameter included.
        return web.Response(body=text, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
