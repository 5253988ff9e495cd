"""The router's parts one at a time, on alerts made by hand: the notices' wording and
body, the stored rows, routes, levels, failures, repeats, groups, digests, inhibition and
quiet periods at their edges. The golden cases (``tests/test_routing.py``) check who is
told of what and when; these check what the cases' one-line summary does not show.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.alerts import Alert, AlertState, Phase, Transition
from daemon.config import QuietConfig, parse
from daemon.delivery.routing import (
    ALERT_KEY_PREFIX,
    GROUPS_KEY,
    Decision,
    Group,
    Held,
    Notice,
    NoticeKind,
    Router,
    Track,
    Tracks,
    in_period,
)
from daemon.events import Kind, Priority, Text

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
RECEIVERS = ("n0", "c1", "d2")


def alert(
    condition: str = "FEVER",
    bed: str = "b1",
    *,
    ward: str = "w1",
    priority: Priority = Priority.MEDIUM,
    state: AlertState = AlertState.ACTIVE,
    phase: Phase = Phase.START,
    kind: Kind = Kind.PHYSIOLOGICAL,
    at: datetime = T0,
    seq: int = 1,
    **extra: Any,
) -> Alert:
    """An alert as the alert engine would make it."""
    fields: dict[str, Any] = {
        "id": f"{bed}-{condition}-{seq}",
        "condition": condition,
        "kind": kind,
        "priority": priority,
        "state": state,
        "phase": phase,
        "ward": ward,
        "bed": bed,
        "value": 38.4,
        "unit": "°C",
        "since": at,
        "updated": at,
        "active_since": at,
        "message": Text(f"{condition} en", f"{condition} fr"),
        **extra,
    }
    return Alert(**fields)


def router(
    *, routes: list[dict[str, Any]] | None = None, cls: type[Router] = Router, **routing: Any
) -> Router:
    """A router over receivers n0, c1, d2; by default one route ``all`` with a level each,
    no grouping window and no repeats (``cls``: a subclass to build instead)."""
    config = parse(
        {
            "receivers": [
                {"name": n, "type": "webhook", "url": f"http://127.0.0.1:9/{n}", "secret": {"value": "k"}}
                for n in RECEIVERS
            ],
            "routes": routes or [{"name": "all", "levels": [["n0"], ["c1"], ["d2"]], "repeat_after_s": 0}],
            "routing": {"group_window_s": 0, **routing},
        }
    )
    return cls(config.routing, config.routes)


def start(r: Router, a: Alert, now: datetime = T0) -> list[Notice]:
    return r.transition(Transition(a, None if a.phase is Phase.START else AlertState.ACTIVE), now)


def told(n: Notice) -> tuple[Any, ...]:
    """What a notice says and to whom: kind, route, level, receivers, ward, bed, alerts, time, reason."""
    return (n.kind, n.route, n.level, n.receivers, n.ward, n.bed, n.alerts, n.at, n.reason)


def then(r: Router, a: Alert, now: datetime) -> list[Notice]:
    return r.transition(Transition(a, None if a.phase is Phase.START else AlertState.ACTIVE), now)


# --- the notice's words ---------------------------------------------------------------------


def notice(kind: NoticeKind, *alerts: Alert, bed: str = "b1", reason: Text | None = None) -> Notice:
    return Notice(kind, "all", 1, ("n0",), "w1", bed, alerts, T0, reason)


@pytest.mark.parametrize(
    ("kind", "en", "fr"),
    [
        (NoticeKind.ALERT, "MEDIUM FEVER, bed b1 (w1)", "MEDIUM FEVER, lit b1 (w1)"),
        (NoticeKind.WORSE, "Worse: MEDIUM FEVER, bed b1 (w1)", "Aggravation : MEDIUM FEVER, lit b1 (w1)"),
        (
            NoticeKind.ESCALATION,
            "Escalated: MEDIUM FEVER, bed b1 (w1)",
            "Escalade : MEDIUM FEVER, lit b1 (w1)",
        ),
        (NoticeKind.REPEAT, "Reminder: MEDIUM FEVER, bed b1 (w1)", "Rappel : MEDIUM FEVER, lit b1 (w1)"),
        (NoticeKind.CLOSING, "Closed: MEDIUM FEVER, bed b1 (w1)", "Close : MEDIUM FEVER, lit b1 (w1)"),
        (
            NoticeKind.DIGEST,
            "Quiet-period digest: MEDIUM FEVER, bed b1 (w1)",
            "Résumé de la période calme : MEDIUM FEVER, lit b1 (w1)",
        ),
    ],
)
def test_the_title_says_why_what_and_where_in_both_languages(kind: NoticeKind, en: str, fr: str) -> None:
    assert notice(kind, alert()).title() == Text(en, fr)


def test_the_title_of_several_alerts_counts_them() -> None:
    two = notice(NoticeKind.ALERT, alert(), alert("TACHYCARDIA", priority=Priority.HIGH))
    assert two.title() == Text("2 alerts, bed b1 (w1)", "2 alertes, lit b1 (w1)")


def test_the_title_of_a_digest_of_several_beds_names_the_ward() -> None:
    digest = notice(NoticeKind.DIGEST, alert(), alert(bed="b2"), bed="")
    assert digest.title() == Text(
        "Quiet-period digest: 2 alerts, ward w1", "Résumé de la période calme : 2 alertes, service w1"
    )


def test_the_title_names_the_first_alerts_priority_in_capitals() -> None:
    assert notice(NoticeKind.ALERT, alert(priority=Priority.HIGH)).title().en == "HIGH FEVER, bed b1 (w1)"


def test_the_text_has_one_line_per_alert_with_its_state_and_id() -> None:
    text = notice(
        NoticeKind.ALERT, alert(), alert("HYPOXIA", priority=Priority.HIGH, state=AlertState.LATCHED)
    ).text()
    assert text == Text(
        "[medium] FEVER bed b1: FEVER en (active, not acknowledged; id b1-FEVER-1)\n"
        "[high] HYPOXIA bed b1: HYPOXIA en (condition ended, not acknowledged; id b1-HYPOXIA-1)",
        "[medium] FEVER lit b1 : FEVER fr (active, non acquittée ; id b1-FEVER-1)\n"
        "[high] HYPOXIA lit b1 : HYPOXIA fr (condition terminée, non acquittée ; id b1-HYPOXIA-1)",
    )


def test_the_text_starts_with_the_reason() -> None:
    text = notice(NoticeKind.ESCALATION, alert(), reason=Text("Why.", "Pourquoi.")).text()
    assert text.en.split("\n") == [
        "Why.",
        "[medium] FEVER bed b1: FEVER en (active, not acknowledged; id b1-FEVER-1)",
    ]
    assert text.fr.split("\n")[0] == "Pourquoi."


@pytest.mark.parametrize(
    ("acked_by", "acked_name", "en", "fr"),
    [
        ("nurse-1", "Anne Martin", "acknowledged by Anne Martin;", "acquittée par Anne Martin ;"),
        ("nurse-1", None, "acknowledged by nurse-1;", "acquittée par nurse-1 ;"),
        (None, None, "acknowledged;", "acquittée ;"),
        # A display name without an authenticated user is not an author.
        (None, "Anne Martin", "acknowledged;", "acquittée ;"),
    ],
)
def test_the_text_names_who_acknowledged(
    acked_by: str | None, acked_name: str | None, en: str, fr: str
) -> None:
    acked = alert(state=AlertState.ACKNOWLEDGED, acked_by=acked_by, acked_name=acked_name)
    text = notice(NoticeKind.CLOSING, acked).text()
    assert f"({en} id b1-FEVER-1)" in text.en
    assert f"({fr} id b1-FEVER-1)" in text.fr


def test_the_text_of_a_resolved_alert() -> None:
    text = notice(NoticeKind.DIGEST, alert(state=AlertState.RESOLVED)).text()
    assert text == Text(
        "[medium] FEVER bed b1: FEVER en (resolved; id b1-FEVER-1)",
        "[medium] FEVER lit b1 : FEVER fr (terminée ; id b1-FEVER-1)",
    )


@pytest.mark.parametrize("language", ["en", "fr"])
def test_the_body_is_the_webhooks_json(language: str) -> None:
    a, b = alert(), alert("TACHYCARDIA", bed="b1", seq=2)
    n = Notice(NoticeKind.REPEAT, "haem", 2, ("c1",), "w1", "b1", (a, b), T0 + timedelta(seconds=1.5))
    body = n.body(language)
    assert body == {
        "notice": "repeat",
        "route": "haem",
        "level": 2,
        "ward": "w1",
        "bed": "b1",
        "at": "2026-03-02T12:00:01.500000Z",
        "title": n.title().get(language),
        "text": n.text().get(language),
        "alerts": [a.to_payload(language), b.to_payload(language)],
    }
    assert body["alerts"][0]["message"] == f"FEVER {language}"
    json.dumps(body)  # plain JSON


# --- what is stored ---------------------------------------------------------------------------


def test_a_track_round_trips_through_its_row() -> None:
    track = Track(
        alert(state=AlertState.LATCHED, phase=Phase.LATCH),
        "all",
        level=2,
        told=("n0", "c1"),
        last_at=T0 + timedelta(seconds=7),
        held=Held.QUIET,
        closing_sent=True,
    )
    data = track.dump()
    assert data == {
        "alert": track.alert.dump(),
        "route": "all",
        "level": 2,
        "told": ["n0", "c1"],
        "last_at": "2026-03-02T12:00:07Z",
        "held": "quiet",
        "closing_sent": True,
    }
    assert Track.load(json.loads(json.dumps(data))) == track


def test_a_fresh_track_round_trips_with_its_defaults() -> None:
    track = Track(alert(), None)
    data = track.dump()
    assert (
        data["route"],
        data["level"],
        data["told"],
        data["last_at"],
        data["held"],
        data["closing_sent"],
    ) == (
        None,
        0,
        [],
        None,
        None,
        False,
    )
    assert Track.load(data) == track


def test_a_row_without_its_optional_keys_loads_with_the_defaults() -> None:
    track = Track.load({"alert": alert().dump()})
    assert track == Track(alert(), None, level=0, told=(), last_at=None, held=None, closing_sent=False)


def test_a_row_with_a_bad_held_value_is_malformed() -> None:
    with pytest.raises(ValueError, match="waiting"):
        Track.load({"alert": alert().dump(), "held": "waiting"})


def test_take_changed_gives_each_changed_row_once_and_deletions_as_none() -> None:
    r = router(group_window_s=10)
    a = alert()
    start(r, a)
    rows = r.take_changed()
    assert set(rows) == {GROUPS_KEY, ALERT_KEY_PREFIX + a.id}
    assert json.loads(rows[GROUPS_KEY] or "") == [
        {"ward": "w1", "bed": "b1", "route": "all", "opened": "2026-03-02T12:00:00Z", "ids": [a.id]}
    ]
    assert json.loads(rows[ALERT_KEY_PREFIX + a.id] or "") == r.tracks[a.id].dump()
    assert r.take_changed() == {}
    then(r, alert(state=AlertState.RESOLVED, phase=Phase.END), T0 + timedelta(seconds=1))
    rows = r.take_changed()
    assert rows[ALERT_KEY_PREFIX + a.id] is None
    assert json.loads(rows[GROUPS_KEY] or "") == []


def test_restore_puts_back_tracks_and_groups() -> None:
    r = router(group_window_s=10)
    a, b = alert(), alert("HYPOXIA", bed="b2")
    start(r, a)
    start(r, b, T0 + timedelta(seconds=3))
    rows = {k: v for k, v in r.take_changed().items() if v is not None}
    again = router(group_window_s=10)
    assert again.restore(rows) == []
    assert again.tracks == r.tracks
    assert again.groups == r.groups
    assert again.groups[("w1", "b2", "all")] == Group("w1", "b2", "all", T0 + timedelta(seconds=3), (b.id,))


def test_restore_sends_an_alert_of_a_removed_route_where_it_now_goes() -> None:
    old = router(routes=[{"name": "gone", "levels": [["n0"]]}, {"name": "all", "levels": [["c1"]]}])
    a = alert()
    start(old, a)
    rows = {k: v for k, v in old.take_changed().items() if v is not None}
    assert old.tracks[a.id].route == "gone"
    new = router(
        routes=[
            {"name": "kept", "conditions": ["HYPOXIA"], "levels": [["d2"]]},
            {"name": "all", "levels": [["c1"]]},
        ]
    )
    assert new.restore(rows) == []
    assert new.tracks[a.id].route == "all"
    assert new.tracks[a.id].told == ("n0",)  # who was told stays told


def test_restore_keeps_an_unrouted_alert_unrouted_and_a_kept_route() -> None:
    r = router(routes=[{"name": "hyp", "conditions": ["HYPOXIA"], "levels": [["n0"]]}])
    a, b = alert(), alert("HYPOXIA")
    start(r, a)
    start(r, b)
    rows = {k: v for k, v in r.take_changed().items() if v is not None}
    again = router(routes=[{"name": "hyp", "levels": [["c1"]]}])
    assert again.restore(rows) == []
    assert (again.tracks[a.id].route, again.tracks[b.id].route) == (None, "hyp")


@pytest.mark.parametrize(
    ("key", "text", "error"),
    [
        ("alert:x", "{}", "alert:x: 'alert'"),
        ("alert:x", '{"alert": {}}', "alert:x: bad_alert: KeyError: 'value'"),
        ("alert:x", "[]", "alert:x: a track is a JSON object, not list"),
        ("alert:x", "5", "alert:x: a track is a JSON object, not int"),
        ("groups", '[{"ward": "w1"}]', "groups: 'bed'"),
        ("groups", "{not json", "groups: Expecting property name"),
        ("groups", '[{"ward": "w1", "bed": "b1", "route": "all", "opened": "then", "ids": []}]', "groups: "),
        ("groups", "[1]", "groups: "),
    ],
)
def test_each_unreadable_row_is_named_and_the_others_are_restored(key: str, text: str, error: str) -> None:
    r = router()
    good = Track(alert(), "all", told=("n0",))
    bad = r.restore({key: text, ALERT_KEY_PREFIX + good.alert.id: json.dumps(good.dump())})
    assert len(bad) == 1
    assert bad[0].startswith(error)
    assert r.tracks == {good.alert.id: good}


# --- routes and levels ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "match", "miss"),
    [
        ("wards", {"ward": "w1"}, {"ward": "w2"}),
        ("beds", {"bed": "b1"}, {"bed": "b2"}),
        ("conditions", {"condition": "FEVER"}, {"condition": "HYPOXIA"}),
        ("kinds", {"kind": Kind.TECHNICAL}, {"kind": Kind.PHYSIOLOGICAL}),
        ("priorities", {"priority": Priority.HIGH}, {"priority": Priority.LOW}),
    ],
)
def test_each_list_of_a_route_must_match(field: str, match: dict[str, Any], miss: dict[str, Any]) -> None:
    values = {
        "wards": ["w1"],
        "beds": ["b1"],
        "conditions": ["FEVER"],
        "kinds": ["technical"],
        "priorities": ["high"],
    }
    r = router(
        routes=[
            {"name": "picky", field: values[field], "levels": [["n0"]]},
            {"name": "rest", "levels": [["c1"]]},
        ]
    )
    base = {
        "ward": "w1",
        "bed": "b1",
        "condition": "FEVER",
        "kind": Kind.TECHNICAL,
        "priority": Priority.HIGH,
    }
    hit, other = {**base, **match}, {**base, **miss}
    assert r.match_route(alert(hit.pop("condition"), hit.pop("bed"), **hit)) == "picky"
    assert r.match_route(alert(other.pop("condition"), other.pop("bed"), **other)) == "rest"


def test_a_route_with_every_list_set_takes_only_what_matches_them_all() -> None:
    r = router(
        routes=[
            {
                "name": "picky",
                "wards": ["w1"],
                "beds": ["b1"],
                "conditions": ["FEVER"],
                "kinds": ["physiological"],
                "priorities": ["medium"],
                "levels": [["n0"]],
            }
        ]
    )
    assert r.match_route(alert()) == "picky"
    assert r.match_route(alert(ward="w2")) is None
    assert r.match_route(alert(bed="b2")) is None
    assert r.match_route(alert("HYPOXIA")) is None
    assert r.match_route(alert(kind=Kind.TECHNICAL)) is None
    assert r.match_route(alert(priority=Priority.LOW)) is None


def test_the_first_matching_route_takes_the_alert() -> None:
    r = router(routes=[{"name": "one", "levels": [["n0"]]}, {"name": "two", "levels": [["c1"]]}])
    assert r.match_route(alert()) == "one"
    [n] = start(r, alert())
    assert (n.route, n.receivers) == ("one", ("n0",))


def test_an_unrouted_alert_is_a_decision_and_tells_nobody() -> None:
    r = router(routes=[{"name": "hyp", "conditions": ["HYPOXIA"], "levels": [["n0"]]}])
    a = alert()
    assert start(r, a) == []
    assert r.decisions == [Decision("unrouted", a.id, "FEVER")]
    assert r.tracks[a.id].route is None
    assert ALERT_KEY_PREFIX + a.id in r.changed


def test_the_first_notice_is_an_alert_to_level_0() -> None:
    r = router()
    a = alert()
    [n] = start(r, a, T0 + timedelta(seconds=5))
    assert told(n) == (NoticeKind.ALERT, "all", 0, ("n0",), "w1", "b1", (a,), T0 + timedelta(seconds=5), None)
    assert r.tracks[a.id] == Track(a, "all", 0, ("n0",), T0 + timedelta(seconds=5), None, False)


@pytest.mark.parametrize("state", [AlertState.ACKNOWLEDGED, AlertState.RESOLVED])
def test_an_alert_that_starts_closed_or_acknowledged_tells_nobody(state: AlertState) -> None:
    r = router()
    assert start(r, alert(state=state)) == []


def test_a_latched_alert_at_start_is_told() -> None:
    r = router()
    assert len(start(r, alert(state=AlertState.LATCHED))) == 1


def test_beyond_the_last_level_the_last_level_is_told_again() -> None:
    r = router(routes=[{"name": "all", "levels": [["n0"], ["c1", "d2"]], "repeat_after_s": 0}])
    a = alert(priority=Priority.HIGH)
    start(r, a)
    levels = []
    for level in (1, 2, 3):
        overdue = alert(priority=Priority.HIGH, phase=Phase.OVERDUE, escalation_level=level)
        [n] = then(r, overdue, T0 + timedelta(minutes=5 * level))
        levels.append((n.kind, n.level, n.receivers))
    assert levels == [
        (NoticeKind.ESCALATION, 1, ("c1", "d2")),
        (NoticeKind.ESCALATION, 2, ("c1", "d2")),
        (NoticeKind.ESCALATION, 3, ("c1", "d2")),
    ]
    assert r.tracks[a.id].told == ("n0", "c1", "d2")


def test_an_escalation_says_how_long_and_which_level() -> None:
    r = router()
    start(r, alert(priority=Priority.HIGH))
    overdue = alert(priority=Priority.HIGH, phase=Phase.OVERDUE, escalation_level=1)
    [n] = then(r, overdue, T0 + timedelta(seconds=329))
    assert n.reason == Text(
        "Not acknowledged for 5 min: escalation level 1.", "Non acquittée depuis 5 min : niveau d'escalade 1."
    )
    [n2] = then(r, replace_alert(overdue, escalation_level=2), T0 + timedelta(seconds=631))
    assert n2.reason is not None
    assert n2.reason.en == "Not acknowledged for 11 min: escalation level 2."


def replace_alert(a: Alert, **changes: Any) -> Alert:
    from daemon.frozen import replace  # noqa: PLC0415

    return replace(a, **changes)


def test_an_overdue_level_not_above_the_told_one_sends_nothing() -> None:
    r = router()
    a = alert(priority=Priority.HIGH)
    start(r, a)
    r.failed([a.id], 0, "n0", T0 + timedelta(seconds=1))  # now at level 1
    assert then(r, replace_alert(a, phase=Phase.OVERDUE, escalation_level=1), T0 + timedelta(minutes=5)) == []
    assert r.tracks[a.id].level == 1
    [n] = then(r, replace_alert(a, phase=Phase.OVERDUE, escalation_level=2), T0 + timedelta(minutes=10))
    assert (n.kind, n.level) == (NoticeKind.ESCALATION, 2)


def test_an_overdue_alert_never_told_keeps_its_level_for_later() -> None:
    r = router(quiet=[{"start": "11:00", "end": "13:00", "priorities": ["low", "medium"]}])
    a = alert()
    assert start(r, a) == []
    assert then(r, replace_alert(a, phase=Phase.OVERDUE, escalation_level=1), T0 + timedelta(minutes=5)) == []
    assert r.tracks[a.id].level == 1
    assert r.tracks[a.id].held is Held.QUIET


# --- failed deliveries ------------------------------------------------------------------------


def test_a_failed_delivery_tells_the_next_level_at_once_and_says_why() -> None:
    r = router()
    a = alert()
    start(r, a)
    [n] = r.failed([a.id], 0, "n0", T0 + timedelta(seconds=30))
    assert (n.kind, n.level, n.receivers, n.at) == (
        NoticeKind.ESCALATION,
        1,
        ("c1",),
        T0 + timedelta(seconds=30),
    )
    assert n.reason == Text(
        "Delivery to n0 failed; told to the next level.",
        "Échec de l'envoi à n0 ; transmis au niveau suivant.",
    )
    assert r.tracks[a.id].level == 1
    assert r.tracks[a.id].told == ("n0", "c1")


def test_a_failure_at_a_level_the_alert_has_left_changes_nothing() -> None:
    r = router()
    a = alert()
    start(r, a)
    r.failed([a.id], 0, "n0", T0)
    assert r.failed([a.id], 0, "n0", T0) == []  # already at level 1
    [n] = r.failed([a.id], 1, "c1", T0)
    assert (n.level, n.receivers) == (2, ("d2",))


def test_a_failure_at_the_last_level_tells_nobody_more() -> None:
    r = router(routes=[{"name": "all", "levels": [["n0"], ["c1"]], "repeat_after_s": 0}])
    a = alert()
    start(r, a)
    [n] = r.failed([a.id], 0, "n0", T0)
    assert n.level == 1
    assert r.failed([a.id], 1, "c1", T0) == []
    assert r.tracks[a.id].level == 1


def test_a_failure_of_a_closed_unknown_or_unrouted_alert_tells_nobody() -> None:
    r = router(routes=[{"name": "hyp", "conditions": ["HYPOXIA"], "levels": [["n0"], ["c1"]]}])
    unrouted = alert()
    start(r, unrouted)
    assert r.failed([unrouted.id, "b9-NOPE-1"], 0, "n0", T0) == []
    closed = alert("HYPOXIA", state=AlertState.RESOLVED)
    r.tracks[closed.id] = Track(closed, "hyp", told=("n0",))
    assert r.failed([closed.id], 0, "n0", T0) == []


def test_a_failure_whose_route_is_gone_tells_nobody() -> None:
    r = router()
    a = alert()
    r.tracks[a.id] = Track(a, "gone", told=("n0",))
    assert r.failed([a.id], 0, "n0", T0) == []


def test_a_failure_about_several_alerts_tells_each_ones_next_level() -> None:
    r = router()
    a, b = alert(), alert("TACHYCARDIA")
    start(r, a)
    start(r, b)
    notices = r.failed([a.id, b.id], 0, "n0", T0)
    assert [(n.alerts[0].id, n.level) for n in notices] == [(a.id, 1), (b.id, 1)]


# --- later transitions ---------------------------------------------------------------------


def test_a_rise_is_told_as_worse_at_the_current_level() -> None:
    r = router()
    a = alert()
    start(r, a)
    r.failed([a.id], 0, "n0", T0)
    worse = alert(priority=Priority.HIGH, phase=Phase.ESCALATE)
    [n] = then(r, worse, T0 + timedelta(seconds=9))
    assert (n.kind, n.level, n.receivers, n.alerts, n.reason) == (
        NoticeKind.WORSE,
        1,
        ("c1",),
        (worse,),
        None,
    )
    assert r.tracks[a.id].last_at == T0 + timedelta(seconds=9)


def test_a_reactivation_after_a_closing_notice_can_be_closed_again() -> None:
    r = router()
    a = alert(priority=Priority.HIGH)
    start(r, a)
    acked = alert(priority=Priority.HIGH, state=AlertState.ACKNOWLEDGED, phase=Phase.ACK, acked_by="nurse-1")
    [closing] = then(r, acked, T0 + timedelta(seconds=1))
    assert closing.kind is NoticeKind.CLOSING
    assert r.tracks[a.id].closing_sent
    back = alert(priority=Priority.HIGH, phase=Phase.REACTIVATE)
    [worse] = then(r, back, T0 + timedelta(seconds=2))
    assert worse.kind is NoticeKind.WORSE
    assert r.tracks[a.id].closing_sent is False
    assert r.tracks[a.id].dump()["closing_sent"] is False
    [again] = then(
        r,
        alert(priority=Priority.HIGH, state=AlertState.RESOLVED, phase=Phase.ACK),
        T0 + timedelta(seconds=3),
    )
    assert again.kind is NoticeKind.CLOSING


def test_a_rise_of_an_alert_held_in_a_quiet_period_is_decided_again() -> None:
    r = router(quiet=[{"start": "11:00", "end": "13:00"}])
    low = alert(priority=Priority.LOW)
    assert start(r, low) == []
    assert r.tracks[low.id].held is Held.QUIET
    [n] = then(r, alert(priority=Priority.HIGH, phase=Phase.ESCALATE), T0 + timedelta(seconds=5))
    assert (n.kind, n.level, n.receivers) == (NoticeKind.ALERT, 0, ("n0",))
    assert r.tracks[low.id].held is None


def test_a_rise_of_an_unrouted_alert_is_routed_again() -> None:
    r = router(routes=[{"name": "high", "priorities": ["high"], "levels": [["n0"]]}])
    a = alert()
    assert start(r, a) == []
    [n] = then(r, alert(priority=Priority.HIGH, phase=Phase.ESCALATE), T0 + timedelta(seconds=5))
    assert (n.kind, n.route) == (NoticeKind.ALERT, "high")


def test_a_change_while_grouped_waits_for_the_group_in_its_latest_form() -> None:
    r = router(group_window_s=10)
    start(r, alert())
    worse = alert(priority=Priority.HIGH, phase=Phase.ESCALATE)
    assert then(r, worse, T0 + timedelta(seconds=2)) == []
    [n] = r.tick(T0 + timedelta(seconds=10))
    assert n.alerts == (worse,)


@pytest.mark.parametrize("phase", [Phase.UPDATE, Phase.DEESCALATE, Phase.LATCH])
def test_an_update_deescalation_or_latch_pages_nobody(phase: Phase) -> None:
    r = router()
    start(r, alert(priority=Priority.HIGH))
    changed = alert(priority=Priority.HIGH, phase=phase)
    assert then(r, changed, T0 + timedelta(seconds=1)) == []
    assert r.tracks[changed.id].alert == changed


# --- closing ------------------------------------------------------------------------------------


def test_the_closing_notice_goes_to_everyone_told_and_names_who_acknowledged() -> None:
    r = router()
    a = alert()
    start(r, a)
    r.failed([a.id], 0, "n0", T0)
    acked = alert(
        state=AlertState.ACKNOWLEDGED, phase=Phase.ACK, acked_by="nurse-1", acked_name="Anne Martin"
    )
    [n] = then(r, acked, T0 + timedelta(seconds=4))
    assert (n.kind, n.level, n.receivers) == (NoticeKind.CLOSING, 1, ("n0", "c1"))
    assert n.reason == Text("Acknowledged by Anne Martin.", "Acquittée par Anne Martin.")
    assert r.tracks[a.id].last_at == T0 + timedelta(seconds=4)
    assert then(r, alert(state=AlertState.RESOLVED, phase=Phase.END), T0 + timedelta(seconds=5)) == []
    assert a.id not in r.tracks


def test_an_acknowledgement_without_a_display_name_names_the_user() -> None:
    r = router()
    start(r, alert())
    [n] = then(r, alert(state=AlertState.ACKNOWLEDGED, phase=Phase.ACK, acked_by="nurse-1"), T0)
    assert n.reason == Text("Acknowledged by nurse-1.", "Acquittée par nurse-1.")


def test_a_resolved_alert_closes_as_resolved() -> None:
    r = router()
    start(r, alert())
    [n] = then(r, alert(state=AlertState.RESOLVED, phase=Phase.END, acked_by="nurse-1"), T0)
    assert n.reason == Text("Resolved.", "Terminée.")


def test_an_acknowledgement_without_an_author_closes_as_resolved() -> None:
    r = router()
    start(r, alert())
    [n] = then(r, alert(state=AlertState.ACKNOWLEDGED, phase=Phase.ACK), T0)
    assert n.reason == Text("Resolved.", "Terminée.")


def test_an_alert_closed_while_grouped_is_dropped_from_its_group() -> None:
    r = router(group_window_s=10)
    a, b = alert(), alert("TACHYCARDIA")
    start(r, a)
    start(r, b, T0 + timedelta(seconds=1))
    assert (
        then(
            r, alert(state=AlertState.ACKNOWLEDGED, phase=Phase.ACK, acked_by="n"), T0 + timedelta(seconds=2)
        )
        == []
    )
    assert Decision("dropped", a.id, "group") in r.decisions
    assert r.groups[("w1", "b1", "all")].ids == (b.id,)
    assert r.tracks[a.id].held is None
    [n] = r.tick(T0 + timedelta(seconds=10))
    assert n.alerts == (b,)


def test_the_last_alert_of_a_group_closed_removes_the_group() -> None:
    r = router(group_window_s=10)
    a = alert()
    start(r, a)
    r.take_changed()
    assert then(r, alert(state=AlertState.RESOLVED, phase=Phase.END), T0 + timedelta(seconds=2)) == []
    assert r.groups == {}
    assert GROUPS_KEY in r.take_changed()
    assert r.tick(T0 + timedelta(seconds=10)) == []


def test_a_quiet_alert_closed_meanwhile_waits_for_the_digest() -> None:
    r = router(quiet=[{"start": "11:00", "end": "13:00"}])
    low = alert(priority=Priority.LOW)
    start(r, low)
    closed = alert(priority=Priority.LOW, state=AlertState.RESOLVED, phase=Phase.END)
    assert then(r, closed, T0 + timedelta(seconds=1)) == []
    assert r.tracks[low.id] == Track(closed, "all", held=Held.QUIET)


# --- repeats --------------------------------------------------------------------------------------


def repeating(**routing: Any) -> Router:
    return router(routes=[{"name": "all", "levels": [["n0"], ["c1"]], "repeat_after_s": 600}], **routing)


def test_a_repeat_comes_repeat_after_s_after_the_last_notice_not_a_second_before() -> None:
    r = repeating()
    a = alert()
    start(r, a)
    assert r.tick(T0 + timedelta(seconds=599.999)) == []
    [n] = r.tick(T0 + timedelta(seconds=600))
    assert (n.kind, n.level, n.receivers, n.alerts) == (NoticeKind.REPEAT, 0, ("n0",), (a,))
    assert r.tick(T0 + timedelta(seconds=1199)) == []
    assert len(r.tick(T0 + timedelta(seconds=1200))) == 1


def test_a_repeat_goes_to_the_current_level() -> None:
    r = repeating()
    a = alert()
    start(r, a)
    r.failed([a.id], 0, "n0", T0 + timedelta(seconds=100))
    assert r.tick(T0 + timedelta(seconds=600)) == []  # the escalation was the last notice
    [n] = r.tick(T0 + timedelta(seconds=700))
    assert (n.level, n.receivers) == (1, ("c1",))


def test_a_latched_alert_is_repeated() -> None:
    r = repeating()
    start(r, alert(priority=Priority.HIGH))
    then(r, alert(priority=Priority.HIGH, state=AlertState.LATCHED, phase=Phase.LATCH), T0)
    assert len(r.tick(T0 + timedelta(seconds=600))) == 1


def test_an_acknowledged_alert_is_not_repeated() -> None:
    r = repeating()
    start(r, alert())
    then(r, alert(state=AlertState.ACKNOWLEDGED, phase=Phase.ACK, acked_by="n"), T0)
    assert r.tick(T0 + timedelta(hours=1)) == []


def test_no_repeat_with_repeat_after_s_0_or_without_a_route() -> None:
    r = router()
    start(r, alert())
    assert r.tick(T0 + timedelta(days=1)) == []
    u = repeating()
    a = alert()
    u.tracks[a.id] = Track(a, "gone", told=("n0",), last_at=T0)
    assert u.tick(T0 + timedelta(days=1)) == []


def test_no_repeat_of_a_held_or_never_told_alert() -> None:
    r = repeating()
    a = alert()
    r.tracks[a.id] = Track(a, "all", told=("n0",), last_at=T0, held=Held.INHIBITED)
    b = alert("TACHYCARDIA")
    r.tracks[b.id] = Track(b, "all", told=(), last_at=T0)
    c = alert("HYPOXIA")
    r.tracks[c.id] = Track(c, "all", told=("n0",), last_at=None)
    assert r.tick(T0 + timedelta(days=1)) == []


def test_no_repeat_of_a_quiet_priority_in_a_quiet_period() -> None:
    r = repeating(quiet=[{"start": "12:05", "end": "13:00"}])
    start(r, alert(priority=Priority.LOW))
    assert r.tick(T0 + timedelta(seconds=600)) == []  # 12:10, quiet
    assert len(r.tick(T0 + timedelta(hours=1))) == 1  # 13:00, over


def test_no_repeat_while_inhibited() -> None:
    r = repeating(inhibit=[{"source": "CRS_SUSPECTED", "targets": ["FEVER"]}])
    start(r, alert())
    start(r, alert("CRS_SUSPECTED"), T0 + timedelta(seconds=1))
    notices = r.tick(T0 + timedelta(seconds=600))
    assert [n.alerts[0].condition for n in notices] == []
    assert [n.alerts[0].condition for n in r.tick(T0 + timedelta(seconds=601))] == ["CRS_SUSPECTED"]


# --- groups ---------------------------------------------------------------------------------------


def test_a_group_goes_out_when_its_window_ends_not_a_moment_before() -> None:
    r = router(group_window_s=10)
    a = alert()
    assert start(r, a) == []
    assert r.decisions == [Decision("grouped", a.id, "all")]
    assert r.tracks[a.id].held is Held.GROUP
    assert r.tick(T0 + timedelta(seconds=9.999)) == []
    [n] = r.tick(T0 + timedelta(seconds=10))
    assert told(n) == (
        NoticeKind.ALERT,
        "all",
        0,
        ("n0",),
        "w1",
        "b1",
        (a,),
        T0 + timedelta(seconds=10),
        None,
    )
    assert n.first_for == ("n0",), "a group's alerts were never told: an alert manager hears a start"
    assert r.tracks[a.id] == Track(a, "all", 0, ("n0",), T0 + timedelta(seconds=10), None, False)
    assert r.groups == {}


def test_groups_go_out_oldest_first_then_by_ward_bed_and_route() -> None:
    r = router(group_window_s=10)
    start(r, alert(bed="b2"), T0 + timedelta(seconds=1))
    start(r, alert(bed="b3"), T0)
    start(r, alert(bed="b1"), T0 + timedelta(seconds=1))
    start(r, alert(ward="w0", bed="b9"), T0 + timedelta(seconds=1))
    notices = r.tick(T0 + timedelta(seconds=20))
    assert [(n.ward, n.bed) for n in notices] == [("w1", "b3"), ("w0", "b9"), ("w1", "b1"), ("w1", "b2")]


def test_a_transition_flushes_the_groups_that_are_due_first() -> None:
    r = router(group_window_s=10)
    a = alert()
    start(r, a)
    notices = start(r, alert(bed="b2"), T0 + timedelta(seconds=10))
    assert [(n.kind, n.bed) for n in notices] == [(NoticeKind.ALERT, "b1")]


def test_an_alert_whose_inhibitor_opened_during_the_window_stays_out_of_the_group() -> None:
    r = router(group_window_s=10, inhibit=[{"source": "CRS_SUSPECTED", "targets": ["FEVER"]}])
    fever, tachy = alert(), alert("TACHYCARDIA")
    start(r, fever)
    start(r, tachy)
    crs = alert("CRS_SUSPECTED")
    start(r, crs, T0 + timedelta(seconds=5))
    r.decisions.clear()
    notices = r.tick(T0 + timedelta(seconds=10))
    assert [n.alerts for n in notices] == [(tachy, crs)]  # the source is in the group too
    assert r.decisions == [Decision("inhibited", fever.id, crs.id)]
    assert r.tracks[fever.id].held is Held.INHIBITED
    assert r.tracks[fever.id].told == ()


def test_a_group_whose_members_all_left_sends_nothing() -> None:
    r = router(group_window_s=10, inhibit=[{"source": "CRS_SUSPECTED", "targets": ["FEVER"]}])
    start(r, alert())
    start(r, alert("CRS_SUSPECTED", bed="b1"), T0 + timedelta(seconds=1))
    notices = r.tick(T0 + timedelta(seconds=11))
    assert [n.alerts[0].condition for n in notices] == ["CRS_SUSPECTED"]


def grouped_then_restarted(after_routes: list[dict[str, Any]], **after: Any) -> tuple[Router, Alert]:
    """A FEVER waiting in its group on route ``fever``; then a restart where that route is gone."""
    before = router(
        group_window_s=10, routes=[{"name": "fever", "conditions": ["FEVER"], "levels": [["n0"]]}]
    )
    fever = alert()
    start(before, fever)
    rows = {k: v for k, v in before.take_changed().items() if v is not None}
    restarted = router(routes=after_routes, **after)
    assert restarted.restore(rows) == []
    return restarted, fever


def test_a_group_whose_route_went_away_at_a_restart_is_decided_again() -> None:
    r, fever = grouped_then_restarted([{"name": "all", "levels": [["c1"]]}], group_window_s=0)
    assert (r.tracks[fever.id].route, r.tracks[fever.id].held) == ("all", Held.GROUP)
    [n] = r.tick(T0 + timedelta(seconds=1))
    assert (n.kind, n.route, n.receivers, n.alerts) == (NoticeKind.ALERT, "all", ("c1",), (fever,))
    assert r.groups == {}


def test_a_group_whose_route_went_away_waits_in_a_group_of_the_new_route() -> None:
    r, fever = grouped_then_restarted([{"name": "all", "levels": [["c1"]]}], group_window_s=10)
    assert r.tick(T0 + timedelta(seconds=10)) == []
    assert r.groups == {
        ("w1", "b1", "all"): Group("w1", "b1", "all", T0 + timedelta(seconds=10), (fever.id,))
    }
    [n] = r.tick(T0 + timedelta(seconds=20))
    assert (n.route, n.alerts) == ("all", (fever,))


def test_a_group_whose_alerts_no_route_takes_now_tells_nobody_and_holds_nothing() -> None:
    r, fever = grouped_then_restarted([{"name": "hyp", "conditions": ["HYPOXIA"], "levels": [["c1"]]}])
    assert r.tick(T0 + timedelta(seconds=10)) == []
    assert r.tracks[fever.id] == Track(fever, None)
    assert r.groups == {}


def test_a_member_whose_row_was_unreadable_is_left_out_of_its_group() -> None:
    before = router(group_window_s=10)
    a, b = alert(), alert("TACHYCARDIA")
    start(before, a)
    start(before, b)
    rows = {k: v for k, v in before.take_changed().items() if v is not None}
    rows[ALERT_KEY_PREFIX + a.id] = "{broken"
    after = router(group_window_s=10)
    assert len(after.restore(rows)) == 1
    [n] = after.tick(T0 + timedelta(seconds=10))
    assert n.alerts == (b,)


def test_an_empty_group_does_not_stop_the_next_due_group() -> None:
    r = router(
        group_window_s=10,
        inhibit=[{"source": "CRS_SUSPECTED", "targets": ["FEVER"]}],
        routes=[
            {"name": "crs", "conditions": ["CRS_SUSPECTED"], "levels": [["d2"]], "repeat_after_s": 0},
            {"name": "all", "levels": [["n0"]], "repeat_after_s": 0},
        ],
    )
    start(r, alert())  # b1's group on "all"
    start(r, alert(bed="b2"), T0 + timedelta(seconds=1))  # b2's group
    start(r, alert("CRS_SUSPECTED"), T0 + timedelta(seconds=2))  # b1's group on "crs"; covers b1's FEVER
    notices = r.tick(T0 + timedelta(seconds=12))
    assert [(n.route, n.bed, n.alerts[0].condition) for n in notices] == [
        ("all", "b2", "FEVER"),
        ("crs", "b1", "CRS_SUSPECTED"),
    ]


def test_a_group_of_a_removed_route_does_not_stop_the_next_due_group() -> None:
    r, _ = grouped_then_restarted([{"name": "all", "levels": [["c1"]]}], group_window_s=10)
    start(r, alert(bed="b2"), T0 + timedelta(seconds=1))
    notices = r.tick(T0 + timedelta(seconds=11))
    assert [(n.route, n.bed) for n in notices] == [("all", "b2")]


def test_a_member_no_longer_waiting_is_not_sent_with_the_group() -> None:
    r = router(group_window_s=10)
    a, b = alert(), alert("TACHYCARDIA")
    r.tracks[a.id] = Track(a, "all", held=Held.GROUP)
    r.tracks[b.id] = Track(b, "all", held=None, told=("n0",))
    r.groups[("w1", "b1", "all")] = Group("w1", "b1", "all", T0, ("b1-GONE-1", b.id, a.id))
    [n] = r.tick(T0 + timedelta(seconds=10))
    assert n.alerts == (a,)


def test_told_keeps_each_receiver_once_in_order() -> None:
    r = router(group_window_s=10, routes=[{"name": "all", "levels": [["n0", "c1"]], "repeat_after_s": 0}])
    a = alert()
    r.tracks[a.id] = Track(a, "all", told=("c1", "d2"), held=Held.GROUP)
    r.groups[("w1", "b1", "all")] = Group("w1", "b1", "all", T0, (a.id,))
    r.tick(T0 + timedelta(seconds=10))
    assert r.tracks[a.id].told == ("c1", "d2", "n0")


# --- digests ----------------------------------------------------------------------------------------


def quiet_router(**routing: Any) -> Router:
    return router(quiet=[{"start": "11:00", "end": "13:00", "priorities": ["low", "medium"]}], **routing)


def test_a_digest_goes_out_when_the_quiet_period_ends() -> None:
    r = quiet_router()
    a = alert(priority=Priority.LOW)
    start(r, a)
    assert r.decisions == [Decision("quiet", a.id, "FEVER")]
    assert r.tick(T0 + timedelta(minutes=59, seconds=59)) == []
    end = T0 + timedelta(hours=1)
    [n] = r.tick(end)
    assert told(n) == (NoticeKind.DIGEST, "all", 0, ("n0",), "w1", "b1", (a,), end, None)
    assert n.first_for == ("n0",), "a digest's alerts were never told: an alert manager hears a start"
    assert r.tracks[a.id] == Track(a, "all", 0, ("n0",), end, None, False)
    assert r.tick(end + timedelta(seconds=1)) == []


def test_a_digest_is_per_route_and_ward_in_time_order_and_names_no_bed_for_several() -> None:
    r = quiet_router(
        routes=[
            {"name": "a", "wards": ["w1"], "levels": [["n0"]], "repeat_after_s": 0},
            {"name": "b", "levels": [["c1"]], "repeat_after_s": 0},
        ]
    )
    first = alert(bed="b2", priority=Priority.LOW, at=T0 + timedelta(seconds=5))
    second = alert(bed="b1", priority=Priority.LOW, at=T0 + timedelta(seconds=9))
    third = alert("BAG_LOW", bed="b3", priority=Priority.LOW, at=T0 + timedelta(seconds=9))
    other = alert(ward="w2", bed="b1", priority=Priority.LOW, seq=2)
    for a in (third, second, first, other):
        start(r, a)
    notices = r.tick(T0 + timedelta(hours=1))
    assert [(n.route, n.ward, n.bed, n.receivers, n.alerts) for n in notices] == [
        ("a", "w1", "", ("n0",), (first, second, third)),  # by onset, then id
        ("b", "w2", "b1", ("c1",), (other,)),
    ]


def test_a_digest_reports_alerts_closed_meanwhile_and_forgets_them() -> None:
    r = quiet_router()
    a, b = alert(priority=Priority.LOW), alert("BAG_LOW", priority=Priority.LOW, seq=2)
    start(r, a)
    start(r, b)
    closed = alert(priority=Priority.LOW, state=AlertState.RESOLVED, phase=Phase.END)
    then(r, closed, T0 + timedelta(minutes=1))
    [n] = r.tick(T0 + timedelta(hours=1))
    assert n.alerts == (b, closed)  # the same onset: by id
    assert a.id not in r.tracks
    assert b.id in r.tracks


def test_an_alert_acknowledged_meanwhile_gets_no_closing_notice_later() -> None:
    r = quiet_router()
    a = alert(priority=Priority.LOW)
    start(r, a)
    acked = alert(priority=Priority.LOW, state=AlertState.ACKNOWLEDGED, phase=Phase.ACK, acked_by="n")
    then(r, acked, T0 + timedelta(minutes=1))
    [n] = r.tick(T0 + timedelta(hours=1))
    assert n.alerts == (acked,)
    assert r.tracks[a.id].closing_sent
    done = alert(priority=Priority.LOW, state=AlertState.RESOLVED, phase=Phase.END)
    assert then(r, done, T0 + timedelta(hours=2)) == []


def test_an_active_alert_of_the_digest_gets_its_closing_notice() -> None:
    r = quiet_router()
    start(r, alert(priority=Priority.LOW))
    r.tick(T0 + timedelta(hours=1))
    [n] = then(
        r, alert(priority=Priority.LOW, state=AlertState.RESOLVED, phase=Phase.END), T0 + timedelta(hours=2)
    )
    assert (n.kind, n.receivers) == (NoticeKind.CLOSING, ("n0",))


def test_a_digest_of_a_removed_route_tells_nobody_but_frees_its_alerts() -> None:
    r = quiet_router()
    a = alert(priority=Priority.LOW)
    r.tracks[a.id] = Track(a, "gone", held=Held.QUIET)
    assert r.tick(T0 + timedelta(hours=1)) == []
    assert r.tracks[a.id].held is None


def test_a_digest_goes_out_for_each_priority_when_its_own_period_ends() -> None:
    r = router(
        quiet=[
            {"start": "11:00", "end": "12:30", "priorities": ["medium"]},
            {"start": "11:00", "end": "13:00", "priorities": ["low"]},
        ]
    )
    low, medium = alert("BAG_LOW", priority=Priority.LOW), alert(priority=Priority.MEDIUM)
    start(r, low)
    start(r, medium)
    assert [n.alerts for n in r.tick(T0 + timedelta(minutes=30))] == [(medium,)]
    assert [n.alerts for n in r.tick(T0 + timedelta(minutes=60))] == [(low,)]


# --- inhibition ----------------------------------------------------------------------------------


def inhibiting(**routing: Any) -> Router:
    return router(inhibit=[{"source": "CRS_SUSPECTED", "targets": ["FEVER", "HYPOTENSION"]}], **routing)


def test_an_open_source_holds_its_targets_of_the_same_bed() -> None:
    r = inhibiting()
    crs = alert("CRS_SUSPECTED")
    start(r, crs)
    fever = alert()
    assert start(r, fever) == []
    assert r.decisions == [Decision("inhibited", fever.id, crs.id)]
    assert r.tracks[fever.id].held is Held.INHIBITED


@pytest.mark.parametrize(
    ("target", "told"),
    [
        (alert(bed="b2"), True),  # another bed
        (alert(ward="w2"), True),  # another ward
        (alert("TACHYCARDIA"), True),  # not a target
        (alert(priority=Priority.HIGH), True),  # above the source
        (alert(priority=Priority.LOW), False),  # below it
        (alert(), False),  # the same priority
    ],
)
def test_only_a_target_at_the_same_bed_not_above_the_source_is_held(target: Alert, told: bool) -> None:
    r = inhibiting()
    start(r, alert("CRS_SUSPECTED"))
    assert bool(start(r, target)) is told


def test_a_closed_source_holds_nothing() -> None:
    r = inhibiting()
    crs = alert("CRS_SUSPECTED", state=AlertState.RESOLVED)
    r.tracks[crs.id] = Track(crs, "all")
    assert len(start(r, alert())) == 1


def test_an_acknowledged_source_still_holds_its_targets() -> None:
    r = inhibiting()
    start(r, alert("CRS_SUSPECTED"))
    then(r, alert("CRS_SUSPECTED", state=AlertState.ACKNOWLEDGED, phase=Phase.ACK, acked_by="n"), T0)
    assert start(r, alert()) == []


def test_an_alert_is_not_its_own_inhibitor() -> None:
    r = router(inhibit=[{"source": "FEVER", "targets": ["FEVER"]}])
    assert len(start(r, alert())) == 1


def test_the_second_rule_is_looked_at_when_the_first_does_not_name_the_target() -> None:
    r = router(
        inhibit=[
            {"source": "PUMP_COMM_LOST", "targets": ["BAG_LOW"]},
            {"source": "CRS_SUSPECTED", "targets": ["FEVER"]},
        ]
    )
    start(r, alert("CRS_SUSPECTED"))
    assert start(r, alert()) == []


def test_when_the_source_closes_its_targets_go_out() -> None:
    r = inhibiting()
    start(r, alert("CRS_SUSPECTED"))
    fever, hypo = alert(), alert("HYPOTENSION")
    start(r, fever)
    start(r, hypo)
    notices = then(
        r, alert("CRS_SUSPECTED", state=AlertState.RESOLVED, phase=Phase.END), T0 + timedelta(seconds=5)
    )
    assert [(n.kind, n.alerts[0].condition) for n in notices] == [
        (NoticeKind.CLOSING, "CRS_SUSPECTED"),
        (NoticeKind.ALERT, "FEVER"),
        (NoticeKind.ALERT, "HYPOTENSION"),
    ]
    assert r.tracks[fever.id].held is None


def test_a_deescalated_source_frees_a_target_now_above_it() -> None:
    r = inhibiting()
    start(r, alert("CRS_SUSPECTED", priority=Priority.HIGH))
    fever = alert(priority=Priority.MEDIUM)
    assert start(r, fever) == []
    lower = alert("CRS_SUSPECTED", priority=Priority.LOW, phase=Phase.DEESCALATE)
    [n] = then(r, lower, T0 + timedelta(seconds=5))
    assert n.alerts == (fever,)


def test_a_freed_target_no_longer_active_is_not_told() -> None:
    r = inhibiting()
    start(r, alert("CRS_SUSPECTED"))
    start(r, alert())
    then(r, alert(state=AlertState.ACKNOWLEDGED, phase=Phase.ACK, acked_by="n"), T0)
    r.tracks[alert().id] = Track(alert(state=AlertState.ACKNOWLEDGED), "all", held=Held.INHIBITED)
    notices = then(r, alert("CRS_SUSPECTED", state=AlertState.RESOLVED, phase=Phase.END), T0)
    assert [n.kind for n in notices] == [NoticeKind.CLOSING]
    assert r.tracks[alert().id].held is None


def test_a_target_of_another_bed_stays_held_when_a_source_closes() -> None:
    r = inhibiting()
    start(r, alert("CRS_SUSPECTED", bed="b1"))
    start(r, alert("CRS_SUSPECTED", bed="b2"))
    start(r, alert(bed="b2"))
    notices = then(r, alert("CRS_SUSPECTED", bed="b1", state=AlertState.RESOLVED, phase=Phase.END), T0)
    assert [n.kind for n in notices] == [NoticeKind.CLOSING]
    assert r.tracks[alert(bed="b2").id].held is Held.INHIBITED


def test_a_target_still_covered_by_another_source_stays_held() -> None:
    r = router(
        inhibit=[
            {"source": "CRS_SUSPECTED", "targets": ["FEVER"]},
            {"source": "ICANS_SUSPECTED", "targets": ["FEVER"]},
        ]
    )
    start(r, alert("CRS_SUSPECTED"))
    start(r, alert("ICANS_SUSPECTED"))
    start(r, alert())
    notices = then(r, alert("CRS_SUSPECTED", state=AlertState.RESOLVED, phase=Phase.END), T0)
    assert [n.kind for n in notices] == [NoticeKind.CLOSING]
    assert r.tracks[alert().id].held is Held.INHIBITED


# --- quiet periods ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start_", "end", "local", "inside"),
    [
        ("22:00", "07:00", "22:00", True),  # start included
        ("22:00", "07:00", "21:59:59.999999", False),
        ("22:00", "07:00", "00:00", True),
        ("22:00", "07:00", "06:59:59.999999", True),
        ("22:00", "07:00", "07:00", False),  # end excluded
        ("22:00", "07:00", "12:00", False),
        ("13:00", "14:00", "13:00", True),
        ("13:00", "14:00", "12:59:59.999999", False),
        ("13:00", "14:00", "13:59:59.999999", True),
        ("13:00", "14:00", "14:00", False),
        ("13:00", "14:00", "23:00", False),
        ("13:00", "14:00", "01:00", False),
    ],
)
def test_a_quiet_period_includes_its_start_and_not_its_end(
    start_: str, end: str, local: str, inside: bool
) -> None:
    quiet = QuietConfig(start=start_, end=end)
    assert in_period(quiet, time.fromisoformat(local)) is inside


def test_quiet_periods_are_in_the_routings_local_time() -> None:
    r = router(timezone="Europe/Paris", quiet=[{"start": "13:00", "end": "14:00"}])
    assert str(r.zone) == "Europe/Paris"
    low = alert(priority=Priority.LOW)
    assert start(r, low, T0 + timedelta(seconds=-1)) != []  # 12:59:59 in Paris
    assert start(r, alert("BAG_LOW", priority=Priority.LOW), T0) == []  # 13:00 in Paris


def test_high_priority_is_never_quiet_and_unlisted_priorities_are_not_held() -> None:
    r = router(quiet=[{"start": "11:00", "end": "13:00", "priorities": ["medium"]}])
    assert len(start(r, alert(priority=Priority.HIGH))) == 1
    assert len(start(r, alert("BAG_LOW", priority=Priority.LOW))) == 1
    assert start(r, alert("TACHYCARDIA", priority=Priority.MEDIUM)) == []


def test_any_listed_period_makes_it_quiet() -> None:
    r = router(quiet=[{"start": "01:00", "end": "02:00"}, {"start": "11:00", "end": "13:00"}])
    assert start(r, alert(priority=Priority.LOW)) == []


def test_without_quiet_periods_nothing_is_held() -> None:
    assert len(start(router(), alert(priority=Priority.LOW))) == 1


# --- found by mutation testing ------------------------------------------------------------------------


def test_a_failure_report_skips_an_alert_it_cannot_move_and_goes_on_with_the_next() -> None:
    r = router(
        routes=[
            {"name": "short", "conditions": ["HYPOXIA"], "levels": [["n0"], ["c1"]], "repeat_after_s": 0},
            {"name": "all", "levels": [["n0"], ["c1"], ["d2"]], "repeat_after_s": 0},
        ]
    )
    hypoxia, fever = alert("HYPOXIA"), alert()
    start(r, hypoxia)
    start(r, fever)
    assert [(n.alerts[0].id, n.level) for n in r.failed([hypoxia.id, fever.id], 0, "n0", T0)] == [
        (hypoxia.id, 1),
        (fever.id, 1),
    ]
    # HYPOXIA is at its route's last level, the second id is unknown: both skipped.
    notices = r.failed([hypoxia.id, "b9-NOPE-1", fever.id], 1, "c1", T0)
    assert [(n.alerts[0].id, n.level, n.receivers) for n in notices] == [(fever.id, 2, ("d2",))]


def replace_alert_track(track: Track, **changes: Any) -> Track:
    from daemon.frozen import replace  # noqa: PLC0415

    return replace(track, **changes)


def test_the_closing_notice_is_dated_now() -> None:
    r = router()
    start(r, alert())
    [n] = then(r, alert(state=AlertState.RESOLVED, phase=Phase.END), T0 + timedelta(seconds=42))
    assert n.at == T0 + timedelta(seconds=42)


def test_a_target_freed_by_its_source_closing_is_told_now() -> None:
    r = inhibiting()
    start(r, alert("CRS_SUSPECTED"))
    start(r, alert())
    _, freed = then(
        r, alert("CRS_SUSPECTED", state=AlertState.RESOLVED, phase=Phase.END), T0 + timedelta(seconds=7)
    )
    assert (freed.kind, freed.at) == (NoticeKind.ALERT, T0 + timedelta(seconds=7))
    assert r.tracks[alert().id].last_at == T0 + timedelta(seconds=7)


def test_a_target_still_covered_does_not_stop_the_release_of_the_next() -> None:
    r = router(
        inhibit=[
            {"source": "CRS_SUSPECTED", "targets": ["FEVER"]},
            {"source": "ICANS_SUSPECTED", "targets": ["TACHYCARDIA"]},
        ]
    )
    start(r, alert("CRS_SUSPECTED"))
    start(r, alert("ICANS_SUSPECTED"))
    start(r, alert())  # held by CRS, and first in the router's table
    tachy = alert("TACHYCARDIA")
    start(r, tachy)  # held by ICANS
    notices = then(r, alert("ICANS_SUSPECTED", state=AlertState.RESOLVED, phase=Phase.END), T0)
    assert [(n.kind, n.alerts[0].condition) for n in notices] == [
        (NoticeKind.CLOSING, "ICANS_SUSPECTED"),
        (NoticeKind.ALERT, "TACHYCARDIA"),
    ]


def test_a_rise_decided_again_leaves_a_track_with_no_closing_sent() -> None:
    r = inhibiting()
    start(r, alert("CRS_SUSPECTED", priority=Priority.HIGH))
    fever = alert()
    start(r, fever)
    # A track stored with closing_sent set (a digest of an acknowledged alert) and never told.
    r.tracks[fever.id] = replace_alert_track(r.tracks[fever.id], closing_sent=True)
    assert then(r, alert(priority=Priority.HIGH, phase=Phase.ESCALATE), T0) == []  # still covered
    assert r.tracks[fever.id].closing_sent is False
    assert r.tracks[fever.id].dump()["closing_sent"] is False


def test_closing_a_held_alert_that_is_in_no_group_rewrites_no_group() -> None:
    r = router(group_window_s=10, inhibit=[{"source": "CRS_SUSPECTED", "targets": ["FEVER"]}])
    r.tick(T0)
    crs = alert("CRS_SUSPECTED")
    r.tracks[crs.id] = Track(crs, "all", told=("n0",), last_at=T0)
    fever = alert()
    start(r, fever)  # inhibited, not grouped
    start(r, alert("TACHYCARDIA"))  # grouped: the bed has a group
    r.take_changed()
    then(r, alert(state=AlertState.RESOLVED, phase=Phase.END), T0 + timedelta(seconds=1))
    assert set(r.take_changed()) == {ALERT_KEY_PREFIX + fever.id}


def test_after_a_restart_without_the_inhibition_an_acknowledgement_at_the_bed_frees_its_targets() -> None:
    before = inhibiting()
    start(before, alert("CRS_SUSPECTED"))
    fever = alert()
    start(before, fever)
    rows = {k: v for k, v in before.take_changed().items() if v is not None}
    after = router(inhibit=[])  # the site dropped the rule
    assert after.restore(rows) == []
    assert after.tracks[fever.id].held is Held.INHIBITED
    acked = alert("CRS_SUSPECTED", state=AlertState.ACKNOWLEDGED, phase=Phase.ACK, acked_by="n")
    notices = then(after, acked, T0 + timedelta(seconds=3))
    assert [(n.kind, n.alerts[0].condition) for n in notices] == [
        (NoticeKind.CLOSING, "CRS_SUSPECTED"),
        (NoticeKind.ALERT, "FEVER"),
    ]


def test_a_later_transition_of_an_alert_the_router_never_saw_is_taken_as_new() -> None:
    r = router()  # e.g. its stored row was unreadable at the restart
    worse = alert(priority=Priority.HIGH, phase=Phase.ESCALATE)
    [n] = then(r, worse, T0)
    assert (n.kind, n.level, n.alerts) == (NoticeKind.ALERT, 0, (worse,))


def test_a_later_transition_comes_after_the_groups_it_flushed() -> None:
    r = router(group_window_s=10)
    b = alert("HYPOXIA", bed="b2")
    start(r, b, T0 - timedelta(seconds=20))
    r.tick(T0 - timedelta(seconds=10))  # b2's group goes out
    start(r, alert(), T0)  # b1's group opens
    worse = alert("HYPOXIA", bed="b2", priority=Priority.HIGH, phase=Phase.ESCALATE)
    notices = then(r, worse, T0 + timedelta(seconds=10))
    assert [(n.kind, n.bed) for n in notices] == [(NoticeKind.ALERT, "b1"), (NoticeKind.WORSE, "b2")]


def test_a_repeat_after_one_second_is_a_repeat() -> None:
    r = router(routes=[{"name": "all", "levels": [["n0"]], "repeat_after_s": 1}])
    start(r, alert())
    assert r.tick(T0 + timedelta(seconds=0.999)) == []
    assert [n.kind for n in r.tick(T0 + timedelta(seconds=1))] == [NoticeKind.REPEAT]


def test_an_alert_acknowledged_in_a_digest_whose_route_went_away_is_closed_once_told_again() -> None:
    """Held for a quiet period, acknowledged, its route removed at a restart: the digest
    tells nobody. When its priority rises and a route takes it, the receivers told then
    get its closing notice too."""
    quiet = [{"start": "11:00", "end": "13:00", "priorities": ["low", "medium"]}]
    before = router(quiet=quiet, routes=[{"name": "fever", "conditions": ["FEVER"], "levels": [["n0"]]}])
    start(before, alert(priority=Priority.LOW))
    acked = alert(priority=Priority.LOW, state=AlertState.ACKNOWLEDGED, phase=Phase.ACK, acked_by="n")
    assert then(before, acked, T0 + timedelta(minutes=1)) == []
    rows = {k: v for k, v in before.take_changed().items() if v is not None}
    after = router(quiet=quiet, routes=[{"name": "high", "priorities": ["high"], "levels": [["c1"]]}])
    assert after.restore(rows) == []
    assert after.tick(T0 + timedelta(hours=1)) == []  # the digest: nobody to tell
    worse = alert(priority=Priority.HIGH, phase=Phase.ESCALATE)
    [told] = then(after, worse, T0 + timedelta(hours=2))
    assert (told.kind, told.route, told.receivers) == (NoticeKind.ALERT, "high", ("c1",))
    done = alert(priority=Priority.HIGH, state=AlertState.RESOLVED, phase=Phase.END)
    [closing] = then(after, done, T0 + timedelta(hours=3))
    assert (closing.kind, closing.receivers) == (NoticeKind.CLOSING, ("c1",))


def test_a_told_alert_whose_route_went_away_is_not_repeated() -> None:
    before = router(
        routes=[{"name": "fever", "conditions": ["FEVER"], "levels": [["n0"]], "repeat_after_s": 60}]
    )
    start(before, alert())
    rows = {k: v for k, v in before.take_changed().items() if v is not None}
    after = router(
        routes=[{"name": "hyp", "conditions": ["HYPOXIA"], "levels": [["c1"]], "repeat_after_s": 60}]
    )
    assert after.restore(rows) == []
    assert after.tracks[alert().id].route is None
    assert after.tick(T0 + timedelta(hours=1)) == []


@pytest.mark.parametrize(
    "later",
    [
        alert(priority=Priority.HIGH, phase=Phase.ESCALATE),
        alert(phase=Phase.OVERDUE, escalation_level=1),
        alert(phase=Phase.UPDATE, details={"grade": 2}),
    ],
    ids=["escalate", "overdue", "update"],
)
def test_a_told_alert_that_no_route_takes_after_a_restart_is_kept_not_sent(later: Alert) -> None:
    """Found by mutation testing: a worse or overdue alert whose route was removed looked
    its receivers up under no route and raised."""
    before = router(routes=[{"name": "fever", "conditions": ["FEVER"], "levels": [["n0"]]}])
    start(before, alert())
    rows = {k: v for k, v in before.take_changed().items() if v is not None}
    after = router(routes=[{"name": "hyp", "conditions": ["HYPOXIA"], "levels": [["c1"]]}])
    assert after.restore(rows) == []
    assert then(after, later, T0 + timedelta(minutes=5)) == []
    assert after.tracks[later.id] == Track(later, None, told=("n0",), last_at=T0)
    assert ALERT_KEY_PREFIX + later.id in after.take_changed()


def test_digests_of_one_ward_go_out_in_the_order_of_their_routes() -> None:
    r = quiet_router(
        routes=[
            {"name": "b-route", "conditions": ["BAG_LOW"], "levels": [["c1"]], "repeat_after_s": 0},
            {"name": "a-route", "levels": [["n0"]], "repeat_after_s": 0},
        ]
    )
    start(r, alert("BAG_LOW", priority=Priority.LOW))  # b-route, first in the router's table
    start(r, alert(priority=Priority.LOW))  # a-route
    assert [n.route for n in r.tick(T0 + timedelta(hours=1))] == ["a-route", "b-route"]


def test_a_digest_beside_held_alerts_that_no_route_takes_any_more() -> None:
    quiet = [{"start": "11:00", "end": "13:00", "priorities": ["low", "medium"]}]
    before = router(
        quiet=quiet,
        routes=[
            {"name": "bags", "conditions": ["BAG_LOW"], "levels": [["c1"]]},
            {"name": "all", "levels": [["n0"]]},
        ],
    )
    bag, fever = alert("BAG_LOW", priority=Priority.LOW), alert(priority=Priority.LOW)
    start(before, bag)
    start(before, fever)
    rows = {k: v for k, v in before.take_changed().items() if v is not None}
    after = router(quiet=quiet, routes=[{"name": "all", "conditions": ["FEVER"], "levels": [["n0"]]}])
    assert after.restore(rows) == []
    assert (after.tracks[bag.id].route, after.tracks[bag.id].held) == (None, Held.QUIET)
    [n] = after.tick(T0 + timedelta(hours=1))
    assert (n.kind, n.route, n.alerts) == (NoticeKind.DIGEST, "all", (fever,))
    assert after.tracks[bag.id] == Track(bag, None, last_at=T0 + timedelta(hours=1))


def test_every_alert_of_a_group_whose_route_went_away_is_decided_again() -> None:
    before = router(
        group_window_s=10,
        routes=[{"name": "old", "conditions": ["FEVER", "TACHYCARDIA"], "levels": [["n0"]]}],
    )
    fever, tachy = alert(), alert("TACHYCARDIA")
    start(before, fever)
    start(before, tachy)
    rows = {k: v for k, v in before.take_changed().items() if v is not None}
    after = router(group_window_s=0, routes=[{"name": "all", "levels": [["c1"]]}])
    assert after.restore(rows) == []
    notices = after.tick(T0 + timedelta(seconds=1))
    assert [n.alerts for n in notices] == [(fever,), (tachy,)]


# --- the tracks of a bed --------------------------------------------------------------------


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["put", "delete"]),
            st.integers(0, 5),  # which alert
            st.sampled_from(["b1", "b2", "b3"]),  # at which bed (a put may move it)
            st.sampled_from([None, *Held]),  # held or not, and why
            st.sampled_from([Priority.LOW, Priority.MEDIUM]),
        ),
        max_size=40,
    )
)
def test_a_beds_tracks_and_the_quiet_held_are_those_a_walk_over_every_track_finds(
    steps: list[tuple[str, int, str, Held | None, Priority]],
) -> None:
    """Puts (a new alert, the same again, one moved to another bed, held or let go, of
    another priority) and deletions: each bed's tracks, and those a quiet period holds by
    priority, in order, are what walking a plain dict of them all gives."""
    tracks, plain = Tracks(), dict[str, Track]()
    for action, n, bed, held, priority in steps:
        alert_id = f"a{n}"
        if action == "put":
            track = Track(alert("FEVER", bed, seq=n, id=alert_id, priority=priority), "all", held=held)
            tracks[alert_id] = track
            plain[alert_id] = track
        elif alert_id in plain:
            del tracks[alert_id]
            del plain[alert_id]
        for each in ("b1", "b2", "b3"):
            assert tracks.of_bed("w1", each) == [t for t in plain.values() if t.alert.bed == each]
        quiet = [t for t in plain.values() if t.held is Held.QUIET]
        assert sorted(tracks.quiet_priorities()) == sorted({t.alert.priority for t in quiet})
        for each_priority in (Priority.LOW, Priority.MEDIUM):
            assert tracks.quiet_held(each_priority) == [t for t in quiet if t.alert.priority is each_priority]
        assert list(tracks) == list(plain)


def test_a_check_during_a_quiet_period_asks_once_per_priority_not_once_per_held_alert() -> None:
    """A night's held alerts are not walked at each check: the quiet period is asked about
    once per priority held; at its end they all go out in the digest."""
    r = router(quiet=[{"start": "11:00", "end": "13:00", "priorities": ["low", "medium"]}])
    for n in range(300):
        start(r, alert("FEVER", f"b{n}", priority=Priority.LOW if n % 2 else Priority.MEDIUM))
    asked: list[Priority] = []
    quiet = r._quiet

    def counted(priority: Priority, now: datetime) -> bool:
        asked.append(priority)
        return quiet(priority, now)

    r._quiet = counted  # type: ignore[method-assign]
    assert r.tick(T0 + timedelta(seconds=1)) == []
    assert sorted(asked) == sorted([Priority.LOW, Priority.MEDIUM])
    [digest] = r.tick(T0 + timedelta(hours=2))
    assert digest.kind is NoticeKind.DIGEST
    assert len(digest.alerts) == 300
    assert r.tracks.quiet_priorities() == []


def test_a_check_over_many_open_alerts_looks_for_inhibitors_at_their_own_bed_only() -> None:
    """Each check asks every open alert whether it is due; an inhibitor is sought only for
    those due, and among their bed's alerts only (not every open alert's, for each)."""
    r = router(
        routes=[
            {"name": "all", "levels": [["n0"], ["c1"]], "repeat_after_s": 600, "escalate_medium_after_s": 900}
        ],
        inhibit=[{"source": "CRS_SUSPECTED", "targets": ["FEVER"]}],
    )
    for n in range(300):
        start(r, alert("FEVER", f"b{n}"))
    start(r, alert("CRS_SUSPECTED", "b7", priority=Priority.HIGH))
    looked: list[str] = []
    of_bed = r.tracks.of_bed

    def counted(ward: str, bed: str) -> list[Track]:
        looked.append(bed)
        return of_bed(ward, bed)

    r.tracks.of_bed = counted  # type: ignore[method-assign]
    assert r.tick(T0 + timedelta(seconds=1)) == []  # neither a repeat nor an escalation is due
    assert looked == []
    told = r.tick(T0 + timedelta(seconds=900))  # every fever escalates but b7's (inhibited)
    escalated = [n for n in told if n.kind is NoticeKind.ESCALATION]
    assert sorted(n.bed for n in escalated) == sorted(f"b{n}" for n in range(300) if n != 7)
    assert [(n.kind, n.bed) for n in told if n not in escalated] == [
        (NoticeKind.REPEAT, "b7")
    ]  # the CRS alert
    assert set(looked) == {f"b{n}" for n in range(300)}, "each at its own bed"


class _Walking(Router):
    """The router as it checked before its schedule: every track, at every check."""

    def tick(self, now: datetime) -> list[Notice]:
        out = self._flush_groups(now)
        out += self._digests(now)
        for track in list(self.tracks.values()):
            out += self._escalate_medium(track, now) or self._repeat(track, now)
        return out

    def _quiet_ended(self, now: datetime) -> list[Track]:
        return [
            t for t in self.tracks.values() if t.held is Held.QUIET and not self._quiet(t.alert.priority, now)
        ]


_ROUTER_STEP = st.tuples(
    st.sampled_from(["start", "priority", "ack", "close"]),
    st.sampled_from(["FEVER", "HYPOTENSION", "CRS_SUSPECTED"]),
    st.sampled_from(["b1", "b2"]),
    st.sampled_from([Priority.LOW, Priority.MEDIUM, Priority.HIGH]),
    st.floats(0, 900, allow_nan=False),
)


@given(
    group_window_s=st.sampled_from([0, 10]),
    quiet=st.booleans(),
    steps=st.lists(_ROUTER_STEP, max_size=30),
)
def test_the_routers_schedule_tells_what_a_walk_over_every_track_tells(
    group_window_s: int, quiet: bool, steps: list[tuple[str, str, str, Priority, float]]
) -> None:
    """Starts, priority changes, acknowledgements and ends at irregular gaps, with repeats,
    medium escalation, grouping, the default inhibitions and a quiet period or none: each
    check tells what checking every track told, in the same order, with the same decisions."""
    routes = [
        {
            "name": "all",
            "levels": [["n0"], ["c1"], ["d2"]],
            "repeat_after_s": 300,
            "escalate_medium_after_s": 600,
        }
    ]
    periods = [{"start": "12:10", "end": "12:40", "priorities": ["low", "medium"]}] if quiet else []
    routing: dict[str, Any] = {"group_window_s": group_window_s, "quiet": periods}
    scheduled = router(routes=routes, **routing)
    walking = router(routes=routes, cls=_Walking, **routing)
    opened: dict[tuple[str, str], Alert] = {}
    now = T0
    for action, condition, bed, priority, gap_s in steps:
        now += timedelta(seconds=gap_s)
        before = opened.get((condition, bed))
        if action == "start" and before is None:
            changed = alert(condition, bed, priority=priority, at=now)
            opened[(condition, bed)] = changed
        elif before is None or action == "start":
            changed = None
        elif action == "priority" and priority is not before.priority:
            phase = Phase.ESCALATE if priority.rank > before.priority.rank else Phase.DEESCALATE
            changed = replace_alert(before, priority=priority, phase=phase, updated=now)
            opened[(condition, bed)] = changed
        elif action == "ack" and before.state is AlertState.ACTIVE:
            changed = replace_alert(before, state=AlertState.ACKNOWLEDGED, phase=Phase.ACK, updated=now)
            opened[(condition, bed)] = changed
        elif action == "close":
            changed = replace_alert(before, state=AlertState.RESOLVED, phase=Phase.END, updated=now)
            del opened[(condition, bed)]
        else:
            changed = None
        if changed is not None:
            previous = None if before is None else before.state
            said = [told(n) for n in scheduled.transition(Transition(changed, previous), now)]
            assert said == [told(n) for n in walking.transition(Transition(changed, previous), now)]
        assert [told(n) for n in scheduled.tick(now)] == [told(n) for n in walking.tick(now)]
        assert scheduled.decisions == walking.decisions
