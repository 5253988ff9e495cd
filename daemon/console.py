"""A live console view of the ward: one block per bed, redrawn as time passes.

Per bed: protocol and day, delivered versus expected µg/day, the latest vital signs,
and the open alerts by priority. It reads the pipeline's own state (rule states and
the alert book) and never changes it.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping
from datetime import datetime
from typing import TextIO

from daemon.alerts import Alert
from daemon.app import Pipeline
from daemon.events import Metric, Priority
from daemon.wardview import LatestVitals, book_ward_alerts, ward_view

CLEAR = "\x1b[H\x1b[2J"
SHOWN: tuple[tuple[Metric, str, str], ...] = (
    (Metric.TEMP_C, "T", "{:.1f}°C"),
    (Metric.SBP_MMHG, "SBP", "{:.0f}"),
    (Metric.MAP_MMHG, "MAP", "{:.0f}"),
    (Metric.HR_PER_MIN, "HR", "{:.0f}"),
    (Metric.SPO2_PCT, "SpO2", "{:.0f}%"),
    (Metric.RR_PER_MIN, "RR", "{:.0f}"),
)
COLOURS: Mapping[Priority, str] = {
    Priority.HIGH: "\x1b[31m",
    Priority.MEDIUM: "\x1b[33m",
    Priority.LOW: "\x1b[36m",
}
RESET = "\x1b[0m"
RECENT_LINES = 8


class WardConsole:
    """Keeps the latest vital signs per bed (as a pipeline observer) and renders the ward."""

    def __init__(
        self,
        pipeline: Pipeline,
        out: TextIO,
        *,
        colour: bool | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """Attach to ``pipeline``'s observers; ``labels`` (by bed id) are shown beside each bed."""
        self._pipeline = pipeline
        self._out = out
        self._labels = dict(labels or {})
        self._colour = out.isatty() if colour is None else colour
        self._latest = LatestVitals()
        self.recent: collections.deque[str] = collections.deque(maxlen=RECENT_LINES)
        self.notes: list[str] = []
        """Lines shown under the title (the ward page's address in the demo)."""
        pipeline.observers.append(self._latest.observe)

    def render(self, now: datetime) -> str:
        """The whole ward as text."""
        pipeline = self._pipeline
        lines = [f"wardd — {now:%Y-%m-%d %H:%M} (simulated clock)" if now else "wardd", *self.notes]
        for view in ward_view(pipeline.config, pipeline.engine, pipeline.alerts.book, self._latest, now):
            bed = view.bed
            delivered = view.delivered_ug_per_day
            dose = f"{delivered:5.1f}" if delivered is not None else "    -"
            vitals = (
                "  ".join(
                    f"{label} {fmt.format(view.vitals[m])}" for m, label, fmt in SHOWN if m in view.vitals
                )
                if view.vitals
                else "no vitals yet"
            )
            label = self._labels.get(bed.id, "")
            lines.append(
                f"{bed.ward}/{bed.id:<4} {bed.patient:<10} {label:<26} {bed.protocol} day {view.protocol_day:<2}  "
                f"dose {dose} / {view.expected_ug_per_day:4.1f} µg/day"
            )
            lines.append(f"      {vitals}")
            lines.extend(self._alert_line(alert) for alert in view.alerts)
        for ward, own in book_ward_alerts(pipeline.config, pipeline.alerts.book).items():
            lines.append(f"ward {ward} (every bed):")
            lines.extend(self._alert_line(alert) for alert in own)
        if self.recent:
            lines.append("recent alert transitions:")
            lines.extend(f"  {line}" for line in self.recent)
        return "\n".join(lines)

    def _alert_line(self, alert: Alert) -> str:
        colour, reset = (COLOURS[alert.priority], RESET) if self._colour else ("", "")
        return (
            f"      {colour}{alert.priority.upper():6} {alert.condition}{reset} [{alert.state}]"
            f" since {alert.since:%d %H:%M}"
        )

    async def run(self, interval_s: float = 1.0) -> None:
        """Redraw every ``interval_s`` real seconds until cancelled (a plain block per redraw
        when the output is not a terminal)."""
        while True:
            text = self.render(self._pipeline.clock.now())
            self._out.write((CLEAR if self._colour else "\n") + text + "\n")
            self._out.flush()
            await asyncio.sleep(interval_s)
