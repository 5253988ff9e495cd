"""IHE PCD ACM Report Alarm (PCD-04): a notice as HL7 v2.6 ``ORU^R40`` messages, one per
alert, and the accept acknowledgement read back. Pure: built and parsed with python-hl7
(fields assigned and escaped by the library, never joined by hand); no I/O.

Facts from ../shared/domain.md section 4: MSH-9 ``ORU^R40^ORU_R40``, MSH-15 ``AL``,
MSH-16 ``NE``, MSH-21 the ACM profile; OBR-3 the alert's unique id with an update
counter, OBR-4 ``196616^MDC_EVT_ALARM^MDC``, OBR-29 the parent (the start message's
OBR-3); OBX rows as facets under one OBX-4 prefix, facet 1 the event code with OBX-8
``abnormality~priority~source``, then the triggering metric, phase, alarm state,
priority, alert type and alert text under their attribute codes.

Choices where domain.md is silent (README, "Routing and delivery"):

- The update counter is 0 on the start message and the delivery's number on every
  later one: it grows with each notice, survives a restart, and is the same on a retry
  (so the alert manager can drop a repeat, as it can by MSH-10).
- Phases per notice: ``alert`` and ``digest`` start; ``worse`` escalates when the
  priority rose, else updates (a latched condition back); ``escalation`` and ``repeat``
  update (the alert manager escalates among people itself), or start when the manager
  hears of the alert for the first time (a later level's); ``closing`` ends. A digest
  leaves out the alerts closed meanwhile (nothing left to disseminate).
- Facet 5 (inactivation state) is not sent: its list of values is not confirmed.
- The attribute codes come with reference ids of the daemon's naming where domain.md
  gives only the number; the number is what identifies them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import hl7

from daemon.errors import InputError
from daemon.hl7 import hl7in
from daemon.ids import is_ward_subject
from daemon.timefmt import parse_iso

CHARSET = "UNICODE UTF-8"  # MSH-18, HL7 table 0211
PROFILE = ("IHE_PCD_ACM_001", "IHE PCD", "1.3.6.1.4.1.19376.1.6.4.4", "ISO")
SENDING_APPLICATION = "WARDD"
LOCAL_SYSTEM = "99WARDD"  # HL7's convention for a local coding system: 99 and a name
FACET_PREFIX = "1.0.0.0"  # OBX-4: the alert's containment path; a facet number follows
EVT_ALARM = ("196616", "MDC_EVT_ALARM")
EVT_HI = ("196648", "MDC_EVT_HI")
_ASCII_RUN = re.compile(r"[\x00-\x7f]+")

# Facets (OBX-4 suffix) and their attribute codes (domain.md section 4; the reference ids
# are the daemon's naming).
PHASE = (3, "68481", "MDC_ATTR_EVENT_PHASE")
STATE = (4, "68482", "MDC_ATTR_ALARM_STATE")
PRIORITY = (6, "68484", "MDC_ATTR_ALARM_PRIORITY")
TYPE = (7, "68485", "MDC_ATTR_ALERT_TYPE")
TEXT = (8, "68546", "MDC_ATTR_ALERT_TEXT")

BUILTIN_EVENT_CODES: Mapping[str, tuple[str, str]] = {
    # Limit alarms above a high limit (domain.md: 196648 MDC_EVT_HI). The low-limit code
    # is not confirmed: HYPOTENSION and HYPOXIA take a site's ``event_codes`` or 99WARDD.
    "FEVER": EVT_HI,
    "TACHYCARDIA": EVT_HI,
    "TACHYPNOEA": EVT_HI,
}
# HL7 table 0078: H above high, L below low, A abnormal (everything else).
ABNORMALITY: Mapping[str, str] = {
    "FEVER": "H",
    "TACHYCARDIA": "H",
    "TACHYPNOEA": "H",
    "HYPOTENSION": "L",
    "HYPOXIA": "L",
}
PRIORITIES = {"high": "PH", "medium": "PM", "low": "PL"}
SOURCES = {"physiological": "SP", "technical": "ST"}
STATES = {"active": "active", "latched": "latched", "acknowledged": "active", "resolved": "inactive"}

# The metric behind a vital-sign alert (facet 2): MDC code, reference id, MDC unit and its
# reference id (domain.md section 5). HYPOTENSION names its pressure in details.measure.
_TEMP = ("150364", "MDC_TEMP_BODY", "268192", "MDC_DIM_DEGC")
_HR = ("149514", "MDC_PULS_RATE", "264864", "MDC_DIM_BEAT_PER_MIN")
_SPO2 = ("150456", "MDC_PULS_OXIM_SAT_O2", "262688", "MDC_DIM_PERCENT")
_RR = ("151562", "MDC_RESP_RATE", "264928", "MDC_DIM_RESP_PER_MIN")
_PRESSURES = {
    "sbp_mmhg": ("150021", "MDC_PRESS_BLD_NONINV_SYS", "266016", "MDC_DIM_MMHG"),
    "dbp_mmhg": ("150022", "MDC_PRESS_BLD_NONINV_DIA", "266016", "MDC_DIM_MMHG"),
    "map_mmhg": ("150023", "MDC_PRESS_BLD_NONINV_MEAN", "266016", "MDC_DIM_MMHG"),
}
METRICS: Mapping[str, tuple[str, str, str, str]] = {
    "FEVER": _TEMP,
    "TACHYCARDIA": _HR,
    "HYPOXIA": _SPO2,
    "TACHYPNOEA": _RR,
}


@dataclass(frozen=True, slots=True)
class Header:
    """What the receiver's config puts in MSH."""

    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    """One message to send and the control id its acknowledgement must name."""

    control_id: str
    alert_id: str
    phase: str
    message: hl7.Message

    def encode(self) -> bytes:
        """The message as sent inside an MLLP frame (segments end in CR)."""
        return str(self.message).encode("utf-8")


