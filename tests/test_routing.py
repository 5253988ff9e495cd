"""Routing as golden cases on an injected clock: who is told of what, and when.

Each ``tests/routing_cases/<name>.toml`` is one case, data only: ``[config]`` (the
``[routing]``, ``[[receivers]]``, ``[[routes]]`` and ``[alerts]`` tables of a ward
config; receivers n0, c1, d2 and the route ``all`` by default), ``[[steps]]`` at whole
seconds after the start, and ``expected``, one line per notice::

    <second> <kind> L<level> -> <receivers>: <CONDITION>@<bed>[/<state>],...

Steps: ``raise`` (condition, bed, ward, priority, kind, grade, details), ``clear`` (condition, bed),
``ack`` (condition, bed, by), ``fail`` (condition, bed, level, receiver). The clock runs
in steps of one second until ``until``: each second the steps, then the alert engine's
escalation check, then the router's ``tick``. Adding a case needs no code.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.alerts import AlertBook, AlertState
from daemon.config import parse
from daemon.delivery.routing import Notice, Router
from daemon.events import AlertCandidate, Kind, Priority

CASES = Path(__file__).parent / "routing_cases"
START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

BASE: dict[str, Any] = {
    "receivers": [
        {"name": name, "type": "webhook", "url": f"http://127.0.0.1:9/{name}", "secret": {"value": "k"}}
        for name in ("n0", "c1", "d2")
    ],
    "routes": [{"name": "all", "levels": [["n0"], ["c1"], ["d2"]]}],
}


def _line(at_s: int, notice: Notice) -> str:
    alerts = ",".join(
        f"{a.condition}@{a.bed}" + ("" if a.state is AlertState.ACTIVE else f"/{a.state}")
        for a in notice.alerts
    )
    return f"{at_s} {notice.kind} L{notice.level} -> {','.join(notice.receivers)}: {alerts}"


def play(case: dict[str, Any], *, restart_at: int | None = None) -> list[str]:
    """Run one case; the notices as lines. ``restart_at``: at that second the router is
    made again from the rows it asked to store (as after a restart of the daemon)."""
    config_data = {**BASE, **case.get("config", {})}
    config = parse(config_data)
    start = datetime.fromisoformat(case["start"]) if "start" in case else START
    book = AlertBook(escalate_after_s=config.alerts.escalate_after_s)
    router = Router(config.routing, config.routes)
    steps: dict[int, list[dict[str, Any]]] = {}
    for step in case.get("steps", []):
        steps.setdefault(int(step["at"]), []).append(step)
    out: list[str] = []
    stored: dict[str, str] = {}
    for second in range(int(case["until"]) + 1):
        now = start + timedelta(seconds=second)
        if second == restart_at:
            router = Router(config.routing, config.routes)
            assert router.restore(stored) == []
        notices: list[Notice] = []
        for step in steps.get(second, []):
            notices += _step(book, router, step, now)
        for transition in book.tick(now):
            notices += router.transition(transition, now)
        notices += router.tick(now)
        out += [_line(second, n) for n in notices]
        for key, row in router.take_changed().items():
            if row is None:
                stored.pop(key, None)
            else:
                stored[key] = row
    return out


def _step(book: AlertBook, router: Router, step: dict[str, Any], now: datetime) -> list[Notice]:
    if "raise" in step or "clear" in step:
        spec = step.get("raise") or step["clear"]
        candidate = AlertCandidate(
            spec["condition"],
            spec.get("ward", "w1"),
            str(spec["bed"]),
            now,
            present="raise" in step,
            kind=Kind(spec.get("kind", "physiological")),
            priority=Priority(spec.get("priority", "medium")),
            details={**({"grade": spec["grade"]} if "grade" in spec else {}), **spec.get("details", {})},
        )
        transitions = book.apply(candidate, now)
    elif "ack" in step:
        spec = step["ack"]
        alert = next(
            a for a in book.open_alerts() if (a.condition, a.bed) == (spec["condition"], str(spec["bed"]))
        )
        transitions = book.acknowledge(alert.id, spec.get("by", "nurse-a"), now)
    else:
        spec = step["fail"]
        ids = [
            a.id
            for a in [*book.open_alerts()]
            if (a.condition, a.bed) == (spec["condition"], str(spec["bed"]))
        ]
        return router.failed(ids, int(spec["level"]), spec["receiver"], now)
    return [n for t in transitions for n in router.transition(t, now)]


def _cases() -> list[Path]:
    return sorted(CASES.glob("*.toml"))


@pytest.mark.parametrize("path", _cases(), ids=lambda p: p.stem)
def test_routing_case(path: Path) -> None:
    case = tomllib.loads(path.read_text())
    assert play(case) == case["expected"]


@pytest.mark.parametrize("path", _cases(), ids=lambda p: p.stem)
def test_routing_case_across_a_restart(path: Path) -> None:
    """The router's stored rows are all it needs: restarted at each step's second (before
    the step) and in the middle, it tells the same people the same things."""
    case = tomllib.loads(path.read_text())
    seconds = sorted({int(step["at"]) for step in case.get("steps", [])} | {int(case["until"]) // 2})
    for second in seconds:
        assert play(case, restart_at=second) == case["expected"], f"restarted at {second} s"


def test_an_unreadable_stored_row_is_reported_not_fatal() -> None:
    config = parse(BASE)
    router = Router(config.routing, config.routes)
    assert router.restore({"alert:x": "{not json", "groups": "[]"}) == [
        "alert:x: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    ]
    assert router.tracks == {}


def test_there_are_cases() -> None:
    assert len(_cases()) >= 10


def test_a_notice_names_the_receivers_told_of_its_alert_for_the_first_time() -> None:
    """Level 0 first hears of the alert from its alert notice, level 1 from the escalation;
    later escalations and the closing notice are nobody's first."""
    config = parse(
        {
            **BASE,
            "routing": {"group_window_s": 0},
            "alerts": {"escalate_after_s": 60},
            "routes": [{"name": "all", "levels": [["n0"], ["n0", "c1"]], "repeat_after_s": 0}],
        }
    )
    book = AlertBook(escalate_after_s=60)
    router = Router(config.routing, config.routes)
    candidate = AlertCandidate("HYPOXIA", "w1", "12", START, present=True, priority=Priority.HIGH)
    seen: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
    for second in range(241):
        now = START + timedelta(seconds=second)
        notices = (
            [n for t in book.apply(candidate, now) for n in router.transition(t, now)] if second == 0 else []
        )
        if second == 230:
            [alert] = book.open_alerts()
            notices += [
                n for t in book.acknowledge(alert.id, "nurse-a", now) for n in router.transition(t, now)
            ]
        notices += [n for t in book.tick(now) for n in router.transition(t, now)]
        notices += router.tick(now)
        seen += [(str(n.kind), n.receivers, n.first_for) for n in notices]
    assert seen == [
        ("alert", ("n0",), ("n0",)),
        ("escalation", ("n0", "c1"), ("c1",)),
        ("escalation", ("n0", "c1"), ()),
        ("escalation", ("n0", "c1"), ()),
        ("closing", ("n0", "c1"), ()),
    ]
