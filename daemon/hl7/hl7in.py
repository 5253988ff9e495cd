"""Monitors over HL7 v2: IHE PCD-01 ``ORU^R01`` messages (DEC), decoded into the same events
as the MQTT vitals topic, and the accept acknowledgements that answer them.

Facts from ../shared/domain.md section 5: OBX-3 ``code^REFID^MDC``, OBX-5 the value,
OBX-6 the MDC unit (``code^MDC_DIM_…^MDC``, a UCUM alternate in components 4 to 6 where
a vendor adds one), OBX-11 ``X`` for the MDS/VMD/channel rows without a value, OBX-14
the observation time (else OBR-7), OBX-18 the equipment. The bed comes from PV1-3, a
person location: the point of care (component 1) is the ward, the bed (component 3) the
bed. The patient's pseudonym in PID-3, when sent, must be the bed's configured one: data
under another patient's name is refused, never filed. Which PID-3 identifier is the
pseudonym is the site's choice, the same for every HL7 message (``PseudonymId``, from
``[admissions] pseudonym_type`` / ``pseudonym_authority``).

Each numeric observation goes through the MQTT path's own check (``telemetry.
check_observation``): the same codes, units, plausible ranges and 11073 sentinels (a
probe-off signal), so both paths count the same refusals under the same reasons. A
message is refused as a whole (``Hl7Error``) when nothing in it can be filed; single
observations are refused and counted while the rest is kept. Parsing and building use
python-hl7, never hand-split strings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import hl7
from hl7.util import escape as hl7_escape

from daemon import ids, mdc
from daemon.errors import InputError
from daemon.events import Event, Health, Metric, SourceHealth, VitalSample
from daemon.telemetry import MAX_AGE_S, ProbeOff, check_observation, refuse_future

Message: TypeAlias = hl7.Message
"""A parsed HL7 v2 message (python-hl7's)."""

REJECTED = "hl7.rejected"
"""Counter of refused messages and observations, by reason (as ``mqtt.rejected``)."""

SUPPORTED = ("ORU", "R01")


class Hl7Error(InputError):
    """A message refused as a whole; ``code`` is the acknowledgement it gets: ``AE`` (the
    data is wrong) or ``AR`` (a message this listener does not take)."""

    def __init__(self, code: str, reason: str, detail: str, where: str) -> None:
        super().__init__(reason, detail, where)
        self.code = code


@dataclass(frozen=True, slots=True)
class PseudonymId:
    """Which PID-3 identifier is the patient's pseudonym: the repetition whose identifier
    type code (CX-5) and assigning authority (CX-4) are these; the first identifier when
    neither is set."""

    type_code: str | None = None
    authority: str | None = None


FIRST_ID = PseudonymId()
"""PID-3's first identifier: the pseudonym when the site names no kind."""
_MAX_REPEATS = 20  # PID-3 identifiers looked at


def pseudonym(pid: hl7.Segment, which: PseudonymId) -> str:
    """The PID-3 identifier ``which`` names ("" when none matches, or none was sent)."""
    for repeat in range(1, _MAX_REPEATS + 1):
        value = _component(pid, 3, 1, repeat)
        if not value and repeat > 1 and not _component(pid, 3, 5, repeat):
            break
        if which.type_code is not None and _component(pid, 3, 5, repeat) != which.type_code:
            continue
        if which.authority is not None and _component(pid, 3, 4, repeat) != which.authority:
            continue
        return value
    return ""


def patient_of(message: hl7.Message, which: PseudonymId) -> str | None:
    """The patient's pseudonym in the message's PID-3, to check against the bed's: the
    identifier ``which`` names, else the first (a gateway that sends the pseudonym without
    its type code); ``None`` when the message names no patient (no PID, or an empty
    first identifier), to be filed by its place alone."""
    try:
        pid = message.segment("PID")
    except KeyError:
        return None
    return pseudonym(pid, which) or pseudonym(pid, FIRST_ID) or None


@dataclass(frozen=True, slots=True)
class Bed:
    """A configured bed as the listener looks it up: by (ward, bed) from PV1-3."""

    ward: str
    id: str
    patient: str


@dataclass(frozen=True, slots=True)
class Decoded:
    """One message's events, what was refused inside it, and its control id."""

    control_id: str
    events: tuple[Event, ...]
    rejected: tuple[InputError, ...]


def parse(raw: bytes, where: str) -> hl7.Message:
    """The message, or ``Hl7Error`` (AR) when it is not HL7 v2 at all."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Hl7Error("AR", "not_hl7", f"not UTF-8 text: {exc}", where) from exc
    # MSH, the field separator, then the four encoding characters: all different, and none
    # a segment end. python-hl7 takes them as given, and trips over repeated ones.
    delimiters = text[3:8]
    if not text.startswith("MSH") or len(delimiters) < 5 or len(set(delimiters)) < 5 or "\r" in delimiters:
        raise Hl7Error("AR", "not_hl7", "not an HL7 v2 message: no MSH with five distinct delimiters", where)
    try:
        message = hl7.parse(text)
        message.segment("MSH")
    except (KeyError, IndexError, ValueError, hl7.ParseException) as exc:
        raise Hl7Error("AR", "not_hl7", f"not an HL7 v2 message: {exc}", where) from exc
    return message


def check_escapes(message: hl7.Message, where: str) -> None:
    """``Hl7Error`` (AE ``bad_escape``) when a value holds an empty escape sequence (its
    escape character closed at once): not HL7, and python-hl7, reading such a field, logs
    it and goes on with the value changed. Call before reading any field (acknowledging
    reads none: it copies MSH as sent).

    Read as python-hl7 reads them: value by value (the leaves of the parsed message, as
    sent), each escape character opening a sequence that the next one closes, so that two
    sequences in a row (``\\E\\\\F\\``) are not taken for an empty one."""
    esc = message.esc
    for value in _values(message):
        start = value.find(esc)
        while start != -1:
            end = value.find(esc, start + 1)
            if end == -1:
                break  # not closed: python-hl7 keeps it as sent
            if end == start + 1:
                raise Hl7Error(
                    "AE", "bad_escape", "an empty escape sequence (two escape characters in a row)", where
                )
            start = value.find(esc, end + 1)


def _values(message: hl7.Message) -> Iterator[str]:
    """Every value of ``message`` as sent (not unescaped): the strings its segments nest, an
    MSH's from MSH-3 on (MSH-1 and MSH-2 are the delimiters, the escape character among
    them). A walk of the parsed lists: writing each segment out again took 3.5 times as long."""
    for segment in message:
        fields = iter(segment)
        if next(fields, None) == ["MSH"]:
            next(fields, None)
            next(fields, None)
        stack: list[Any] = list(fields)
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                yield item
            else:
                stack.extend(item)


def _component(segment: hl7.Segment, index: int, component: int = 1, repeat: int = 1) -> str:
    """One component of a field's repetition (the first by default; "" when not sent),
    through python-hl7's own path lookup: a field sent without components is its first
    component."""
    try:
        return str(segment.extract_field(field_num=index, repeat_num=repeat, component_num=component))
    except IndexError:
        return ""


def _field(segment: hl7.Segment, index: int) -> str:
    """A field's first component: the whole value of a field without components."""
    return _component(segment, index, 1)