def phase_of(notice: str, alert: Mapping[str, Any], *, first: bool = False) -> str | None:
    """The ACM event phase a notice of kind ``notice`` reports for ``alert``; ``None``:
    nothing to report (a digest's alert closed meanwhile). ``first``: the receiver hears
    of the alert for the first time (a later level): an open alert then starts."""
    if notice == "alert" or (first and notice in ("escalation", "repeat", "worse")):
        return "start"
    if notice == "digest":
        return None if alert["state"] in ("resolved", "acknowledged") else "start"
    if notice == "worse":
        return "escalate" if alert.get("phase") == "escalate" else "update"
    if notice == "closing":
        return "end"
    return "update"  # escalation, repeat


def reports(
    notice: Mapping[str, Any],
    *,
    patients: Mapping[tuple[str, str], str],
    header: Header,
    event_codes: Mapping[str, str],
) -> list[Report]:
    """The messages a notice (its JSON body, as queued) makes, in its alerts' order."""
    out: list[Report] = []
    delivery = int(notice["delivery"])
    at = parse_iso(notice["at"])
    for alert in notice["alerts"]:
        phase = phase_of(str(notice["notice"]), alert, first=bool(notice.get("first", False)))
        if phase is None:
            continue
        # Unique across the workers of a partitioned daemon too: each keeps its own
        # delivery numbers, but an alert id names its bed, which one worker owns.
        control_id = f"{alert['id']}.{delivery}"
        ids = _Ids(control_id, str(alert["id"]), phase, 0 if phase == "start" else delivery)
        patient = patients.get((str(alert["ward"]), str(alert["bed"])), "")
        message = _message(alert, ids, at, patient, header=header, event_codes=event_codes)
        out.append(Report(control_id, str(alert["id"]), phase, message))
    return out


def _ts(when: datetime) -> str:
    return f"{when:%Y%m%d%H%M%S%z}"


