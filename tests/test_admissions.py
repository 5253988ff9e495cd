"""Admissions, pure: what a change does to the ward, what is refused and why, ADT decoding,
the admin command's form, stored rows against an edited file, and what `wardd status` says
of a watch that started partway."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon import cli
from daemon.admissions import (
    Action,
    AdmissionError,
    Change,
    Occupant,
    Via,
    Ward,
    load,
    parse_command,
    row_data,
)
from daemon.alerts import AlertBook, AlertState, Phase
from daemon.app import build
from daemon.clinical.dose import DoseState, Timeline, _cumulative, status_lines
from daemon.clinical.protocols import schedule_for
from daemon.clock import ManualClock
from daemon.config import AdmissionsConfig, DoseThresholds, parse
from daemon.config import load as load_config
from daemon.errors import ConfigError
from daemon.events import AlertCandidate, Kind, Priority, PumpReading, PumpState, Tick
from daemon.hl7 import adt, hl7in
from daemon.hl7.hl7in import Hl7Error
from daemon.rules import RuleEngine
from tests.helpers import commit_staged, one_bed_config

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
START = NOW - timedelta(days=3)


def _ward() -> Ward:
    return Ward(one_bed_config(START))


def admit(bed: str = "b2", **fields: object) -> Change:
    base: dict[str, object] = {
        "ward": "w1",
        "bed": bed,
        "patient": "p-2",
        "weight_kg": 70.0,
        "height_cm": 170.0,
    }
    base.update(fields)
    return Change(Action.ADMIT, Via.ADMIN, "nurse-admin", **base)  # type: ignore[arg-type]


def test_an_admission_with_protocol_and_future_start_starts_a_watch_of_that_bed() -> None:
    ward = _ward()
    outcome = ward.apply(admit(protocol="ssc-14d", protocol_start=NOW + timedelta(hours=1)), NOW)
    assert outcome.started == ("b2",)
    after = ward.updated(outcome)
    assert [bed.id for bed in after.beds()] == ["b1", "b2"]
    bed = after.effective().bed("b2")
    assert (bed.patient, bed.protocol, bed.watch_from, bed.delivered_before_watch_ug) == (
        "p-2",
        "ssc-14d",
        None,
        None,
    )
    assert outcome.rows["b2"] is not None
    assert outcome.rows["b2"].file_patient is None


def test_an_adt_admission_gives_a_patient_but_no_watch_until_staff_set_the_protocol() -> None:
    ward = _ward()
    by_adt = Change(Action.ADMIT, Via.ADT, "adt:HIS", ward="w1", bed="b2", patient="p-2", weight_kg=70)
    outcome = ward.apply(by_adt, NOW)
    assert outcome.started == ()
    assert "no protocol watch" in outcome.detail
    ward = ward.updated(outcome)
    assert "b2" in ward.occupants()
    assert [b.id for b in ward.beds()] == ["b1"]
    # Staff then set the protocol of the patient already in the bed: the watch starts.
    staff = Change(
        Action.ADMIT, Via.ADMIN, "nurse-admin", ward="w1", bed="b2", height_cm=170,
        protocol="ssc-14d", protocol_start=NOW,
    )  # fmt: skip
    started = ward.apply(staff, NOW)
    assert started.started == ("b2",)
    assert ward.updated(started).effective().bed("b2").weight_kg == 70


def test_adt_never_sets_a_protocol() -> None:
    change = Change(
        Action.ADMIT,
        Via.ADT,
        "adt",
        ward="w1",
        bed="b2",
        patient="p-2",
        protocol="ssc-14d",
        protocol_start=NOW,
    )
    with pytest.raises(AdmissionError) as refused:
        _ward().apply(change, NOW)
    assert refused.value.reason == "protocol_from_adt"


@pytest.mark.parametrize(("weight_kg", "refused"), [(44.9, True), (45.0, False)])
def test_a_patient_under_45_kg_on_a_flat_dose_protocol_is_refused_with_the_reason(
    weight_kg: float, refused: bool
) -> None:
    change = admit(weight_kg=weight_kg, protocol="ssc-14d", protocol_start=NOW + timedelta(hours=1))
    if not refused:
        assert _ward().apply(change, NOW).started == ("b2",)
        return
    with pytest.raises(AdmissionError) as error:
        _ward().apply(change, NOW)
    assert error.value.reason == "refused"
    assert "45 kg" in error.value.detail
    assert "ssc-14d-bsa" in error.value.detail


def test_under_45_kg_a_body_surface_protocol_is_accepted() -> None:
    change = admit(weight_kg=30.0, height_cm=135.0, protocol="ssc-14d-bsa", protocol_start=NOW)
    assert _ward().apply(change, NOW).started == ("b2",)


def test_an_unknown_protocol_and_an_impossible_weight_are_refused_like_the_config() -> None:
    with pytest.raises(AdmissionError, match="unknown protocol 'ssc-99d'"):
        _ward().apply(admit(protocol="ssc-99d", protocol_start=NOW), NOW)
    with pytest.raises(AdmissionError, match="weight_kg"):
        _ward().apply(admit(weight_kg=400.0, protocol="ssc-14d", protocol_start=NOW), NOW)


@pytest.mark.parametrize(
    ("start", "before", "reason"),
    [
        (NOW, None, None),  # starts now: nothing came before
        (NOW - timedelta(microseconds=1), None, "delivered_before_missing"),
        (NOW - timedelta(days=3), 27.0, None),
        (NOW - timedelta(days=3), "unknown", None),
        (NOW + timedelta(hours=1), 5.0, "nothing_before"),
    ],
)
def test_a_start_in_the_past_needs_what_was_delivered_before_the_watch_or_unknown(
    start: datetime, before: float | str | None, reason: str | None
) -> None:
    change = admit(
        protocol="ssc-14d",
        protocol_start=start,
        delivered_before_ug=before if isinstance(before, float) else None,
        before_unknown=before == "unknown",
    )
    if reason is not None:
        with pytest.raises(AdmissionError) as error:
            _ward().apply(change, NOW)
        assert error.value.reason == reason
        return
    ward = _ward()
    bed = ward.updated(ward.apply(change, NOW)).effective().bed("b2")
    assert bed.starts_partway == (start < NOW)
    assert bed.delivered_before_watch_ug == (before if isinstance(before, float) else None)


def test_a_bed_holds_one_patient_and_a_patient_one_bed() -> None:
    ward = _ward()
    with pytest.raises(AdmissionError) as occupied:
        ward.apply(admit(bed="b1", protocol="ssc-14d", protocol_start=NOW), NOW)
    assert occupied.value.reason == "bed_occupied"
    with pytest.raises(AdmissionError) as twice:
        ward.apply(admit(bed="b3", patient="p-1"), NOW)
    assert twice.value.reason == "already_admitted"
    with pytest.raises(AdmissionError) as elsewhere:
        ward.apply(admit(ward="w2", bed="b1", patient="p-9"), NOW)
    assert elsewhere.value.reason == "bed_in_other_ward"


def test_the_same_admission_twice_changes_nothing() -> None:
    ward = _ward()
    change = admit(protocol="ssc-14d", protocol_start=NOW)
    ward = ward.updated(ward.apply(change, NOW))
    assert ward.apply(change, NOW).noop


def test_a_transfer_moves_the_watch_and_empties_the_bed_the_file_listed() -> None:
    ward = _ward()
    outcome = ward.apply(Change(Action.TRANSFER, Via.ADT, "adt", ward="w1", bed="b7", patient="p-1"), NOW)
    assert outcome.moved == ("b1", "b7")
    emptied = outcome.rows["b1"]
    assert emptied is not None
    assert emptied.patient is None
    assert emptied.file_patient == "p-1"
    after = ward.updated(outcome)
    assert [(b.id, b.patient) for b in after.beds()] == [("b7", "p-1")]
    again = after.apply(Change(Action.TRANSFER, Via.ADT, "adt", ward="w1", bed="b7", patient="p-1"), NOW)
    assert again.noop


def test_a_transfer_to_an_occupied_bed_or_of_nobody_is_refused() -> None:
    ward = _ward()
    ward = ward.updated(ward.apply(admit(bed="b2"), NOW))
    with pytest.raises(AdmissionError, match="holds patient p-2"):
        ward.apply(Change(Action.TRANSFER, Via.ADMIN, "a", ward="w1", bed="b2", patient="p-1"), NOW)
    with pytest.raises(AdmissionError) as nobody:
        ward.apply(Change(Action.TRANSFER, Via.ADMIN, "a", ward="w1", bed="b5", patient="p-404"), NOW)
    assert nobody.value.reason == "not_admitted"


def test_a_discharge_ends_the_watch_and_is_kept_over_the_file() -> None:
    ward = _ward()
    outcome = ward.apply(Change(Action.DISCHARGE, Via.ADMIN, "a", bed="b1", reason="home"), NOW)
    assert outcome.ended == ("b1",)
    assert "home" in outcome.detail
    after = ward.updated(outcome)
    assert after.beds() == []
    stored = [row_data(row) for row in after.rows.values()]
    reloaded, dropped = load(one_bed_config(START), stored)
    assert reloaded.beds() == []
    assert dropped == []


def test_a_row_gives_way_to_a_file_edited_since() -> None:
    ward = _ward()
    after = ward.updated(ward.apply(Change(Action.DISCHARGE, Via.ADMIN, "a", bed="b1", reason="x"), NOW))
    stored = [row_data(row) for row in after.rows.values()]
    edited = one_bed_config(START).model_copy(
        update={"beds": [one_bed_config(START).beds[0].model_copy(update={"patient": "p-new"})]}
    )
    reloaded, dropped = load(edited, stored)
    assert [b.patient for b in reloaded.beds()] == ["p-new"]
    assert dropped == [("b1", "the config file changed bed b1 since (it wins)")]


def test_an_update_changes_weight_and_keeps_the_watch_unless_it_becomes_invalid() -> None:
    ward = _ward()
    outcome = ward.apply(
        Change(Action.UPDATE, Via.ADT, "adt", ward="w1", bed="b1", patient="p-1", weight_kg=61), NOW
    )
    assert outcome.changed == ("b1",)
    with pytest.raises(AdmissionError, match="45 kg"):
        ward.apply(Change(Action.UPDATE, Via.ADT, "adt", patient="p-1", weight_kg=40), NOW)
    with pytest.raises(AdmissionError) as wrong:
        ward.apply(Change(Action.UPDATE, Via.ADT, "adt", bed="b3", patient="p-1", weight_kg=61), NOW)
    assert wrong.value.reason == "wrong_bed"


# --------------------------------------------------------------------------- ADT


def adt_message(
    event: str, *extra: str, pid: str = "123^^^HOSP^MR~P-2^^^WARDD^PN", pv1: str = "PV1||I|w1^^b2"
) -> str:
    return "\r".join(
        [
            f"MSH|^~\\&|HIS|H|WARDD|H|20260310120000+0000||ADT^{event}^ADT_{event}|C-{event}|P|2.5",
            f"EVN|{event}|20260310120000+0000",
            f"PID|||{pid}||Doe^Jane",
            pv1,
            *extra,
        ]
    )


SETTINGS = AdmissionsConfig(pseudonym_type="PN", pseudonym_authority="WARDD")


def decode(text: str, settings: AdmissionsConfig = SETTINGS) -> Change:
    return adt.decode(hl7in.parse(text.encode(), "test"), where="test", settings=settings)


def test_an_a01_gives_the_bed_the_configured_pseudonym_and_the_weight_and_height_sent() -> None:
    change = decode(
        adt_message(
            "A01", "OBX|1|NM|29463-7^Body weight^LN||68500|g", "OBX|2|NM|8302-2^Body height^LN||1.72|m"
        )
    )
    assert (change.action, change.via, change.who) == (Action.ADMIT, Via.ADT, "adt:HIS")
    assert (change.ward, change.bed, change.patient) == ("w1", "b2", "P-2")
    assert change.weight_kg == pytest.approx(68.5)
    assert change.height_cm == pytest.approx(172)
    assert change.protocol is None


def test_the_pseudonym_is_never_another_identifier() -> None:
    assert decode(adt_message("A01"), AdmissionsConfig()).patient == "123"  # nothing configured: the first
    with pytest.raises(Hl7Error) as missing:
        decode(adt_message("A01", pid="123^^^HOSP^MR"))
    assert (missing.value.code, missing.value.reason) == ("AE", "missing_patient")


def test_a02_a03_a08_and_the_refused_events() -> None:
    transfer = decode(adt_message("A02", pv1="PV1||I|w1^^b4|||w1^^b2"))
    assert (transfer.action, transfer.bed, transfer.from_bed) == (Action.TRANSFER, "b4", "b2")
    discharge = decode(adt_message("A03", pv1="PV1||I|w1^^b2" + "|" * 33 + "01"))
    assert discharge.action is Action.DISCHARGE
    assert discharge.reason == "ADT A03, disposition 01"
    assert decode(adt_message("A08", "OBX|1|NM|3141-9||71|kg")).weight_kg == 71
    with pytest.raises(Hl7Error) as other:
        decode(adt_message("A04"))
    assert (other.value.code, other.value.reason) == ("AR", "unsupported_message")
    with pytest.raises(Hl7Error) as unit:
        decode(adt_message("A01", "OBX|1|NM|29463-7||150|[lb_av]"))
    assert (unit.value.code, unit.value.reason) == ("AE", "bad_unit")
    with pytest.raises(Hl7Error) as nowhere:
        decode(adt_message("A01", pv1="PV1||I|"))
    assert nowhere.value.reason == "missing_bed"
    with pytest.raises(Hl7Error) as escape:
        decode(adt_message("A01", pid="123^^^HOSP^MR~P-2\\\\^^^WARDD^PN"))
    assert (escape.value.code, escape.value.reason) == ("AE", "bad_escape")
    assert decode(adt_message("A08", "NTE|1||seen \\E\\\\F\\ twice")).action is Action.UPDATE


# --------------------------------------------------------------------------- the admin command


def test_the_admin_command_is_read_strictly() -> None:
    request, change = parse_command(
        {"request": "r1", "action": "admit", "ward": "w1", "bed": "b2", "protocol": "ssc-14d",
         "protocol_start": "2026-03-07T08:00:00+01:00", "delivered_before_ug": "unknown"},
        "nurse-admin",
    )  # fmt: skip
    assert request == "r1"
    assert change.before_unknown
    assert change.who == "nurse-admin"
    for bad, reason in (
        ({"action": "admit", "colour": "red"}, "bad_command"),
        ({"action": "evict"}, "bad_command"),
        ({"action": "admit", "weight_kg": "70"}, "bad_command"),
        ({"action": "admit", "protocol_start": "2026-03-07T08:00:00"}, "bad_start"),
        ({"action": "admit", "news2_spo2_scale": 3}, "bad_command"),
    ):
        with pytest.raises(AdmissionError) as error:
            parse_command(bad, "u")
        assert error.value.reason == reason, bad


# --------------------------------------------------------------------------- partway start


def test_status_says_what_came_before_a_watch_that_started_partway_and_that_nothing_is_read_yet() -> None:
    config = one_bed_config(START)
    bed = config.beds[0].model_copy(
        update={"watch_from": NOW - timedelta(hours=1), "delivered_before_watch_ug": None}
    )
    lines = "\n".join(status_lines(DoseState(), bed, NOW, config=config))
    assert "delivered total: no pump volume read yet" in lines
    assert "0.0 µg" not in lines.split("delivered total")[1].split("\n")[0]
    assert "before the watch (began 2026-03-10 11:00 UTC): unknown" in lines
    declared = bed.model_copy(update={"delivered_before_watch_ug": 27.0})
    assert "27.0 µg declared by staff" in "\n".join(status_lines(DoseState(), declared, NOW, config=config))
    from_start = "\n".join(status_lines(DoseState(), config.beds[0], NOW, config=config))
    assert "before the watch" not in from_start


def test_the_cumulative_check_of_a_partway_watch_says_what_came_before() -> None:
    config = one_bed_config(START)
    bed = config.beds[0].model_copy(
        update={"watch_from": NOW - timedelta(days=1), "delivered_before_watch_ug": None}
    )
    state = DoseState(delivered_ug=1.0, ledger_start=NOW - timedelta(days=1), ledger_time=NOW)
    finding = _cumulative(state, Timeline(schedule_for(bed, config), bed, config), DoseThresholds())
    assert finding is not None
    assert finding.details["before_watch_ug"] == "unknown"
    assert "before the watch: unknown" in finding.message.en


def test_a_stored_row_round_trips() -> None:
    row = Occupant(ward="w1", id="b2", patient="p-2", weight_kg=70, protocol="ssc-14d", protocol_start=NOW)
    assert Occupant.model_validate(row_data(row)) == row


# --------------------------------------------------------------------------- the engine and the book


class _Count:
    """A rule that counts the events of its bed (its state is the count)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def initial(self) -> int:
        return 0

    def step(self, state: int, event: object, now: datetime) -> tuple[int, list[AlertCandidate]]:
        return state + 1, []

    def dump(self, state: int) -> dict[str, int]:
        return {"n": state}

    def load(self, data: Mapping[str, int]) -> int:
        return data["n"]


