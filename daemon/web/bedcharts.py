"""The bed page's charts: the dose ledger over the course, and the vital signs.

- **Dose**: the protocol's expected µg/day as a staircase over the whole course (the
  schedules in force, declared restarts and new cycles included: ``Timeline``), the
  delivered µg/day (the ``dose`` points), interruptions shaded and suspected boluses
  marked (from the journal: ``INFUSION_INTERRUPTED``, ``BOLUS_SUSPECTED``), and now.
- **Vital signs**: temperature, pressure (SBP, MAP, DBP), SpO2, heart rate and breathing
  rate over a chosen span, each with the bed's alert thresholds from the config.

The series come from InfluxDB where it is configured and answers, else from the page's
memory (``RecentHistory``), with a note that says which and why; each choice is
counted under ``web.history``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from daemon.clinical.dose import (
    BOLUS_SUSPECTED,
    INFUSION_INTERRUPTED,
    Timeline,
    bed_state,
)
from daemon.clinical.protocols import Schedule, schedule_for
from daemon.config import BedConfig, Config, VitalThresholds
from daemon.events import Metric
from daemon.metrics import Counters
from daemon.numfmt import fmt
from daemon.rules import RuleEngine
from daemon.timefmt import iso, parse_iso
from daemon.web import charts, i18n
from daemon.web.charts import Band, Chart, Line, Mark, Threshold
from daemon.web.history import (
    DELIVERED,
    RECENT_S,
    HistoryUnavailableError,
    InfluxHistory,
    RecentHistory,
    Sample,
    influxql,
    step_for,
)

SPANS: Mapping[str, float | None] = {"6h": 6 * 3600.0, "24h": 24 * 3600.0, "72h": 72 * 3600.0, "course": None}
"""The vital-sign spans the page offers (``?span=``); ``course``: from the protocol start."""
DEFAULT_SPAN = "24h"
DOSE_EVENTS = (INFUSION_INTERRUPTED, BOLUS_SUSPECTED)
DOSE_EVENT_LINES = 500
"""The newest journal lines of those conditions read for the dose chart."""
CHART_POINTS = 360
"""Points per series asked of the database: enough for the chart's width, a few KB of page."""
MIN_STEP_S = 60
"""The database is not asked for finer intervals than this (the monitors' usual period)."""
MAX_COURSE_S = 120 * 86400.0
"""A dose chart spans at most this long (a bed left configured for months stays readable)."""


@dataclass(frozen=True, slots=True)
class Series:
    """The series of one page, where they came from, and why not from the database."""

    vitals: Mapping[str, Sequence[Sample]]
    delivered: Sequence[Sample]
    source: str  # "influx" or "memory"
    reason: str  # the web.history counter's label
    step_s: float  # the vital signs' interval
    dose_step_s: float  # the delivered dose's interval (the whole course: longer)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class _VitalChart:
    id: str
    title: str  # i18n key
    metrics: tuple[Metric, ...]
    limits: tuple[tuple[str, str, str], ...]  # (VitalThresholds field, i18n key, comparison)
    unit: str
    digits: int


VITAL_CHARTS = (
    _VitalChart("chart-temp", "chart_temp", (Metric.TEMP_C,), (("fever_c", "th_fever", "≥"),), "°C", 1),
    _VitalChart(
        "chart-pressure",
        "chart_pressure",
        (Metric.SBP_MMHG, Metric.MAP_MMHG, Metric.DBP_MMHG),
        (
            ("hypotension_sbp_mmhg", "th_hypotension_sbp", "<"),
            ("hypotension_map_mmhg", "th_hypotension_map", "<"),
        ),
        "mmHg",
        0,
    ),
    _VitalChart(
        "chart-spo2", "chart_spo2", (Metric.SPO2_PCT,), (("hypoxia_spo2_pct", "th_hypoxia", "<"),), "%", 0
    ),
    _VitalChart(
        "chart-hr",
        "chart_hr",
        (Metric.HR_PER_MIN,),
        (("tachycardia_per_min", "th_tachycardia", "≥"),),
        "/min",
        0,
    ),
    _VitalChart(
        "chart-rr",
        "chart_rr",
        (Metric.RR_PER_MIN,),
        (("tachypnoea_per_min", "th_tachypnoea", "≥"),),
        "/min",
        0,
    ),
)