def control_id(message: hl7.Message) -> str:
    """MSH-10, the id the acknowledgement names."""
    return _field(message.segment("MSH"), 10)


def _time(text: str, field: str, where: str, now: datetime, max_future_skew_s: float) -> datetime:
    try:
        when: datetime | None = hl7.parse_datetime(text)
    except ValueError as exc:
        raise InputError(
            "bad_timestamp", f"{field} {ids.shown(text)} is not an HL7 time: {exc}", where
        ) from exc
    if when is None or when.tzinfo is None:
        raise InputError("bad_timestamp", f"{field} {ids.shown(text)} has no UTC offset", where)
    when = when.astimezone(UTC)
    refuse_future(when, f"{field} {text}", now, max_future_skew_s, where)
    if now - when > timedelta(seconds=MAX_AGE_S):
        raise InputError("too_old", f"{field} {text} is more than {MAX_AGE_S / 86_400:.0f} days old", where)
    return when


def _unit(obx: hl7.Segment) -> str | None:
    """The UCUM unit of an OBX: the MDC unit mapped, or a UCUM alternate as sent."""
    for code_at, system_at in ((1, 3), (2, 3)):
        if _component(obx, 6, system_at) == "MDC":
            unit = mdc.MDC_UNITS.get(_component(obx, 6, code_at))
            if unit is not None:
                return unit
    if _component(obx, 6, 6) == "UCUM":
        return _component(obx, 6, 4)
    return None


def decode(
    message: hl7.Message,
    *,
    where: str,
    now: datetime,
    bed_of: Callable[[str, str], Bed | None],
    max_future_skew_s: float = 300.0,
    pseudonym_id: PseudonymId = FIRST_ID,
) -> Decoded:
    """One PCD-01 ``ORU^R01`` (as ``parse`` gave it): its vital-sign events; ``Hl7Error``
    when refused whole. ``pseudonym_id``: which PID-3 identifier is the patient's.

    Whole-message reasons: ``unsupported_message`` (AR; ``parse`` refuses ``not_hl7``); ``bad_escape``,
    ``missing_segment``, ``unknown_bed``, ``patient_mismatch``, ``no_observation`` (AE). Per observation (in
    ``rejected``): the MQTT reasons of ``check_observation``, ``bad_timestamp``,
    ``future_timestamp``, ``too_old``, ``bad_device``, ``duplicate_metric``, ``sentinel``.
    """
    check_escapes(message, where)
    msh = message.segment("MSH")
    kind = (_component(msh, 9, 1), _component(msh, 9, 2))
    if kind != SUPPORTED:
        raise Hl7Error("AR", "unsupported_message", f"MSH-9 {'^'.join(kind)}: only ORU^R01 is taken", where)
    ident = control_id(message)
    try:
        pv1 = message.segment("PV1")
        obr = message.segment("OBR")
    except KeyError as exc:
        raise Hl7Error("AE", "missing_segment", f"no {exc.args[0]} segment", where) from exc
    ward, bed_id = _component(pv1, 3, 1), _component(pv1, 3, 3)
    bed = bed_of(ward, bed_id)
    if bed is None:
        raise Hl7Error(
            "AE", "unknown_bed", f"PV1-3 names ward {ward!r} bed {bed_id!r}, not configured", where
        )
    patient = patient_of(message, pseudonym_id)
    if patient is not None and patient != bed.patient:
        # Never file one patient's data under another's name: a transfer not yet configured.
        raise Hl7Error(
            "AE",
            "patient_mismatch",
            f"PID-3 {ids.shown(patient)} is not the patient configured at {bed.ward}/{bed.id}",
            where,
        )
    samples, probe_off, rejected = _observations(message, _field(obr, 7), where, now, max_future_skew_s)
    events: list[Event] = [
        SourceHealth(bed.ward, bed.id, f"monitor.{metric}", when, Health.LOST, "probe-off")
        for when, metric in probe_off
    ]
    events.extend(
        VitalSample(bed.ward, bed.id, device, when, values) for (when, device), values in samples.items()
    )
    return Decoded(ident, tuple(events), tuple(rejected))