def test_the_engine_moves_a_beds_states_to_another_and_drops_a_bed() -> None:
    engine = RuleEngine(
        {"b1": [_Count("a"), _Count("b")], "b2": [_Count("a")]}, wards={"b1": "w1", "b2": "w1"}
    )
    engine.handle(Tick(NOW), NOW)
    engine.handle(Tick(NOW), NOW)
    engine.take_changed()
    engine.move_bed("b1", "b7", "w1", [_Count("a"), _Count("b")])
    assert engine.beds == ["b2", "b7"]
    assert (engine.state("b7", "a"), engine.state("b7", "b")) == (2, 2)
    assert engine.dirty() == [("b7", "a"), ("b7", "b")]  # written whole under the new bed
    engine.handle(Tick(NOW), NOW)
    assert engine.state("b7", "a") == 3
    engine.drop_bed("b2")
    assert engine.beds == ["b7"]
    engine.set_bed("b2", "w1", [_Count("a")], keep_states=False)
    assert engine.state("b2", "a") == 0  # a new patient starts afresh
    engine.set_bed("b7", "w1", [_Count("a")], keep_states=True)
    assert engine.state("b7", "a") == 3  # new settings, same patient: the state goes on


def _open(book: AlertBook, bed: str, condition: str, priority: Priority) -> None:
    candidate = AlertCandidate(
        condition=condition,
        ward="w1",
        bed=bed,
        time=NOW,
        present=True,
        kind=Kind.PHYSIOLOGICAL,
        priority=priority,
    )
    book.apply(candidate, NOW)