# --------------------------------------------------------------------------- the protocol


def course(
    engine: RuleEngine, config: Config, bed: BedConfig, now: datetime
) -> tuple[datetime, datetime, list[Sample]]:
    """(begin, end, expected µg/day as a staircase) of the bed's course, declared plans included."""
    base = schedule_for(bed, config)
    try:
        plans = bed_state(engine, bed).plans
    except (KeyError, TypeError):  # an engine without the dose family: the protocol alone
        plans = ()
    timeline = Timeline(base, bed, config)
    schedules: list[Schedule] = [base]
    for plan in plans:
        schedules.append(timeline.at(plans, plan.since)[0])
    begin = base.start
    end = max(*(s.end for s in schedules), now)
    end = min(end, begin + timedelta(seconds=MAX_COURSE_S))
    edges = {begin, end, *(p.since for p in plans)}
    for schedule in schedules:
        edges.update((schedule.start, schedule.end))
        for step in schedule.steps:
            edges.update((schedule.step_time(step), schedule.step_end(step)))
    points: list[Sample] = []
    for at in sorted(t for t in edges if begin <= t <= end):
        schedule, _, pending = timeline.at(plans, at)
        value = 0.0 if pending else schedule.expected_dose_ug_per_day(at)
        if not points or points[-1][1] != value or at == end:
            points.append((at.timestamp(), value))
    return begin, end, points


def _epoch(value: object) -> float | None:
    """A journal time as epoch seconds; ``None`` when missing or unreadable (a marker left out)."""
    try:
        return parse_iso(value).timestamp() if isinstance(value, str) else None
    except ValueError:
        return None


def dose_events(
    lines: Sequence[tuple[int, Mapping[str, Any]]], now: datetime
) -> tuple[list[Band], list[Mark], dict[str, int]]:
    """Interruptions (start to end, or to now) and suspected boluses from journal lines (any order).

    Also how many of each were found (``{condition: count}``), for the page's key.
    """
    opened: dict[str, float] = {}
    closed: list[tuple[str, float, float]] = []
    boluses: dict[str, float] = {}
    for _, entry in sorted(lines, key=lambda line: line[0]):
        alert = entry.get("alert")
        if not isinstance(alert, Mapping):
            continue
        alert_id = str(alert.get("id"))
        details = alert.get("details")
        since = _epoch((details.get("since") if isinstance(details, Mapping) else None) or alert.get("since"))
        at = _epoch(entry.get("at"))
        what = entry.get("what")
        if alert.get("condition") == INFUSION_INTERRUPTED:
            if what == "end" and at is not None:
                begin = opened.pop(alert_id, since if since is not None else at)
                closed.append((alert_id, begin, at))
            elif alert_id not in opened and since is not None:
                opened[alert_id] = since
        elif alert.get("condition") == BOLUS_SUSPECTED and alert_id not in boluses:
            onset = _epoch(alert.get("since"))
            if onset is not None:
                boluses[alert_id] = onset
    bands = [Band("interruption", alert_id, begin, end) for alert_id, begin, end in closed]
    bands += [Band("interruption", alert_id, begin, now.timestamp()) for alert_id, begin in opened.items()]
    marks = [Mark("bolus", alert_id, at) for alert_id, at in boluses.items()]
    return bands, marks, {INFUSION_INTERRUPTED: len(bands), BOLUS_SUSPECTED: len(marks)}


# --------------------------------------------------------------------------- the series


