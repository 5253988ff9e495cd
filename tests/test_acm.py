"""IHE PCD ACM ORU^R40 messages (daemon/delivery/acm.py), pure: what each notice becomes,
read back with python-hl7 as an alert manager would."""

from __future__ import annotations

import contextlib
from typing import Any

import hl7
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from daemon.delivery import acm

AT = "2026-11-29T11:00:00+00:00"


def _alert(condition: str = "FEVER", **extra: Any) -> dict[str, Any]:
    return {
        "id": f"12-{condition}-20261129T105900Z",
        "ward": "haem",
        "bed": "12",
        "condition": condition,
        "priority": "medium",
        "kind": "physiological",
        "state": "active",
        "phase": "start",
        "value": 38.6,
        "unit": "Cel",
        "since": "2026-11-29T10:59:00+00:00",
        "updated": AT,
        "message": "Temperature 38.6 C",
        "details": {},
        **extra,
    }


def _notice(kind: str, *alerts: dict[str, Any], delivery: int = 7) -> dict[str, Any]:
    return {"delivery": delivery, "at": AT, "notice": kind, "alerts": list(alerts) or [_alert()]}


def _reports(notice: dict[str, Any], **codes: str) -> list[acm.Report]:
    return acm.reports(
        notice,
        patients={("haem", "12"): "SSC-001"},
        header=acm.Header("HAEM", "AM", "HOSP"),
        event_codes=codes,
    )


def _read(report: acm.Report) -> hl7.Message:
    return hl7.parse(report.encode().decode("utf-8"))


def _facet(message: hl7.Message, facet: int) -> hl7.Segment | None:
    for obx in message.segments("OBX"):
        if str(obx(4)) == f"{acm.FACET_PREFIX}.{facet}":
            return obx
    return None


@pytest.mark.parametrize(
    ("kind", "extra", "phase"),
    [
        ("alert", {}, "start"),
        ("digest", {}, "start"),
        ("digest", {"state": "resolved"}, None),
        ("digest", {"state": "acknowledged"}, None),
        ("worse", {"phase": "escalate", "priority": "high"}, "escalate"),
        ("worse", {"phase": "reactivate"}, "update"),
        ("escalation", {"phase": "overdue"}, "update"),
        ("repeat", {}, "update"),
        ("closing", {"state": "resolved", "phase": "end"}, "end"),
        ("closing", {"state": "acknowledged", "phase": "ack"}, "end"),
    ],
)
def test_each_notice_reports_its_phase(kind: str, extra: dict[str, Any], phase: str | None) -> None:
    assert acm.phase_of(kind, _alert(**extra)) == phase
    reports = _reports(_notice(kind, _alert(**extra)))
    assert [r.phase for r in reports] == ([] if phase is None else [phase])
    if phase is not None:
        facet = _facet(_read(reports[0]), 3)
        assert facet is not None
        assert str(facet(5)) == phase


def test_the_header_is_the_acm_profiles() -> None:
    [report] = _reports(_notice("alert"))
    msh = _read(report).segment("MSH")
    assert str(msh(9)) == "ORU^R40^ORU_R40"
    assert (str(msh(3)), str(msh(4)), str(msh(5)), str(msh(6))) == ("WARDD", "HAEM", "AM", "HOSP")
    assert (str(msh(10)), str(msh(11)), str(msh(12))) == (f"{_alert()['id']}.7", "P", "2.6")
    assert (str(msh(15)), str(msh(16)), str(msh(18))) == ("AL", "NE", "UNICODE UTF-8")
    assert str(msh(21)) == "IHE_PCD_ACM_001^IHE PCD^1.3.6.1.4.1.19376.1.6.4.4^ISO"
    message = _read(report)
    assert str(message.segment("PID")(3)) == "SSC-001"
    assert str(message.segment("PV1")(3)) == "haem^^12"
    assert str(message.segment("OBR")(4)) == "196616^MDC_EVT_ALARM^MDC"