def test_the_book_moves_a_beds_alerts_and_closes_them_with_a_reason() -> None:
    book = AlertBook()
    _open(book, "b1", "FEVER", Priority.MEDIUM)
    _open(book, "b1", "HYPOTENSION", Priority.HIGH)
    _open(book, "b2", "FEVER", Priority.MEDIUM)
    ids_before = {a.id for a in book.open_alerts() if a.bed == "b1"}
    moved = book.move_bed("w1", "b1", "w1", "b7", NOW)
    assert {t.alert.id for t in moved} == ids_before
    assert all(t.alert.phase is Phase.UPDATE and t.alert.details["moved_from"] == "w1/b1" for t in moved)
    assert sorted(a.bed for a in book.open_alerts()) == ["b2", "b7", "b7"]
    closed = book.close_bed("w1", "b7", NOW, "ADT A03")
    assert {t.alert.state for t in closed} == {AlertState.RESOLVED}  # the high one is not left latched
    assert all(t.alert.details["closed_because"] == "ADT A03" for t in closed)
    assert [a.bed for a in book.open_alerts()] == ["b2"]


_FIELD = st.text(alphabet=st.sampled_from(list("abw12-_.^&~\\é P0")), max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    event=st.sampled_from(["A01", "A02", "A03", "A08", "A04", ""]),
    pid=_FIELD,
    pv1=_FIELD,
    prior=_FIELD,
    obx_code=st.sampled_from(["29463-7", "8302-2", "3141-9", "x"]),
    obx_value=st.sampled_from(["70", "-1", "1e309", "nan", "", "abc", "0", "399.9", "400"]),
    obx_unit=st.sampled_from(["kg", "g", "cm", "m", "", "[lb_av]"]),
)
def test_any_adt_message_is_a_change_or_a_refusal_with_a_reason(
    event: str, pid: str, pv1: str, prior: str, obx_code: str, obx_value: str, obx_unit: str
) -> None:
    text = adt_message(
        event, f"OBX|1|NM|{obx_code}||{obx_value}|{obx_unit}", pid=pid, pv1=f"PV1||I|{pv1}|||{prior}"
    )
    refused: Hl7Error | AdmissionError | None = None
    try:
        change = adt.decode(hl7in.parse(text.encode(), "fuzz"), where="fuzz", settings=AdmissionsConfig())
        _ward().apply(change, NOW)
    except (Hl7Error, AdmissionError) as exc:
        refused = exc
    if refused is not None:
        assert refused.reason
        assert refused.detail