@dataclass(frozen=True, slots=True)
class _Ids:
    """What names one message: its control id, the alert, the phase and the update counter."""

    control_id: str
    alert_id: str
    phase: str
    counter: int


class _Builder:
    """Segments of one message, every value assigned and escaped by python-hl7."""

    def __init__(self) -> None:
        self.skeleton = hl7.parse("MSH|^~\\&|")
        self.rows: list[hl7.Segment] = []

    def escape(self, value: str) -> str:
        """``value`` with the separators escaped by the library; characters beyond ASCII
        are kept as they are (MSH-18 says UTF-8), where python-hl7 would write their
        code points as hex escapes, which mean bytes of the character set to a reader."""
        return _ASCII_RUN.sub(lambda run: str(self.skeleton.escape(run.group())), value)

    def put(
        self, segment: hl7.Segment, value: str, field: int, component: int = 1, sub: int | None = None
    ) -> None:
        segment.assign_field(self.escape(value), field, 1, component, sub)

    def segment(self, name: str) -> hl7.Segment:
        return self.skeleton.create_segment([self.skeleton.create_field([name])])

    def obx(self, facet: int, kind: str, code: tuple[str, str, str], value: str, updated: str) -> hl7.Segment:
        row = self.segment("OBX")
        self.put(row, str(len(self.rows) + 1), 1)
        self.put(row, kind, 2)
        for component, part in enumerate(code, start=1):
            self.put(row, part, 3, component)
        self.put(row, f"{FACET_PREFIX}.{facet}", 4)
        self.put(row, value, 5)
        self.put(row, "F", 11)
        self.put(row, updated, 14)
        self.rows.append(row)
        return row


def _message(
    alert: Mapping[str, Any],
    ids: _Ids,
    at: datetime,
    patient: str,
    *,
    header: Header,
    event_codes: Mapping[str, str],
) -> hl7.Message:
    b = _Builder()
    msh = b.skeleton.segment("MSH")
    for field, value in (
        (3, SENDING_APPLICATION),
        (4, header.sending_facility),
        (5, header.receiving_application),
        (6, header.receiving_facility),
        (7, _ts(at)),
        (10, ids.control_id),
        (11, "P"),
        (12, "2.6"),
        (15, "AL"),
        (16, "NE"),
        (18, CHARSET),
    ):
        b.put(msh, value, field)
    for component, value in enumerate(("ORU", "R40", "ORU_R40"), start=1):
        b.put(msh, value, 9, component)
    for component, value in enumerate(PROFILE, start=1):
        b.put(msh, value, 21, component)
    pid = b.segment("PID")
    b.put(pid, patient, 3)  # the bed's pseudonym, never a name
    pv1 = b.segment("PV1")
    b.put(pv1, "I", 2)
    b.put(pv1, str(alert["ward"]), 3, 1)  # PV1-3 as hl7in reads it: point of care ^^ bed
    if not is_ward_subject(str(alert["bed"])):
        # A ward's own alert (a link lost, daemon.tech_rules) names the point of care only.
        b.put(pv1, str(alert["bed"]), 3, 3)
    obr = b.segment("OBR")
    b.put(obr, "1", 1)
    b.put(obr, f"{ids.alert_id}-{ids.counter}", 3, 1)
    b.put(obr, SENDING_APPLICATION, 3, 2)
    for component, value in enumerate((*EVT_ALARM, "MDC"), start=1):
        b.put(obr, value, 4, component)
    b.put(obr, _ts(parse_iso(alert["since"])), 7)
    if ids.counter:
        # OBR-29 (EIP): the filler's id of the start message, linking this one to it.
        b.put(obr, f"{ids.alert_id}-0", 29, 2, 1)
        b.put(obr, SENDING_APPLICATION, 29, 2, 2)
    _facets(b, alert, ids.phase, event_codes)
    return b.skeleton.create_message([msh, pid, pv1, obr, *b.rows])