async def read_series(
    *,
    bed: BedConfig,
    api: str,
    influx: InfluxHistory | None,
    recent: RecentHistory,
    counters: Counters,
    vitals_window: tuple[float, float],
    dose_window: tuple[float, float],
) -> Series:
    """The bed's series: from InfluxDB when it answers, else from memory (counted either way)."""
    v_begin, v_end = vitals_window
    d_begin, d_end = dose_window
    metrics = [str(m) for m in Metric]
    if influx is not None:
        v_step = step_for(v_begin, v_end, CHART_POINTS, MIN_STEP_S)
        d_step = step_for(d_begin, d_end, CHART_POINTS, MIN_STEP_S)
        try:
            vitals, dose = await influx.read(
                [
                    influxql("vitals", metrics, bed.ward, bed.id, v_begin, v_end, v_step),
                    influxql("dose", [DELIVERED], bed.ward, bed.id, d_begin, d_end, d_step),
                ]
            )
        except HistoryUnavailableError as exc:
            counters.inc("web.history", exc.reason)
            return _from_memory(recent, bed, vitals_window, dose_window, exc.reason, exc.detail)
        counters.inc("web.history", "influx")
        half_v, half_d = v_step / 2, d_step / 2  # a mean is drawn at the middle of its interval
        return Series(
            vitals={name: [(t + half_v, v) for t, v in samples] for name, samples in vitals.items()},
            delivered=[(t + half_d, v) for t, v in dose.get(DELIVERED, [])],
            source="influx",
            reason="influx",
            step_s=float(v_step),
            dose_step_s=float(d_step),
        )
    reason = "memory_v2" if api == "v2" else "memory_no_database"
    counters.inc("web.history", reason)
    return _from_memory(recent, bed, vitals_window, dose_window, reason, "")


def _from_memory(  # noqa: PLR0917 - one private call site, each argument named there
    recent: RecentHistory,
    bed: BedConfig,
    vitals_window: tuple[float, float],
    dose_window: tuple[float, float],
    reason: str,
    detail: str,
) -> Series:
    # The same resolution as the database's answer would have: a light page either way.
    v_step = max(recent.bucket_s, step_for(*vitals_window, CHART_POINTS, MIN_STEP_S))
    d_step = max(recent.bucket_s, step_for(*dose_window, CHART_POINTS, MIN_STEP_S))
    return Series(
        vitals={str(m): recent.resampled(bed.id, str(m), *vitals_window, v_step) for m in Metric},
        delivered=recent.resampled(bed.id, DELIVERED, *dose_window, d_step),
        source="memory",
        reason=reason,
        step_s=v_step,
        dose_step_s=d_step,
        detail=detail,
    )


# --------------------------------------------------------------------------- the markup


def _e(text: object) -> str:
    return html.escape(str(text))


def _minutes(seconds: float, words: Mapping[str, str], language: str) -> str:
    if seconds < 3600:
        return f"{round(seconds / 60)} {words['unit_min']}"
    return f"{fmt(seconds / 3600, 1, language)} {words['unit_h']}"


def note(series: Series, words: Mapping[str, str], language: str) -> str:
    """Where the charts' data came from, in the user's language (HTML)."""
    memory = words["chart_memory"].format(
        hours=fmt(RECENT_S / 3600, 0, language),
        minutes=fmt(series.step_s / 60, 0, language),
    )
    if series.source == "influx":
        text = words["chart_from_influx"].format(
            vitals=_minutes(series.step_s, words, language),
            dose=_minutes(series.dose_step_s, words, language),
        )
        return f'<p class="chart-note" data-source="influx">{_e(text)}</p>'
    why = {
        "memory_no_database": words["chart_no_database"],
        "memory_v2": words["chart_v2"],
    }.get(series.reason, words["chart_database_down"])
    detail = f' <span class="detail">({_e(series.detail)})</span>' if series.detail else ""
    return (
        f'<p class="chart-note warn" role="status" data-source="memory" data-reason="{_e(series.reason)}">'
        f"{_e(why)} {_e(memory)}{detail}</p>"
    )


def _gap(step_s: float) -> float:
    # Points further apart than three intervals are a gap in the data, not a straight line.
    return 3 * step_s


def thresholds(
    th: VitalThresholds, chart: _VitalChart, words: Mapping[str, str], language: str
) -> list[Threshold]:
    """The chart's alert thresholds, as configured for the bed."""
    out = []
    for name, key, comparison in chart.limits:
        value = float(getattr(th, name))
        label = f"{words[key]} {comparison} {fmt(value, chart.digits, language)} {chart.unit}"
        out.append(Threshold(name, label, value))
    return out