# --------------------------------------------------------------------------- in the pipeline


async def test_a_pump_left_at_a_discharged_bed_is_counted_and_noticed_and_the_daemon_restarts(
    tmp_path: Path,
) -> None:
    """A pump stays with the bed the file gives it: after its patient is discharged its
    readings reach no rule, are counted and raise the bed's notice, and a new start (the
    file still lists the bed and its pump) builds without it."""
    data = {
        "daemon": {"state_dir": str(tmp_path)},
        "influx": {"api": "none"},
        "beds": [
            {"ward": "w1", "id": "b1", "patient": "p-1", "weight_kg": 63, "height_cm": 165,
             "protocol_start": START.isoformat()}
        ],
        "pumps": [{"id": "p1", "bed": "b1", "url": "/dev/null"}],
    }  # fmt: skip
    pipeline = build(parse(data))
    desk = pipeline.desk
    assert desk is not None
    await desk.apply(Change(Action.DISCHARGE, Via.ADMIN, "nurse-admin", bed="b1", reason="home"))
    # The ward's own subject stays (daemon.tech_rules): its links are still watched.
    assert pipeline.engine.beds == ["_w1"]
    reading = PumpReading("w1", "b1", "p1", NOW, PumpState.INFUSING, 10.0, 1.0)
    await pipeline.process(reading)
    await pipeline.process(reading)
    assert pipeline.counters.get("admissions.unwatched_data", "pump") == 2
    notices = [a for a in pipeline.alerts.book.open_alerts() if a.condition == "UNWATCHED_BED_DATA"]
    assert [(a.bed, a.details["source"]) for a in notices] == [("b1", "pump")]
    commit_staged(pipeline.writer)
    pipeline.writer.store.close()
    again = build(parse(data))
    assert again.config.beds == []
    assert [pump.name for pump in again.pumps] == [pipeline.pumps[0].name]
    again.writer.store.close()