def _facets(b: _Builder, alert: Mapping[str, Any], phase: str, event_codes: Mapping[str, str]) -> None:
    updated = _ts(parse_iso(alert["updated"]))
    condition = str(alert["condition"])
    first = b.obx(1, "ST", _event_code(condition, event_codes), condition, updated)
    # OBX-8, repeated: abnormality ~ priority ~ source.
    flags = (
        ABNORMALITY.get(condition, "A"),
        PRIORITIES.get(str(alert["priority"]), "PN"),
        SOURCES.get(str(alert["kind"]), "SA"),
    )
    for repetition, flag in enumerate(flags, start=1):
        first.assign_field(b.escape(flag), 8, repetition)
    metric = _metric(condition, alert)
    if metric is not None and alert.get("value") is not None:
        row = b.obx(2, "NM", (metric[0], metric[1], "MDC"), _number(alert["value"]), updated)
        for component, part in enumerate((metric[2], metric[3], "MDC"), start=1):
            b.put(row, part, 6, component)
    state = STATES.get(str(alert["state"]), "active")
    for (facet, number, ref_id), value in (
        (PHASE, phase),
        (STATE, "inactive" if phase == "end" and alert["state"] == "resolved" else state),
        (PRIORITY, flags[1]),
        (TYPE, flags[2]),
        (TEXT, " ".join(str(alert.get("message", "")).split())),
    ):
        b.obx(facet, "ST", (number, ref_id, "MDC"), value, updated)


def _event_code(condition: str, site: Mapping[str, str]) -> tuple[str, str, str]:
    configured = site.get(condition)
    if configured is not None:
        number, ref_id = configured.split("^", 1)
        return (number, ref_id, "MDC")
    builtin = BUILTIN_EVENT_CODES.get(condition)
    if builtin is not None:
        return (builtin[0], builtin[1], "MDC")
    return (condition, condition, LOCAL_SYSTEM)


def _metric(condition: str, alert: Mapping[str, Any]) -> tuple[str, str, str, str] | None:
    if condition == "HYPOTENSION":
        measure = (alert.get("details") or {}).get("measure")
        return _PRESSURES.get(str(measure)) if measure is not None else None
    return METRICS.get(condition)


def _number(value: object) -> str:
    number = float(value)  # type: ignore[arg-type]
    return str(int(number)) if number.is_integer() else f"{number:g}"


@dataclass(frozen=True, slots=True)
class Answer:
    """What an acknowledgement said: MSA-1, the control id it names, and its text."""

    code: str
    control_id: str
    text: str


def read_ack(raw: str) -> Answer:
    """MSA-1, MSA-2 and the error text (MSA-3, ERR-8) of an acknowledgement;
    ``ValueError`` when it is not one."""
    try:
        # The inbound side's checks first (an MSH with five distinct delimiters): python-hl7
        # trips over others with an assertion.
        message = hl7in.parse(raw.encode("utf-8"), "acknowledgement")
        msa = message.segment("MSA")
    except (InputError, KeyError, IndexError, ValueError, AssertionError, hl7.ParseException) as exc:
        raise ValueError(f"not an HL7 acknowledgement: {exc}") from exc

    def field(segment: hl7.Segment, index: int) -> str:
        try:
            return str(segment.extract_field(field_num=index))
        except IndexError:
            return ""

    def text(segment: hl7.Segment, index: int) -> str:
        # A person's words: the escape sequences undone where python-hl7 can.
        value = field(segment, index)
        try:
            return str(message.unescape(value))
        except (ValueError, IndexError, KeyError):
            return value

    texts = [text(msa, 3)]
    for err in message.segments("ERR") if _has(message, "ERR") else ():
        texts.append(text(err, 8) or field(err, 3))
    return Answer(field(msa, 1).upper(), field(msa, 2), "; ".join(t for t in texts if t)[:300])


def _has(message: hl7.Message, name: str) -> bool:
    try:
        message.segment(name)
    except KeyError:
        return False
    return True