def test_the_start_has_counter_0_and_later_messages_the_delivery_and_link_to_it() -> None:
    start = _read(_reports(_notice("alert", delivery=3))[0]).segment("OBR")
    end = _read(_reports(_notice("closing", _alert(state="resolved"), delivery=9))[0]).segment("OBR")
    alert_id = _alert()["id"]
    assert str(start(3)) == f"{alert_id}-0^WARDD"
    assert len(start) < 30  # no OBR-29 on the start
    assert str(end(3)) == f"{alert_id}-9^WARDD"
    assert str(end(29)) == f"^{alert_id}-0&WARDD"


def test_a_group_makes_one_message_per_alert_in_order() -> None:
    reports = _reports(_notice("alert", _alert("FEVER"), _alert("TACHYCARDIA", value=131, unit="/min")))
    assert [(r.control_id, r.alert_id.split("-")[1]) for r in reports] == [
        ("12-FEVER-20261129T105900Z.7", "FEVER"),
        ("12-TACHYCARDIA-20261129T105900Z.7", "TACHYCARDIA"),
    ]
    heart = _facet(_read(reports[1]), 2)
    assert heart is not None
    assert (str(heart(3)), str(heart(5)), str(heart(6))) == (
        "149514^MDC_PULS_RATE^MDC",
        "131",
        "264864^MDC_DIM_BEAT_PER_MIN^MDC",
    )


@pytest.mark.parametrize(
    ("condition", "codes", "expected", "flags"),
    [
        ("FEVER", {}, "196648^MDC_EVT_HI^MDC", "H~PM~SP"),
        ("HYPOXIA", {}, "HYPOXIA^HYPOXIA^99WARDD", "L~PM~SP"),
        ("HYPOXIA", {"HYPOXIA": "123^MDC_EVT_SITE"}, "123^MDC_EVT_SITE^MDC", "L~PM~SP"),
        ("FEVER", {"FEVER": "124^MDC_EVT_SITE"}, "124^MDC_EVT_SITE^MDC", "H~PM~SP"),
        ("PUMP_COMM_LOST", {}, "PUMP_COMM_LOST^PUMP_COMM_LOST^99WARDD", "A~PM~SP"),
    ],
)
def test_the_event_code_is_the_sites_then_the_built_in_then_a_local_one(
    condition: str, codes: dict[str, str], expected: str, flags: str
) -> None:
    [report] = _reports(_notice("alert", _alert(condition)), **codes)
    first = _facet(_read(report), 1)
    assert first is not None
    assert (str(first(3)), str(first(5)), str(first(8))) == (expected, condition, flags)


def test_priority_and_kind_map_onto_acm_codes() -> None:
    [report] = _reports(_notice("alert", _alert("DELIVERY_FAILED", priority="high", kind="technical")))
    message = _read(report)
    first, priority, kind = (_facet(message, n) for n in (1, 6, 7))
    assert first is not None
    assert priority is not None
    assert kind is not None
    assert str(first(8)) == "A~PH~ST"
    assert (str(priority(5)), str(kind(5))) == ("PH", "ST")


@pytest.mark.parametrize(
    ("details", "code"),
    [
        ({"measure": "sbp_mmhg"}, "150021^MDC_PRESS_BLD_NONINV_SYS^MDC"),
        ({"measure": "map_mmhg"}, "150023^MDC_PRESS_BLD_NONINV_MEAN^MDC"),
        ({}, None),
    ],
)
def test_hypotension_names_the_pressure_it_read(details: dict[str, str], code: str | None) -> None:
    alert = _alert("HYPOTENSION", value=84, unit="mm[Hg]", details=details)
    metric = _facet(_read(_reports(_notice("alert", alert))[0]), 2)
    assert (None if metric is None else str(metric(3))) == code