@pytest.mark.parametrize(("workers", "refused"), [(1, False), (2, True)])
def test_admin_users_need_one_worker(workers: int, refused: bool) -> None:
    data = {"daemon": {"workers": workers}, "admissions": {"admin_users": ["nurse-admin"]}}
    if not refused:
        assert parse(data).admissions.admin_users == ["nurse-admin"]
        return
    with pytest.raises(
        ConfigError, match=r"admissions\.admin_users: admissions at run time need daemon\.workers = 1"
    ):
        parse(data)


async def test_a_capture_says_beds_changed_and_replay_refuses_it_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replay runs on its config's beds, not on those admissions made at run time: a
    capture that saw an admission would replay to other alerts, so ``wardd replay`` says
    so (exit 2) instead of lying, and ``--force`` replays the rest."""
    captured = tmp_path / "run.jsonl"
    path = tmp_path / "ward.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\ncapture = "{captured}"\n[influx]\napi = "none"\n'
        '[[beds]]\nward = "w1"\nid = "b1"\npatient = "p-1"\nweight_kg = 63\nheight_cm = 165\n'
        f'protocol_start = "{START.isoformat()}"\n',
        encoding="utf-8",
    )
    pipeline = build(load_config(path), clock=ManualClock(NOW))
    desk = pipeline.desk
    assert desk is not None
    await pipeline.process(Tick(NOW))
    await desk.apply(admit(protocol="ssc-14d", protocol_start=NOW + timedelta(hours=1)))
    commit_staged(pipeline.writer)
    assert pipeline.capture is not None
    pipeline.capture.close()
    pipeline.writer.close()
    lines = [json.loads(line) for line in captured.read_text(encoding="utf-8").splitlines()]
    [admission] = [line for line in lines if line["type"] == "admission"]
    assert (admission["action"], admission["via"]) == ("admit", "admin")
    assert "b2" in admission["detail"]

    assert cli.main(["replay", str(captured), "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "holds 1 admission change(s) (beds changed at run time; line 3: admit" in err
    assert "add --force" in err
    assert cli.main(["replay", str(captured), "--config", str(path), "--force"]) == 0
