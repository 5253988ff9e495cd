"""Charts as inline SVG, drawn on the server: no script library, no font, a few KB each.

Pure functions from series to markup; every text is escaped. Colours and fonts come
from ``ward.css`` through class names (the page's Content-Security-Policy allows no
inline style). Each drawn element carries data attributes (``data-series``,
``data-threshold``, ``data-mark``) so that tests and scripts read what was drawn.

Time runs left to right in seconds since the epoch. Clock-time ticks fall on whole UTC
hours and are labelled in UTC with ``data-at``; the page's script relabels them in the
browser's time zone, as it does for every ``<time>`` of the page.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from daemon.web.history import Sample

WIDTH = 720
HEIGHT = 170
SPARK_WIDTH = 80
SPARK_HEIGHT = 18
_LEFT, _RIGHT, _TOP, _BOTTOM = 46.0, 22.0, 8.0, 22.0
_HOUR_S = 3600.0
_DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class Line:
    """One series drawn as a line; ``step`` draws it as a staircase (a schedule)."""

    name: str  # data-series, and the class "s-<name>"
    label: str
    samples: Sequence[Sample]
    step: bool = False
    gap_s: float | None = None  # points further apart than this are not joined


@dataclass(frozen=True, slots=True)
class Threshold:
    """A horizontal limit: an alert threshold from the config."""

    name: str
    label: str
    value: float


@dataclass(frozen=True, slots=True)
class Band:
    """A shaded time interval (an interruption)."""

    name: str
    label: str
    begin: float
    end: float


@dataclass(frozen=True, slots=True)
class Mark:
    """A vertical line at one time (a bolus, now)."""

    name: str
    label: str
    at: float


@dataclass(frozen=True, slots=True)
class Chart:
    """What one chart shows over ``begin``..``end`` (epoch seconds)."""

    id: str
    title: str
    begin: float
    end: float
    lines: Sequence[Line] = ()
    thresholds: Sequence[Threshold] = ()
    bands: Sequence[Band] = ()
    marks: Sequence[Mark] = ()
    day_axis_from: float | None = None  # ticks as protocol days from this time, else clock hours
    day_word: str = "D"
    utc_word: str = "UTC"
    empty_text: str = ""
    y_floor: float | None = None  # a value the y axis always includes (0 for a dose)
    classes: tuple[str, ...] = field(default_factory=tuple)


def _e(text: object) -> str:
    return html.escape(str(text))


def _num(value: float) -> str:
    """A coordinate: short, and never an exponent."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """About ``count`` round values (1, 2, 2.5 or 5 times a power of ten) covering ``low``..``high``."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _y_range(chart: Chart) -> tuple[float, float] | None:
    values = [v for line in chart.lines for t, v in line.samples if chart.begin <= t <= chart.end]
    if not values:
        return None
    values += [th.value for th in chart.thresholds]
    if chart.y_floor is not None:
        values.append(chart.y_floor)
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 1, high + 1
    pad = (high - low) * 0.08
    floor_at = chart.y_floor is not None and low == chart.y_floor
    return (low if floor_at else low - pad), high + pad


def _time_ticks(chart: Chart) -> list[tuple[float, str, str | None]]:
    """(time, label, ISO time for the script or None) along the x axis."""
    out: list[tuple[float, str, str | None]] = []
    span = chart.end - chart.begin
    if chart.day_axis_from is not None:
        days = max(1, math.ceil(span / _DAY_S))
        every = next(n for n in (1, 2, 7, 14, 28) if days / n <= 16)
        first = math.ceil((chart.begin - chart.day_axis_from) / _DAY_S)
        day = first
        while chart.day_axis_from + day * _DAY_S <= chart.end:
            if day % every == 0:
                out.append((chart.day_axis_from + day * _DAY_S, f"{chart.day_word}{day + 1}", None))
            day += 1
        return out
    hours = span / _HOUR_S
    every = next(n for n in (1, 2, 3, 6, 12, 24, 48, 96, 168) if hours / n <= 8)
    at = float(math.ceil(chart.begin / (every * _HOUR_S)) * every * _HOUR_S)
    while at <= chart.end:
        when = datetime.fromtimestamp(at, UTC)
        label = when.strftime("%d/%m %H:%M") if every >= 24 else when.strftime("%H:%M")
        out.append((at, label, when.isoformat().replace("+00:00", "Z")))
        at += every * _HOUR_S
    return out


def _path(line: Line, fx: Callable[[float], float], fy: Callable[[float], float]) -> list[str]:
    """The ``d`` attribute of each joined run of points: one absolute move, then relative
    steps in tenths of a unit (a day of points in a few KB)."""
    runs: list[str] = []
    current: list[str] = []
    previous: Sample | None = None
    last_x = last_y = 0.0
    for t, v in line.samples:
        if previous is not None and line.gap_s is not None and t - previous[0] > line.gap_s:
            runs.append("".join(current))
            current = []
            previous = None
        px, py = round(fx(t), 1), round(fy(v), 1)
        if previous is None:
            current.append(f"M{_num(px)} {_num(py)}")
        elif line.step:
            current.append(f"h{_num(px - last_x)}v{_num(py - last_y)}")
        else:
            dy = _num(py - last_y)
            current.append(f"l{_num(px - last_x)}{dy if dy.startswith('-') else ' ' + dy}")
        previous = (t, v)
        last_x, last_y = px, py
    if current:
        runs.append("".join(current))
    return runs