_Samples = dict[tuple[datetime, str], dict[Metric, float]]


def _observations(
    message: hl7.Message, default_time: str, where: str, now: datetime, max_future_skew_s: float
) -> tuple[_Samples, list[tuple[datetime, Metric]], list[InputError]]:
    """The numeric OBX rows as values per (time, device), probe-offs, and refusals."""
    samples: _Samples = {}
    rejected: list[InputError] = []
    probe_off: list[tuple[datetime, Metric]] = []
    numeric = 0
    for obx in message.segments("OBX"):
        at = f"{where} OBX {_field(obx, 1)}"
        if _field(obx, 11) == "X" or _field(obx, 2) != "NM":
            continue  # a structure row (MDS, VMD, channel) or a text value: nothing to file
        numeric += 1
        try:
            when = _time(_field(obx, 14) or default_time, "OBX-14", at, now, max_future_skew_s)
            device = ids.device_id(_component(obx, 18, 1) or "hl7", "OBX-18", at)
            code = _component(obx, 3, 1) or _component(obx, 3, 2)
            value = float(_field(obx, 5))
            number: float | int = int(value) if value.is_integer() and abs(value) < 2**31 else value
            metric, converted = check_observation({"code": code, "value": number, "unit": _unit(obx)}, at)
        except ProbeOff as off:
            probe_off.append((when, off.metric))
            rejected.append(InputError("sentinel", f"{off.metric} sent the 11073 '{off.name}' value", at))
            continue
        except ValueError:
            rejected.append(
                InputError("not_a_number", f"OBX-5 {ids.shown(_field(obx, 5))} is not a number", at)
            )
            continue
        except InputError as exc:
            rejected.append(exc)
            continue
        values = samples.setdefault((when, device), {})
        if metric in values:
            rejected.append(InputError("duplicate_metric", f"{metric} appears twice", at))
            continue
        values[metric] = converted
    if not numeric:
        raise Hl7Error("AE", "no_observation", "no numeric OBX to file", where)
    return samples, probe_off, rejected


_STAND_IN = hl7.parse("MSH|^~\\&|||||||ACK^R01^ACK||P|2.6")


def acknowledgement(message: hl7.Message | None, code: str = "AA", error: InputError | None = None) -> bytes:
    """The accept acknowledgement of ``message`` (``None``: unreadable, answered with an
    empty control id): ``MSA|<code>|<MSH-10>``, plus ``ERR`` with the reason and detail."""
    try:
        ack: hl7.Message = (message or _STAND_IN).create_ack(ack_code=code, application="WARDD")
    except (TypeError, IndexError, KeyError, ValueError):
        # A header python-hl7 cannot answer from (MSH-9 without its trigger event): the
        # answer takes a stand-in header and still names the message's control id.
        ack = _STAND_IN.create_ack(ack_code=code, application="WARDD")
        ack.segment("MSA").assign_field(hl7_escape(_STAND_IN, control_id(message)) if message else "", 2)
    if error is not None:
        # ERR-3 the error code (HL7 table 0357, 207: application error) with our reason,
        # ERR-4 severity E, ERR-8 the text for a person, escaped by the library.
        text = hl7_escape(_STAND_IN, " ".join(f"{error.reason}: {error.detail}".split()))
        reason = hl7_escape(_STAND_IN, error.reason)
        ack.append(hl7.parse(f"MSH|^~\\&|\rERR|||207^{reason}^HL70357|E||||{text}").segment("ERR"))
    return str(ack).encode("utf-8")


def beds_lookup(beds: Mapping[tuple[str, str], Bed]) -> Callable[[str, str], Bed | None]:
    """``bed_of`` for ``decode`` over a fixed table."""
    return lambda ward, bed: beds.get((ward, bed))