def charts_html(
    *,
    config: Config,
    engine: RuleEngine,
    bed: BedConfig,
    series: Series,
    journal: Sequence[tuple[int, Mapping[str, Any]]],
    now: datetime,
    span: str,
    language: str,
) -> str:
    """The charts section of the bed page, in ``language``."""
    words = i18n.texts(language)
    begin, end, expected = course(engine, config, bed, now)
    bands, marks, found = dose_events(journal, now)
    expected_line = Line("expected", words["chart_expected"], expected, step=True)
    delivered_line = Line(
        "delivered", words["chart_delivered"], series.delivered, gap_s=_gap(series.dose_step_s)
    )
    now_mark = Mark("now", words["chart_now"], now.timestamp())
    dose = Chart(
        id="chart-dose",
        title=f"{words['chart_dose']} ({words['per_day']})",
        begin=begin.timestamp(),
        end=end.timestamp(),
        lines=(expected_line, delivered_line),
        bands=bands,
        marks=(*marks, now_mark),
        day_axis_from=begin.timestamp(),
        day_word=words["chart_day_short"],
        empty_text=words["chart_empty"],
        y_floor=0.0,
    )
    extra = [
        ("band", f"{words['chart_interruptions']} ({found[INFUSION_INTERRUPTED]})"),
        ("bolus", f"{words['chart_boluses']} ({found[BOLUS_SUSPECTED]})"),
        ("now", words["chart_now"]),
    ]
    parts = [
        '<section class="history charts" id="charts">',
        f"<h2>{_e(words['chart_dose'])} ({_e(words['per_day'])})</h2>",
        # When the charts were drawn: the script shows it in the browser's zone, and draws
        # them again every minute; a frozen chart would say how old it is.
        f'<p class="chart-asof">{_e(words["chart_as_of"])} <time datetime="{_e(iso(now))}">'
        f"{_e(now.strftime('%Y-%m-%d %H:%M:%S'))} UTC</time></p>",
        note(series, words, language),
        charts.render(dose),
        charts.legend((expected_line, delivered_line), extra=extra),
        f"<h2>{_e(words['chart_vitals'])}</h2>",
        _span_links(bed, span, words),
    ]
    v_begin, v_end = vitals_window(span, now, begin)
    th = config.thresholds_for(bed.id).vitals
    for spec in VITAL_CHARTS:
        lines = [
            Line(
                str(metric),
                f"{words[str(metric)]} ({spec.unit})",
                series.vitals.get(str(metric), ()),
                gap_s=_gap(series.step_s),
            )
            for metric in spec.metrics
        ]
        limits = thresholds(th, spec, words, language)
        chart = Chart(
            id=spec.id,
            title=f"{words[spec.title]} ({spec.unit})",
            begin=v_begin,
            end=v_end,
            lines=lines,
            thresholds=limits,
            utc_word=words["chart_utc"],
            empty_text=words["chart_empty"],
            classes=("vital",),
        )
        parts += [
            f'<figure class="chart-box"><figcaption>{_e(words[spec.title])} ({_e(spec.unit)})</figcaption>',
            charts.render(chart),
            charts.legend(lines, limits),
            "</figure>",
        ]
    parts.append("</section>")
    return "\n".join(parts)


def _span_links(bed: BedConfig, span: str, words: Mapping[str, str]) -> str:
    links = []
    for name in SPANS:
        text = _e(words[f"span_{name}"])
        if name == span:
            links.append(f'<b class="span" aria-current="true">{text}</b>')
        else:
            links.append(f'<a class="span" href="/bed/{_e(bed.id)}?span={name}">{text}</a>')
    return f'<p class="spans">{" · ".join(links)}</p>'


def vitals_window(span: str, now: datetime, course_begin: datetime) -> tuple[float, float]:
    """The vital-sign charts' time range for ``span``."""
    window = SPANS[span]
    end = now.timestamp()
    return (course_begin.timestamp() if window is None else end - window, end)