def test_no_value_no_metric_facet() -> None:
    metric = _facet(_read(_reports(_notice("alert", _alert(value=None)))[0]), 2)
    assert metric is None


def test_text_is_escaped_by_the_library_and_kept_in_utf8() -> None:
    text = "Température ≥ 38,5 °C | a^b & c~d \\ e"
    [report] = _reports(_notice("alert", _alert(message=text)))
    raw = report.encode()
    assert "Température ≥ 38,5 °C".encode() in raw
    message = _read(report)
    facet = _facet(message, 8)
    assert facet is not None
    assert message.unescape(str(facet(5))) == text
    assert len(message.segments("OBX")) == 7  # no separator broke a segment apart


def test_the_end_of_a_resolved_alert_is_inactive_and_of_an_acknowledged_one_active() -> None:
    for state, alarm in (("resolved", "inactive"), ("acknowledged", "active"), ("latched", "latched")):
        kind = "repeat" if state == "latched" else "closing"
        facet = _facet(_read(_reports(_notice(kind, _alert(state=state)))[0]), 4)
        assert facet is not None
        assert str(facet(5)) == alarm


def test_an_acknowledgement_is_read_and_anything_else_refused() -> None:
    answer = acm.read_ack(
        "MSH|^~\\&|AM||WARDD||20261129||ACK^R40^ACK|1|P|2.6\rMSA|ae|W7-0|bad\\T\\\rERR|||207|E||||why"
    )
    assert answer == acm.Answer("AE", "W7-0", "bad&; why")
    assert acm.read_ack("MSH|^~\\&|AM|||||ACK|1|P|2.6\rMSA|AA|W7-1").text == ""
    for raw in ("", "hello", "MSH|^~\\&|AM|||||ACK|1|P|2.6\rPID|1"):
        with pytest.raises(ValueError, match="not an HL7 acknowledgement"):
            acm.read_ack(raw)


@given(
    st.text(alphabet="MSHAE|^~\\&\r\nabc0123", max_size=60).map(lambda tail: "MSH|^~\\&|" + tail)
    | st.text(max_size=60)
)
@example("\rMSH1&\r2~\ne\r")  # python-hl7 alone fails an assertion on it
@settings(max_examples=300, deadline=None)
def test_whatever_comes_back_is_an_acknowledgement_or_a_value_error(raw: str) -> None:
    """An alert manager's bytes never stop the delivery worker with another exception."""
    with contextlib.suppress(ValueError):
        answer = acm.read_ack(raw)
        assert isinstance(answer.code, str)


@pytest.mark.parametrize(
    ("kind", "extra", "phase"),
    [
        ("escalation", {"phase": "overdue"}, "start"),
        ("repeat", {}, "start"),
        ("worse", {"phase": "escalate"}, "start"),
        ("closing", {"state": "resolved"}, "end"),
        ("digest", {"state": "resolved"}, None),
    ],
)
def test_a_receiver_told_for_the_first_time_gets_a_start(
    kind: str, extra: dict[str, Any], phase: str | None
) -> None:
    """A later level's manager hears of an alert first from an escalation: it starts there."""
    notice = {**_notice(kind, _alert(**extra), delivery=12), "first": True}
    reports = _reports(notice)
    assert [r.phase for r in reports] == ([] if phase is None else [phase])
    if phase == "start":
        obr = _read(reports[0]).segment("OBR")
        assert str(obr(3)).endswith("-0^WARDD")


def test_a_wards_own_alert_names_the_ward_alone() -> None:
    """A link lost is the ward's (daemon.tech_rules): no bed, no patient in PV1-3 and PID-3."""
    own = _alert("STORAGE_UNAVAILABLE", id="ward.haem-STORAGE_UNAVAILABLE-3", bed="_haem", kind="technical")
    [report] = _reports(_notice("alert", own))
    message = _read(report)
    assert str(message.segment("PV1")(3)) == "haem"
    assert str(message.segment("PID")(3)) == ""
