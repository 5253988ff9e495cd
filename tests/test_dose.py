"""Dose-schedule rule: ledger, checks, persistence, bag input and views.

The golden ``tests/cases/dose-*`` folders run in ``tests/test_cases.py``; the edges of
each dose limit are pinned in ``tests/test_dose_edges.py``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.app import build_rules
from daemon.clinical.dose import (
    BAG_LOW,
    BOLUS_SUSPECTED,
    CUMULATIVE_DOSE_DEVIATION,
    DOSE_RATE_HIGH,
    DOSE_RATE_LOW,
    INFUSION_AFTER_PROTOCOL_END,
    INFUSION_INTERRUPTED,
    DoseRule,
    DoseState,
    Reading,
    configured_bag,
    dose_point,
    dose_rules,
    dump_state,
    load_state,
    parse_bag,
    status_lines,
)
from daemon.config import Config, DoseThresholds, parse
from daemon.errors import InputError
from daemon.events import AlertCandidate, BagHung, Event, Priority, PumpReading, PumpState, Tick
from tests.helpers import one_bed_config

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
C9 = 0.0375  # µg/mL: 9 µg/day at 10 mL/h (domain.md section 1)
C28 = 0.1167  # µg/mL: 28 µg/day at 10 mL/h


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- unit tests


def _config(**thresholds: Any) -> Config:
    return one_bed_config(START, weight_kg=60, dose=thresholds)


class Bed:
    """Drives one dose rule by hand: readings, bags and ticks, collecting candidates."""

    def __init__(self, **thresholds: Any) -> None:
        self.config = _config(**thresholds)
        (rule,) = dose_rules(self.config, self.config.beds[0])
        assert isinstance(rule, DoseRule)
        self.rule = rule
        self.state: DoseState = rule.initial()
        self.out: list[AlertCandidate] = []

    def feed(self, event: Event) -> list[AlertCandidate]:
        self.state, out = self.rule.step(self.state, event, event.time)
        self.out.extend(out)
        return list(out)

    def pump(
        self, when: datetime, rate: float | None, volume: float | None, state: str = "infusing"
    ) -> list[AlertCandidate]:
        return self.feed(PumpReading("w1", "b1", "p1", when, PumpState(state), rate, volume))

    def bag(
        self, when: datetime, conc: float, bag_id: str = "bag", volume: float | None = None
    ) -> list[AlertCandidate]:
        return self.feed(BagHung("w1", "b1", when, bag_id, conc, volume))

    def tick(self, when: datetime) -> list[AlertCandidate]:
        return self.feed(Tick(when))

    def raised(self, condition: str) -> list[AlertCandidate]:
        return [c for c in self.out if c.condition == condition and c.present]


def test_ledger_counts_across_bags_and_counter_resets() -> None:
    bed = Bed()
    bed.bag(START, C9)
    bed.pump(START, 10, 0)
    bed.pump(START + 12 * 60 * MIN, 10, 120)  # 4.5 µg
    bed.bag(START + 12 * 60 * MIN, C28, "bag-2")
    bed.pump(START + 13 * 60 * MIN, 10, 10)  # counter reset: 10 mL of the new bag
    assert bed.state.delivered_ml == pytest.approx(130)
    assert bed.state.delivered_ug == pytest.approx(120 * C9 + 10 * C28)
    assert bed.state.bag is not None
    assert bed.state.bag.infused_ml == pytest.approx(10)


def test_data_gap_is_not_delivery() -> None:
    bed = Bed()
    bed.bag(START, C9)
    bed.pump(START, 10, 0)
    # Two hours without a reading: the rate is unknown, nothing is extrapolated.
    later = START + 2 * 60 * MIN
    assert bed.state.delivered_ug == 0
    point = dose_point(bed.state, bed.config.beds[0], later, config=bed.config)
    assert point is not None
    assert "delivered_ug_per_day" not in point.fields
    assert point.fields["delivered_total_ug"] == 0
    bed.pump(later, 10, 20)
    assert bed.state.gap_s == pytest.approx(7200)
    assert bed.state.delivered_ug == pytest.approx(20 * C9)  # measured by the pump, so counted


def test_volume_without_a_bag_is_kept_apart() -> None:
    bed = Bed()
    bed.pump(START, 10, 0)
    bed.pump(START + 30 * MIN, 10, 5)
    assert bed.state.unattributed_ml == pytest.approx(5)
    assert bed.state.delivered_ug == 0


def test_dose_rate_low_after_delay_then_clears() -> None:
    bed = Bed()
    bed.bag(START + DAY_, C9)
    bed.pump(START + DAY_, 5, 0)  # half the rate: 4.5 µg/day
    assert bed.tick(START + DAY_ + 4 * MIN) == []
    (cand,) = bed.tick(START + DAY_ + 5 * MIN)
    assert (cand.condition, cand.priority, cand.present) == (DOSE_RATE_LOW, Priority.MEDIUM, True)
    assert cand.value == pytest.approx(4.5)
    assert cand.message is not None
    assert "4.5 µg/day" in cand.message.en
    assert "4,5 µg/jour" in cand.message.fr
    (clear,) = bed.pump(START + DAY_ + 10 * MIN, 10, 0.5)
    assert (clear.condition, clear.present) == (DOSE_RATE_LOW, False)


DAY_ = timedelta(days=2)


def test_a_wrong_rate_that_returns_in_band_before_rate_delay_s_starts_its_delay_again() -> None:
    """The delay of a wrong rate runs from the start of its latest excursion: one that
    ended in band before the delay is forgotten, alerts or none."""
    bed = Bed()
    bed.bag(START + DAY_, C9)
    bed.pump(START + DAY_, 5, 0)  # half the rate
    assert bed.tick(START + DAY_ + 4 * MIN) == []
    assert bed.pump(START + DAY_ + 4 * MIN + timedelta(seconds=30), 10, 0.4) == []  # back in band
    assert bed.state.pending == {}
    assert bed.pump(START + DAY_ + 6 * MIN, 5, 0.6) == []  # half the rate again
    assert bed.tick(START + DAY_ + 10 * MIN) == []
    (cand,) = bed.tick(START + DAY_ + 11 * MIN)
    assert (cand.condition, cand.present) == (DOSE_RATE_LOW, True)


def test_rate_high_medium_below_escalation_ratio() -> None:
    bed = Bed()
    bed.bag(START + DAY_, C9)
    bed.pump(START + DAY_, 15, 0)  # 13.5 µg/day: 1.5 × 9
    (cand,) = bed.tick(START + DAY_ + 5 * MIN)
    assert (cand.condition, cand.priority) == (DOSE_RATE_HIGH, Priority.MEDIUM)


def test_short_rate_spike_is_a_bolus() -> None:
    bed = Bed()
    bed.bag(START + DAY_, C9)
    bed.pump(START + DAY_, 10, 0)
    bed.pump(START + DAY_ + 40 * MIN, 10, 6.67)
    out = bed.pump(START + DAY_ + 41 * MIN, 100, 6.9)
    (bolus,) = [c for c in out if c.condition == BOLUS_SUSPECTED]
    assert bolus.priority is Priority.HIGH
    assert bolus.details["cause"] == "rate_spike"
    assert bolus.details["near_bag_change"] is False


def test_rate_change_with_matching_bag_is_not_a_spike() -> None:
    bed = Bed()
    bed.bag(START + DAY_, 0.625)  # 7-day bag at 0.6 mL/h: 9 µg/day
    bed.pump(START + DAY_, 0.6, 0)
    bed.pump(START + DAY_ + 60 * MIN, 0, 0.6, "stopped")
    bed.bag(START + DAY_ + 61 * MIN, C9, "bag-24h")
    bed.pump(START + DAY_ + 62 * MIN, 10, 0.6)
    bed.pump(START + DAY_ + 92 * MIN, 10, 5.6)
    assert bed.raised(BOLUS_SUSPECTED) == []


def test_purge_is_a_bolus() -> None:
    bed = Bed()
    bed.bag(START + DAY_, C9)
    bed.pump(START + DAY_, 10, 0)
    out = bed.pump(START + DAY_ + MIN, 10, 0.2, "purging")
    assert [c.details.get("cause") for c in out if c.condition == BOLUS_SUSPECTED] == ["purge"]


def test_bag_low_with_known_volume_and_line_fill() -> None:
    bed = Bed(bag_line_fill_ml=30)
    bed.bag(START, C9, volume=270)
    bed.pump(START, 10, 0)
    assert bed.pump(START + 22 * 60 * MIN, 10, 220) == []  # 20 mL = 2 h left
    out = bed.pump(START + 23 * 60 * MIN + MIN, 10, 230.2)
    (low,) = [c for c in out if c.condition == BAG_LOW]
    assert low.priority is Priority.LOW
    assert low.details == {"bag_id": "bag"}
    cleared = bed.bag(START + 23 * 60 * MIN + 2 * MIN, C9, "bag-2", 270)
    assert [(c.condition, c.present) for c in cleared] == [(BAG_LOW, False)]


def test_infusion_after_protocol_end() -> None:
    bed = Bed()
    end = START + 14 * DAY_ / 2
    bed.bag(end - 60 * MIN, C28)
    bed.pump(end - 60 * MIN, 10, 0)
    bed.pump(end, 10, 10)
    assert bed.tick(end + 4 * MIN) == []
    (cand,) = bed.tick(end + 5 * MIN)
    assert (cand.condition, cand.priority) == (INFUSION_AFTER_PROTOCOL_END, Priority.MEDIUM)
    assert cand.details == {"protocol_end": "2026-03-16T08:00:00Z", "rule": "protocol_calendar"}
    (clear,) = bed.pump(end + 6 * MIN, 0, 10.9, "stopped")
    assert (clear.condition, clear.present) == (INFUSION_AFTER_PROTOCOL_END, False)


def test_no_interruption_outside_the_protocol() -> None:
    bed = Bed()
    bed.pump(START - 60 * MIN, 0, 0, "stopped")
    assert bed.tick(START - MIN) == []
    bed.tick(START + 15 * MIN)
    (cand,) = bed.raised(INFUSION_INTERRUPTED)
    assert cand.details["since"] == "2026-03-02T08:00:00Z"  # counted from day 1, not before


def test_cumulative_over_plan_after_grace() -> None:
    bed = Bed()
    bed.bag(START, C9 * 1.3)  # 30 % strong: 11.7 µg/day, outside the rate band too
    t = START
    volume = 0.0
    while t <= START + 25 * 60 * MIN:
        bed.pump(t, 10, volume)
        t += 30 * MIN
        volume += 5
    (high,) = bed.raised(DOSE_RATE_HIGH)
    assert high.priority is Priority.MEDIUM
    assert high.value == pytest.approx(11.7)
    (cum,) = bed.raised(CUMULATIVE_DOSE_DEVIATION)
    assert cum.details == {"direction": "over", "rule": "protocol_calendar"}
    assert cum.time == START + 24 * 60 * MIN
    assert cum.value == pytest.approx(30.0)


def test_state_round_trips_through_json() -> None:
    bed = Bed()
    bed.bag(START, C9, volume=270)
    bed.pump(START, 10, 0)
    bed.pump(START + 30 * MIN, 0, 5, "stopped")
    bed.tick(START + 50 * MIN)
    assert bed.state.active
    data = json.loads(json.dumps(bed.rule.dump(bed.state)))
    assert bed.rule.load(data) == bed.state
    assert load_state(dump_state(DoseState())) == DoseState()


def test_duplicate_and_out_of_order_readings_are_ignored() -> None:
    bed = Bed()
    bed.bag(START, C9)
    bed.pump(START, 10, 0)
    bed.pump(START + 30 * MIN, 10, 5)
    before = bed.state
    bed.pump(START + 30 * MIN, 12, 6)  # the same time again, other values
    bed.pump(START + 10 * MIN, 10, 1)
    assert bed.state.delivered_ug == before.delivered_ug
    assert bed.state == before  # the latest reading is still the one of START + 30 min
    assert bed.state.last == Reading("p1", START + 30 * MIN, PumpState.INFUSING, 10, 5)


def test_readings_of_other_beds_are_ignored() -> None:
    bed = Bed()
    bed.feed(PumpReading("w1", "b2", "p9", START, PumpState.STOPPED, 0, 0))
    assert bed.state.last is None


def test_status_lines_and_point() -> None:
    bed = Bed()
    bed.bag(START, C9)
    bed.pump(START, 10, 0)
    now = START + 4 * DAY_ / 2 + 60 * MIN
    bed.pump(now, 10, 10)
    lines = status_lines(bed.state, bed.config.beds[0], now, config=bed.config)
    text = "\n".join(lines)
    assert "protocol ssc-14d, day 5" in text
    assert "expected dose: 9.0 µg/day" in text
    assert "delivered dose: 9.0 µg/day" in text
    assert "next step: 2026-03-09 08:00 UTC" in text
    fr = "\n".join(status_lines(bed.state, bed.config.beds[0], now, config=bed.config, language="fr"))
    assert "jour 5" in fr
    assert "9,0 µg/jour" in fr
    engine = build_rules(bed.config, ["dose"])
    engine.restore({"b1": {"dose": dict(bed.rule.dump(bed.state))}})
    point = dose_point(engine, bed.config.beds[0], now, config=bed.config)
    assert point is not None
    assert point.measurement == "dose"
    assert point.fields["protocol_day"] == 5
    assert point.fields["expected_total_ug"] == pytest.approx(4 * 9 + 9 / 24)
    assert point.fields["delivered_ug_per_day"] == pytest.approx(9.0)
    assert dose_point(bed.state, bed.config.beds[0], START - MIN) is None


def test_configured_bag_is_on_the_line_at_start() -> None:
    config = parse(
        {
            "beds": [_config().beds[0].model_dump(mode="json")],
            "bags": [
                {"bed": "b1", "bag_id": "cfg-1", "concentration_ug_per_ml": C9, "hung_at": START.isoformat()}
            ],
        }
    )
    (rule,) = dose_rules(config, config.beds[0])
    state = rule.initial()
    assert isinstance(state, DoseState)
    assert state.bag is not None
    assert state.bag.bag_id == "cfg-1"


def test_the_configured_bag_is_the_beds_most_recent_one_in_full() -> None:
    newest = {
        "bed": "b1",
        "bag_id": "cfg-2",
        "concentration_ug_per_ml": C28,
        "volume_ml": 250,
        "hung_at": (START + MIN).isoformat(),
    }
    older = {"bed": "b1", "bag_id": "cfg-1", "concentration_ug_per_ml": C9, "hung_at": START.isoformat()}
    config = parse({"beds": [_config().beds[0].model_dump(mode="json")], "bags": [older, newest]})
    assert configured_bag(config, config.beds[0]) == BagHung("w1", "b1", START + MIN, "cfg-2", C28, 250)


def test_thresholds_have_issue_defaults() -> None:
    th = DoseThresholds()
    assert (th.rate_tolerance_pct, th.rate_delay_s) == (10.0, 300.0)
    assert (th.step_up_due_before_s, th.step_window_s) == (7200.0, 7200.0)
    assert (th.interruption_delay_s, th.interruption_supervised_restart_s) == (900.0, 14400.0)
    assert th.interruption_new_cycle_s == 7 * 86400.0
    assert (th.cumulative_tolerance_pct, th.bag_low_s) == (10.0, 3600.0)


# --------------------------------------------------------------------------- bag input


def test_parse_bag_accepts_the_documented_payload() -> None:
    payload = b'{"bag_id": "B-1", "concentration_ug_per_ml": 0.0375, "volume_ml": 270, "hung_at": "2026-03-02T08:00:00Z"}'
    bag = parse_bag(payload, "w1", "b1", "ward/w1/bed/b1/infusion/bag")
    assert bag == BagHung("w1", "b1", START, "B-1", 0.0375, 270.0)
    no_volume = parse_bag(
        b'{"bag_id": "B", "concentration_ug_per_ml": 1, "hung_at": "2026-03-02T09:00:00+01:00"}',
        "w1",
        "b1",
        "t",
    )
    assert no_volume.volume_ml is None
    assert no_volume.time == START


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff", "invalid_json"),
        (b"{", "invalid_json"),
        (b"[]", "not_object"),
        (
            b'{"bag_id": "B", "concentration_ug_per_ml": 1, "hung_at": "2026-03-02T08:00:00Z", "x": 1}',
            "unknown_field",
        ),
        (b'{"bag_id": "B", "hung_at": "2026-03-02T08:00:00Z"}', "missing_field"),
        (b'{"bag_id": "", "concentration_ug_per_ml": 1, "hung_at": "2026-03-02T08:00:00Z"}', "bad_bag_id"),
        (b'{"bag_id": 5, "concentration_ug_per_ml": 1, "hung_at": "2026-03-02T08:00:00Z"}', "bad_bag_id"),
        (
            b'{"bag_id": "B", "concentration_ug_per_ml": 0, "hung_at": "2026-03-02T08:00:00Z"}',
            "bad_concentration",
        ),
        (
            b'{"bag_id": "B", "concentration_ug_per_ml": true, "hung_at": "2026-03-02T08:00:00Z"}',
            "bad_concentration",
        ),
        (
            b'{"bag_id": "B", "concentration_ug_per_ml": "1", "hung_at": "2026-03-02T08:00:00Z"}',
            "bad_concentration",
        ),
        (
            b'{"bag_id": "B", "concentration_ug_per_ml": NaN, "hung_at": "2026-03-02T08:00:00Z"}',
            "invalid_json",
        ),
        (
            b'{"bag_id": "B", "concentration_ug_per_ml": 1, "volume_ml": -1, "hung_at": "2026-03-02T08:00:00Z"}',
            "bad_volume",
        ),
        (b'{"bag_id": "B", "concentration_ug_per_ml": 1, "hung_at": "2026-03-02T08:00:00"}', "bad_time"),
        (b'{"bag_id": "B", "concentration_ug_per_ml": 1, "hung_at": "yesterday"}', "bad_time"),
        (b'{"bag_id": "B", "concentration_ug_per_ml": 1, "hung_at": 5}', "bad_time"),
    ],
)
def test_parse_bag_rejects_with_stable_reasons(payload: bytes, reason: str) -> None:
    with pytest.raises(InputError) as info:
        parse_bag(payload, "w1", "b1", "ward/w1/bed/b1/infusion/bag")
    assert info.value.reason == reason
    assert info.value.where == "ward/w1/bed/b1/infusion/bag"


def test_status_lines_and_point_in_full() -> None:
    # 5 mL before any bag is known, then a 9 µg/day bag; read on day 5, one hour in:
    # expected 4 days x 9 + 9/24 = 36.375 µg; delivered 595 mL x 0.0375 = 22.3 µg.
    bed = Bed()
    bed.pump(START, 10, 0)
    bed.pump(START + 30 * MIN, 10, 5)
    bed.bag(START + 30 * MIN, C9, "d1-9ug")
    now = START + 4 * DAY_ / 2 + 60 * MIN
    bed.pump(now, 10, 600)
    b1 = bed.config.beds[0]
    assert status_lines(bed.state, b1, now, config=bed.config) == [
        "w1/b1: protocol ssc-14d, day 5",
        "  expected dose: 9.0 µg/day",
        "  delivered dose: 9.0 µg/day",
        "  expected total: 36.4 µg",
        "  delivered total: 22.3 µg (from 2026-03-02 08:00 UTC to 2026-03-06 09:00 UTC; "
        "planned over that span 36.4 µg)",
        "  next step: 2026-03-09 08:00 UTC",
        "  dose rule: protocol ssc-14d calendar",
        "  bag: d1-9ug, 0.0375 µg/mL",
        "  5.0 mL infused with no bag known",
    ]
    assert status_lines(bed.state, b1, now, config=bed.config, language="fr") == [
        "w1/b1 : protocole ssc-14d, jour 5",
        "  dose attendue : 9,0 µg/jour",
        "  dose délivrée : 9,0 µg/jour",
        "  total attendu : 36,4 µg",
        "  total délivré : 22,3 µg (du 2026-03-02 08:00 UTC au 2026-03-06 09:00 UTC; "
        "prévu sur cette période 36,4 µg)",
        "  prochain palier : 2026-03-09 08:00 UTC",
        "  règle : calendrier du protocole ssc-14d",
        "  poche : d1-9ug, 0,0375 µg/mL",
        "  5,0 mL perfusés sans poche connue",
    ]
    ended = now + 10 * DAY_  # day 25: over, and no reading for days
    assert status_lines(bed.state, b1, ended, config=bed.config)[:3] == [
        "w1/b1: protocol ssc-14d, ended 2026-03-16 08:00 UTC",
        "  expected dose: 0.0 µg/day",
        "  delivered dose: unknown (no recent reading)",
    ]
    assert status_lines(bed.state, b1, ended, config=bed.config, language="fr")[:3] == [
        "w1/b1 : protocole ssc-14d, terminé le 2026-03-16 08:00 UTC",
        "  dose attendue : 0,0 µg/jour",
        "  dose délivrée : inconnu (pas de lecture récente)",
    ]
    before = START - MIN
    assert status_lines(DoseState(), b1, before, config=bed.config)[0] == (
        "w1/b1: protocol ssc-14d, starts 2026-03-02 08:00 UTC"
    )
    assert status_lines(DoseState(), b1, before, config=bed.config, language="fr")[0] == (
        "w1/b1 : protocole ssc-14d, débute le 2026-03-02 08:00 UTC"
    )
    assert (
        status_lines(DoseState(), b1, START, config=bed.config)[4]
        == "  delivered total: no pump volume read yet"
    )
    point = dose_point(bed.state, b1, now, config=bed.config)
    assert point is not None
    assert (point.measurement, point.tags, point.time) == (
        "dose",
        {"ward": "w1", "bed": "b1", "protocol": "ssc-14d"},
        now,
    )
    assert point.fields == {
        "protocol_day": 5,
        "expected_ug_per_day": 9.0,
        "expected_total_ug": pytest.approx(36.375),
        "delivered_total_ug": pytest.approx(22.3125),
        "expected_ledger_total_ug": pytest.approx(36.375),
        "delivered_total_ml": pytest.approx(595.0),
        "unattributed_ml": pytest.approx(5.0),
        "gap_s": pytest.approx(347400.0),
        "delivered_ug_per_day": pytest.approx(9.0),
    }
