"""The nurses' entries a rule keeps (``daemon.clinical.chart``): latest value, corrections, withdrawals."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon.clinical.chart import (
    KEEP_PER_FIELD,
    Chart,
    Entry,
    change_of,
    dump_chart,
    legacy_entry,
    load_chart,
    record,
)
from daemon.events import Observation

T0 = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)


def obs(minutes: float = 0, **fields: Any) -> Observation:
    return Observation("w1", "b1", T0 + timedelta(minutes=minutes), **fields)


def chart_of(*items: tuple[Observation, dict[str, Any]]) -> Chart:
    chart = Chart()
    for o, values in items:
        chart = record(chart, o, values)
    return chart


def test_the_latest_observation_time_wins_and_on_a_tie_the_later_arrival() -> None:
    chart = chart_of(
        (obs(10, by="a"), {"ice_score": 8}),
        (obs(5, by="b"), {"ice_score": 2}),  # older, arrived later: not current
    )
    assert chart.value("ice_score") == 8
    chart = record(chart, obs(10, by="c"), {"ice_score": 9})  # same time, later arrival
    latest = chart.latest("ice_score")
    assert latest is not None
    assert (latest.by, chart.value("ice_score")) == ("c", 9)
    assert chart.latest("acvpu") is None
    assert chart.value("acvpu") is None


def test_who_when_names_the_entry() -> None:
    plain = Entry(T0, None, (), {"ice_score": 8})
    assert plain.who_when() == {"by": None, "time": "2026-03-02T20:00:00Z"}
    fixed = Entry(T0, "dr-b", ("o-1", "o-2"), {"ice_score": 8}, corrects="o-1")
    assert fixed.who_when() == {"by": "dr-b", "time": "2026-03-02T20:00:00Z", "id": "o-2", "corrects": "o-1"}


def test_a_correction_replaces_the_entry_and_answers_to_both_ids() -> None:
    chart = chart_of((obs(0, id="o-1", by="a"), {"ice_score": 8}), (obs(1, id="o-9", by="a"), {"acvpu": "A"}))
    chart = record(chart, obs(0, corrects="o-1", id="o-2", by="dr-b"), {"ice_score": 5})
    assert [(e.ids, e.values, e.corrects) for e in chart.entries] == [
        (("o-9",), {"acvpu": "A"}, None),
        (("o-1", "o-2"), {"ice_score": 5}, "o-1"),
    ]
    # A second correction naming the first id replaces the corrected entry, ids kept once each.
    chart = record(chart, obs(0, corrects="o-1", id="o-3", by="dr-c"), {"ice_score": 6})
    assert [e.ids for e in chart.entries] == [("o-9",), ("o-1", "o-2", "o-3")]
    # A withdrawal naming any of them removes it.
    chart = record(chart, obs(2, withdraws="o-2", by="dr-c"), {})
    assert [e.ids for e in chart.entries] == [("o-9",)]


def test_a_correction_of_an_unknown_id_is_kept_as_a_new_entry() -> None:
    chart = record(Chart(), obs(0, corrects="zz", id="o-2", by="dr-b"), {"ice_score": 5})
    assert [(e.ids, e.corrects) for e in chart.entries] == [(("zz", "o-2"), "zz")]
    chart = record(Chart(), obs(0, corrects="zz", by="dr-b"), {"ice_score": 5})
    assert [e.ids for e in chart.entries] == [("zz",)]


def test_a_correction_restating_nothing_for_this_rule_removes_the_entry() -> None:
    chart = chart_of((obs(0, id="o-1", by="a"), {"ice_score": 8}))
    assert record(chart, obs(0, corrects="o-1", by="b"), {}).entries == ()


def test_a_withdrawal_of_an_unknown_id_changes_nothing() -> None:
    chart = chart_of((obs(0, id="o-1", by="a"), {"ice_score": 8}))
    assert record(chart, obs(1, withdraws="zz", by="b"), {}) == chart


def test_a_repeated_id() -> None:
    chart = chart_of((obs(0, id="o-1", by="a"), {"ice_score": 8}))
    assert record(chart, obs(0, id="o-1", by="a"), {"ice_score": 8}) is chart  # the same entry again
    # Same id, other time or other content: kept, without the id (it names the first entry).
    for again, values in [(obs(1, id="o-1"), {"ice_score": 8}), (obs(0, id="o-1"), {"ice_score": 7})]:
        after = record(chart, again, values)
        assert [e.ids for e in after.entries] == [("o-1",), ()]
    # An observation with nothing for this rule adds nothing.
    assert record(chart, obs(1, id="o-5"), {}) == chart


def test_the_latest_entries_per_field_are_kept() -> None:
    """KEEP_PER_FIELD (8) per field: enough to fall back over a few withdrawals."""
    assert KEEP_PER_FIELD == 8
    chart = Chart()
    for m in range(10):
        chart = record(chart, obs(m, id=f"i{m}"), {"ice_score": m})
    chart = record(chart, obs(-5, id="old-acvpu"), {"acvpu": "V"})  # older, but the only one of its field
    assert [e.ids for e in chart.entries] == [(f"i{m}",) for m in range(2, 10)] + [("old-acvpu",)]
    # Kept by observation time, not arrival.
    chart = record(chart, obs(1.5, id="late"), {"ice_score": 0})
    assert ("late",) not in [e.ids for e in chart.entries]
    chart = record(chart, obs(9.5, id="new"), {"ice_score": 0})
    assert chart.entries[0].ids == ("i3",)
    # Fewer entries are all kept.
    small = record(Chart(), obs(0), {"ice_score": 1})
    assert len(record(small, obs(1), {"ice_score": 2}, keep=2).entries) == 2
    assert len(record(small, obs(1), {"ice_score": 2}, keep=1).entries) == 1


def test_change_of_names_a_correction_or_a_withdrawal() -> None:
    assert change_of(obs(0, withdraws="o-1", by="b")) == {
        "withdraws": "o-1",
        "by": "b",
        "time": "2026-03-02T20:00:00Z",
    }
    assert change_of(obs(1, corrects="o-1", by="c")) == {
        "corrects": "o-1",
        "by": "c",
        "time": "2026-03-02T20:01:00Z",
    }
    assert change_of(obs(0, id="o-1", by="a")) is None


def test_dump_and_load() -> None:
    chart = chart_of(
        (obs(0, id="o-1", by="a"), {"raised_icp": ("focal_oedema",), "ice_score": 8}),
        (obs(1, corrects="o-1", by="b"), {"raised_icp": (), "ice_score": 9}),
        (obs(2), {"acvpu": "V"}),
    )
    data = json.loads(json.dumps(dump_chart(chart)))
    assert data == [
        {
            "time": "2026-03-02T20:01:00Z",
            "by": "b",
            "ids": ["o-1"],
            "values": {"raised_icp": [], "ice_score": 9},
            "corrects": "o-1",
        },
        {"time": "2026-03-02T20:02:00Z", "by": None, "ids": [], "values": {"acvpu": "V"}, "corrects": None},
    ]
    assert load_chart(data) == chart
    # Entries without a time are dropped; missing parts load as empty.
    assert load_chart([{"values": {"ice_score": 1}}, {"time": "2026-03-02T20:00:00Z"}]) == Chart(
        (Entry(T0, None, (), {}),)
    )
    assert load_chart(None) == Chart()


def test_legacy_entries() -> None:
    """The ``[value, time]`` pairs saved before charts, author unknown."""
    assert legacy_entry("ice_score", [5, "2026-03-02T20:00:00Z"]) == Entry(T0, None, (), {"ice_score": 5})
    assert legacy_entry("ice_score", None) is None
    assert legacy_entry("ice_score", []) is None
    assert legacy_entry("ice_score", [5, None]) is None
