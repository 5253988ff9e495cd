"""What a bed shows, computed once for every view of the ward (the console, the ward page).

It reads the pipeline's state (rule states, the alert book) and never changes it. The
dose figures are those of the ``dose`` point (``daemon.clinical.dose.dose_point``), the
score that of the NEWS2 rule, the alerts those of the alert book: a view only lays
them out.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from daemon.alerts import Alert, AlertBook, AlertState
from daemon.clinical.dose import dose_point, next_step
from daemon.clinical.news2 import News2Rule, News2State
from daemon.config import BedConfig, Config
from daemon.events import Event, Metric, VitalSample
from daemon.ids import is_ward_subject, ward_subject
from daemon.rules import RuleEngine

NEWS2_RULE = "news2"


@dataclass
class _Latest:
    values: dict[Metric, float]
    time: datetime


class LatestVitals:
    """Each bed's latest vital signs, kept as a pipeline observer (``observe``)."""

    def __init__(self) -> None:
        self._beds: dict[str, _Latest] = {}

    def observe(self, event: Event) -> None:
        """Remember each bed's latest values (a metric missing from a message keeps its last value)."""
        if isinstance(event, VitalSample):
            latest = self._beds.setdefault(event.bed, _Latest({}, event.time))
            latest.values.update(event.values)
            latest.time = max(latest.time, event.time)

    def get(self, bed: str) -> tuple[Mapping[Metric, float], datetime] | None:
        """The bed's latest values and the time of the newest, if any came since the start."""
        latest = self._beds.get(bed)
        return None if latest is None else (dict(latest.values), latest.time)


@dataclass(frozen=True, slots=True)
class Urgency:
    """How much a bed calls for attention; larger is more urgent (compare as a tuple)."""

    priority_rank: int = -1  # the highest open priority not yet acknowledged; -1: none
    escalation_level: int = 0
    any_rank: int = -1  # the highest open priority, acknowledged ones included

    def key(self) -> tuple[int, int, int]:
        """The sort key."""
        return (self.priority_rank, self.escalation_level, self.any_rank)


@dataclass(frozen=True, slots=True)
class BedView:
    """One bed at ``now``: its dose, its latest vital signs and score, its open alerts."""

    bed: BedConfig
    now: datetime
    protocol_day: int  # 0 before the start
    expected_ug_per_day: float
    delivered_ug_per_day: float | None  # None when no recent reading says
    next_step: tuple[datetime, float] | None  # when, and the µg/day it brings
    vitals: Mapping[Metric, float] = field(default_factory=dict)
    vitals_time: datetime | None = None
    news2: int | None = None
    news2_partial: bool = False  # some parameters missing: the score is a lower bound
    alerts: tuple[Alert, ...] = ()  # the most urgent first

    @property
    def urgency(self) -> Urgency:
        """From the open alerts: unacknowledged priority first, then escalation."""
        waiting = [a for a in self.alerts if a.state is not AlertState.ACKNOWLEDGED]
        return Urgency(
            priority_rank=max((a.priority.rank for a in waiting), default=-1),
            escalation_level=max((a.escalation_level for a in waiting), default=0),
            any_rank=max((a.priority.rank for a in self.alerts), default=-1),
        )


def alert_order(alerts: Iterable[Alert]) -> list[Alert]:
    """Alerts as a bed lists them: highest priority first, then the oldest."""
    return sorted(alerts, key=lambda a: (-a.priority.rank, a.since))


def bed_view(
    config: Config,
    bed: BedConfig,
    *,
    engine: RuleEngine,
    book: AlertBook,
    latest: LatestVitals,
    now: datetime,
) -> BedView:
    """One bed's view, with its open alerts from ``book``."""
    point = dose_point(engine, bed, now, config=config)
    fields = point.fields if point is not None else {}
    delivered = fields.get("delivered_ug_per_day")
    seen = latest.get(bed.id)
    score, partial = None, False
    news2_state = _news2_state(engine, bed.id)
    if news2_state is not None:
        result = News2Rule(config.thresholds_for(bed.id).vitals, bed).current(news2_state, now)
        if result.parts:
            score, partial = result.total, bool(result.missing)
        if seen is None and news2_state.values:
            # After a restart, before the first new sample: the values the score kept.
            values = {metric: value for metric, (value, _) in news2_state.values.items()}
            seen = (values, max(at for _, at in news2_state.values.values()))
    return BedView(
        bed=bed,
        now=now,
        protocol_day=int(fields.get("protocol_day", 0)),
        expected_ug_per_day=float(fields.get("expected_ug_per_day", 0.0)),
        delivered_ug_per_day=float(delivered) if isinstance(delivered, int | float) else None,
        next_step=next_step(engine, bed, now, config=config),
        vitals=seen[0] if seen is not None else {},
        vitals_time=seen[1] if seen is not None else None,
        news2=score,
        news2_partial=partial,
        alerts=tuple(alert_order(book.of_bed(bed.ward, bed.id))),
    )


def ward_view(
    config: Config, engine: RuleEngine, book: AlertBook, latest: LatestVitals, now: datetime
) -> list[BedView]:
    """Every configured bed, in the config's order."""
    return list(bed_views(config, engine, book, latest, now))


def bed_views(
    config: Config, engine: RuleEngine, book: AlertBook, latest: LatestVitals, now: datetime
) -> Iterator[BedView]:
    """``ward_view`` a bed at a time, for a caller that lets other work run in between."""
    for bed in config.beds:
        yield bed_view(config, bed, engine=engine, book=book, latest=latest, now=now)


def ward_alerts(config: Config, alerts: Iterable[Alert]) -> dict[str, list[Alert]]:
    """The open alerts of the wards themselves (their links lost: ``daemon.tech_rules``),
    by ward in the beds' order, for the wards that have any."""
    wards = dict.fromkeys(bed.ward for bed in config.beds)
    own = alert_order(a for a in alerts if is_ward_subject(a.bed) and a.ward in wards)
    return {ward: found for ward in wards if (found := [a for a in own if a.ward == ward])}


def book_ward_alerts(config: Config, book: AlertBook) -> dict[str, list[Alert]]:
    """``ward_alerts`` of the book: each ward's own alerts looked up at its subject, not
    picked out of every open alert (the ward page asks at each push)."""
    wards = dict.fromkeys(bed.ward for bed in config.beds)
    return ward_alerts(config, [a for ward in wards for a in book.of_bed(ward, ward_subject(ward))])


def by_urgency(views: Iterable[BedView]) -> list[BedView]:
    """The most urgent bed first; beds of equal urgency keep their order (stable sort)."""
    return urgency_sorted([(view.urgency.key(), view) for view in views])


def urgency_sorted(keyed: list[tuple[tuple[int, int, int], BedView]]) -> list[BedView]:
    """``by_urgency`` of views given with their urgency keys (worked out by the caller,
    while it builds them)."""
    keyed.sort(key=operator.itemgetter(0), reverse=True)
    return [view for _, view in keyed]


def _news2_state(engine: RuleEngine, bed: str) -> News2State | None:
    try:
        state = engine.state(bed, NEWS2_RULE)
    except KeyError:  # an engine built without the vital-sign family
        return None
    return state if isinstance(state, News2State) else None
