"""When the first neurological check falls due (NEURO_CHECK_DUE, daemon/clinical/crs.py).

domain.md section 0: a daily handwriting test screens for neurotoxicity. It does not
say when the first one falls due; the daemon's choice (``neuro_check_first_s``, one
``neuro_check_interval_s`` unless set) counts from the protocol start, or from when
the daemon began watching a bed already on protocol: it cannot know of checks made
before, and a bed it has just started to watch is not overdue.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.clinical.crs import NeuroCheckRule, NeuroCheckState
from daemon.clinical.protocols import schedule_for
from daemon.events import Handwriting, Observation, Tick
from tests.helpers import one_bed_config, run

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SEC = timedelta(seconds=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def rule(**vitals: Any) -> NeuroCheckRule:
    config = one_bed_config(START, vitals=vitals)
    bed = config.bed("b1")
    return NeuroCheckRule(config.thresholds_for("b1").vitals, bed, schedule_for(bed, config))


def test_a_bed_started_on_protocol_is_due_one_interval_after_the_start() -> None:
    r = rule()
    state, out = run(r, [Tick(START), Tick(START + DAY - SEC)])
    assert out == []
    _, out = run(r, [Tick(START + DAY)], state)
    assert [(c.condition, c.present) for c in out] == [("NEURO_CHECK_DUE", True)]


def test_a_bed_joined_mid_protocol_is_not_overdue_at_once() -> None:
    # The daemon starts watching on day 3: the first check is due a day later.
    joined = START + 2 * DAY
    r = rule()
    state, out = run(r, [Tick(joined), Tick(joined + DAY - SEC)])
    assert out == []
    state, out = run(r, [Tick(joined + DAY)], state)
    assert [c.present for c in out] == [True]
    assert out[0].message is not None
    assert "72 h (since the protocol start)" in out[0].message.en


def test_a_check_at_the_first_tick_raises_nothing() -> None:
    # The built-in scenarios: the day's handwriting test at the daemon's first minute.
    joined = START + 2 * DAY
    obs = Observation("w1", "b1", joined, by="nurse", handwriting=Handwriting.NORMAL)
    _, out = run(rule(), [Tick(joined), obs, Tick(joined + HOUR)])
    assert out == []


@pytest.mark.parametrize(("first_s", "due_after"), [(3600.0, HOUR), (None, DAY)])
def test_the_first_check_delay_is_configurable(first_s: float | None, due_after: timedelta) -> None:
    joined = START + 2 * DAY
    r = rule(neuro_check_first_s=first_s) if first_s is not None else rule()
    state, out = run(r, [Tick(joined), Tick(joined + due_after - SEC)])
    assert out == []
    _, out = run(r, [Tick(joined + due_after)], state)
    assert [c.present for c in out] == [True]


def test_after_the_first_check_the_interval_counts_from_it() -> None:
    r = rule(neuro_check_first_s=3600.0)
    obs = Observation("w1", "b1", START + 30 * 60 * SEC, by="nurse", handwriting=Handwriting.NORMAL)
    state, out = run(r, [Tick(START), obs, Tick(START + 30 * 60 * SEC + DAY - SEC)])
    assert out == []
    _, out = run(r, [Tick(START + 30 * 60 * SEC + DAY)], state)
    assert [c.present for c in out] == [True]


def test_the_watch_start_survives_a_restart_of_the_daemon() -> None:
    joined = START + 2 * DAY
    r = rule()
    state, _ = run(r, [Tick(joined)])
    assert state == NeuroCheckState(watch_start=joined)
    again = r.load(json.loads(json.dumps(r.dump(state))))
    assert again == state
    _, out = run(r, [Tick(joined + DAY - SEC)], again)
    assert out == []
    assert r.load({}) == NeuroCheckState()