def render(chart: Chart) -> str:
    """The chart as an ``<svg>`` element (or its empty frame with ``empty_text``)."""
    width, height = float(WIDTH), float(HEIGHT)
    plot_w = width - _LEFT - _RIGHT
    plot_h = height - _TOP - _BOTTOM
    span = max(chart.end - chart.begin, 1.0)

    def x(t: float) -> float:
        return _LEFT + (min(max(t, chart.begin), chart.end) - chart.begin) / span * plot_w

    y_range = _y_range(chart)
    low, high = y_range if y_range is not None else (0.0, 1.0)

    def y(v: float) -> float:
        return _TOP + (high - v) / (high - low) * plot_h

    classes = " ".join(("chart", *chart.classes))
    out = [
        f'<svg id="{_e(chart.id)}" class="{_e(classes)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-labelledby="{_e(chart.id)}-title" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{_e(chart.id)}-title">{_e(chart.title)}</title>',
        f'<rect class="plot" x="{_num(_LEFT)}" y="{_num(_TOP)}" width="{_num(plot_w)}" height="{_num(plot_h)}"/>',
    ]
    for band in chart.bands:
        if band.end < chart.begin or band.begin > chart.end:
            continue
        x0, x1 = x(band.begin), x(band.end)
        out.append(
            f'<rect class="band b-{_e(band.name)}" data-band="{_e(band.name)}" x="{_num(x0)}" y="{_num(_TOP)}"'
            f' width="{_num(max(x1 - x0, 1.5))}" height="{_num(plot_h)}"><title>{_e(band.label)}</title></rect>'
        )
    for at, label, iso in _time_ticks(chart):
        px = x(at)
        out.append(
            f'<line class="grid" x1="{_num(px)}" y1="{_num(_TOP)}" x2="{_num(px)}" y2="{_num(_TOP + plot_h)}"/>'
        )
        at_attr = f' data-at="{_e(iso)}"' if iso else ""
        out.append(
            f'<text class="tick x"{at_attr} x="{_num(px)}" y="{_num(height - 6)}" text-anchor="middle">{_e(label)}</text>'
        )
    if chart.day_axis_from is None:
        # Under the y axis, where no tick label goes: the time zone the clock ticks are in.
        out.append(
            f'<text class="tick tz" data-tz="UTC" x="2" y="{_num(height - 6)}"'
            f' text-anchor="start">{_e(chart.utc_word)}</text>'
        )
    if y_range is None:
        out.append(
            f'<text class="empty" x="{_num(_LEFT + plot_w / 2)}" y="{_num(_TOP + plot_h / 2)}"'
            f' text-anchor="middle">{_e(chart.empty_text)}</text>'
        )
    else:
        for value in nice_ticks(low, high):
            py = y(value)
            out.append(
                f'<line class="grid" x1="{_num(_LEFT)}" y1="{_num(py)}" x2="{_num(width - _RIGHT)}" y2="{_num(py)}"/>'
            )
            out.append(
                f'<text class="tick y" x="{_num(_LEFT - 4)}" y="{_num(py + 4)}" text-anchor="end">{_e(f"{value:g}")}</text>'
            )
        labels: list[str] = []
        for th in chart.thresholds:
            py = y(th.value)
            out.append(
                f'<line class="threshold" data-threshold="{_e(th.name)}" data-value="{_e(f"{th.value:g}")}"'
                f' x1="{_num(_LEFT)}" y1="{_num(py)}" x2="{_num(width - _RIGHT)}" y2="{_num(py)}">'
                f"<title>{_e(th.label)}</title></line>"
            )
            # Written at the left, above its line (below it near the top), over the series.
            label_y = py - 4 if py - 14 > _TOP else py + 13
            labels.append(
                f'<text class="th-label" x="{_num(_LEFT + 4)}" y="{_num(label_y)}">{_e(th.label)}</text>'
            )
        for line in chart.lines:
            inside = [(t, v) for t, v in line.samples if chart.begin <= t <= chart.end]
            runs = _path(Line(line.name, line.label, inside, line.step, line.gap_s), x, y)
            d = " ".join(runs)
            out.append(
                f'<path class="series s-{_e(line.name)}" data-series="{_e(line.name)}" data-points="{len(inside)}"'
                f' d="{d}"><title>{_e(line.label)}</title></path>'
            )
        out += labels
    for mark in chart.marks:
        if not chart.begin <= mark.at <= chart.end:
            continue
        px = x(mark.at)
        out.append(
            f'<line class="mark m-{_e(mark.name)}" data-mark="{_e(mark.name)}" x1="{_num(px)}" y1="{_num(_TOP)}"'
            f' x2="{_num(px)}" y2="{_num(_TOP + plot_h)}"><title>{_e(mark.label)}</title></line>'
        )
    out.append("</svg>")
    return "".join(out)


def legend(
    lines: Sequence[Line], thresholds: Sequence[Threshold] = (), extra: Sequence[tuple[str, str]] = ()
) -> str:
    """The chart's key: one item per line, threshold and ``(class, text)`` of ``extra``."""
    items = [f'<li class="k s-{_e(line.name)}">{_e(line.label)}</li>' for line in lines]
    items += [f'<li class="k threshold">{_e(th.label)}</li>' for th in thresholds]
    items += [f'<li class="k {_e(css)}">{_e(text)}</li>' for css, text in extra]
    return f'<ul class="legend">{"".join(items)}</ul>'
