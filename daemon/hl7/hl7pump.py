"""Pump servers over HL7 v2: IHE PCD-01 ``ORU^R01`` messages with infusion data, decoded
into the same ``PumpReading`` events as the serial drivers, so that the dose ledger, the
dose checks and the pump alerts treat a pump behind a pump server as one on a cable.

::

    pump server --MLLP--> hl7in.parse --takes?--> hl7pump.decode --> PumpReading
                                         (else hl7in.decode: vitals)
    PumpSilence: no reading for comm_lost_after_s --> SourceHealth LOST (PUMP_COMM_LOST)

Which pump: a configured pump with ``driver = "hl7"`` whose ``device`` is the OBX-18 of
the row, by its entity identifier (component 1) or universal id (component 3). A row
without OBX-18 belongs to the device of its MDS, as DEC's containment (OBX-4
``MDS.VMD.CHAN.METRIC``) has it: the OBX-18 of its MDS row (``<mds>.0.0.0``), else of
the first row of that MDS that names one. PV1-3 and PID-3 are not needed; when sent,
they must be the pump's configured bed and patient.

What: the OBX-3 codes of ``[hl7.pump_codes]`` (defaults: domain.md section 5): the
programmed rate and the current rate in mL/h, the volume infused in mL, with the unit
from OBX-6 (the MDC unit mapped, or a UCUM alternate), never assumed. domain.md gives no
code for the pump's state, so it is read from the current rate: above 0 infusing, 0
stopped; a reading without a current rate is refused (``no_current_rate``). The reading's
``rate_ml_per_h`` is the programmed rate, as the serial drivers report it, else the
current rate; its time is the latest time of its rows (OBX-14, else OBR-7).

A pump's reading is filed whole or not at all: a refused row of a configured pump (no
unit, an unknown unit, another unit, a value that is not a number, negative or an 11073
sentinel, an unusable time, the same quantity twice) refuses the message with ``AE`` and
the reason, since half a reading would hide the fault from the sender. Rows of devices that are not
configured pumps (a pump server serves the whole ward), and numeric codes that are not
pump quantities, are refused one by one and counted (``unknown_device``,
``unknown_code``); text rows that are not pump quantities are skipped, as for the vitals.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import hl7

from daemon import ids, mdc
from daemon.clock import Clock
from daemon.config import Config
from daemon.errors import InputError
from daemon.events import Emit, Event, Health, PumpReading, PumpState, SourceHealth
from daemon.hl7.hl7in import (
    FIRST_ID,
    SUPPORTED,
    Decoded,
    Hl7Error,
    PseudonymId,
    _component,
    _field,
    _time,
    _unit,
    check_escapes,
    control_id,
    patient_of,
)

log = logging.getLogger(__name__)


class Quantity(StrEnum):
    """What a pump row says (``[hl7.pump_codes]``)."""

    PROGRAMMED_RATE = "programmed_rate"
    CURRENT_RATE = "current_rate"
    VOLUME_INFUSED = "volume_infused"


UNITS: Mapping[Quantity, frozenset[str]] = {
    Quantity.PROGRAMMED_RATE: mdc.PUMP_RATE_UNITS,
    Quantity.CURRENT_RATE: mdc.PUMP_RATE_UNITS,
    Quantity.VOLUME_INFUSED: mdc.PUMP_VOLUME_UNITS,
}


@dataclass(frozen=True, slots=True)
class Hl7Pump:
    """A configured pump whose readings a pump server sends."""

    id: str
    ward: str
    bed: str
    patient: str
    device: str
    comm_lost_after_s: float


@dataclass(frozen=True, slots=True)
class Hl7Pumps:
    """The configured hl7 pumps by device, and the pump codes by code and reference id."""

    by_device: Mapping[str, Hl7Pump]
    codes: Mapping[str, Quantity]

    @classmethod
    def from_config(cls, config: Config) -> Hl7Pumps:
        """The ``driver = "hl7"`` pumps of ``config`` and its ``[hl7.pump_codes]``."""
        by_device: dict[str, Hl7Pump] = {}
        for pump in config.pumps:
            if pump.serial or pump.device is None:
                continue
            bed = config.bed(pump.bed)
            by_device[pump.device] = Hl7Pump(
                pump.id, bed.ward, bed.id, bed.patient, pump.device, pump.comm_lost_after_s
            )
        table = config.hl7.pump_codes
        codes = {code: quantity for quantity in Quantity for code in getattr(table, quantity.value)}
        return cls(by_device, codes)

    def quantity(self, obx: hl7.Segment) -> Quantity | None:
        """The pump quantity of an OBX by its OBX-3 code, else its reference id."""
        return self.codes.get(_component(obx, 3, 1)) or self.codes.get(_component(obx, 3, 2))

    def pump(self, equipment: tuple[str, str]) -> Hl7Pump | None:
        """The pump an OBX-18 (entity identifier, universal id) names, if configured."""
        entity, universal = equipment
        return self.by_device.get(entity) or self.by_device.get(universal)


def _equipment(obx: hl7.Segment) -> tuple[str, str]:
    return _component(obx, 18, 1), _component(obx, 18, 3)


def _mds(obx: hl7.Segment) -> str:
    """The MDS ordinal of OBX-4 (``"1"`` of ``1.2.1.3``), ``""`` when none is sent."""
    return _field(obx, 4).split(".", 1)[0]


def takes(message: hl7.Message, pumps: Hl7Pumps) -> bool:
    """Whether ``message`` is a pump server's: an ORU^R01 with a configured pump's device in
    some OBX-18, or with pump codes in OBX-3 and no vital sign (a monitor that also
    relays a pump's rate stays a monitor: its vital signs are not refused with it)."""
    msh = message.segment("MSH")
    if (_component(msh, 9, 1), _component(msh, 9, 2)) != SUPPORTED:
        return False
    segments = message.segments("OBX")
    if any(pumps.pump(_equipment(obx)) is not None for obx in segments):
        return True
    pump_codes = vital_codes = False
    for obx in segments:
        pump_codes = pump_codes or pumps.quantity(obx) is not None
        code = _component(obx, 3, 1) or _component(obx, 3, 2)
        vital_codes = vital_codes or mdc.lookup(code) is not None
    return pump_codes and not vital_codes


@dataclass
class _Rows:
    """One pump's accepted rows in a message."""

    pump: Hl7Pump
    values: dict[Quantity, float] = field(default_factory=dict)
    times: list[datetime] = field(default_factory=list)


def decode(
    message: hl7.Message,
    *,
    where: str,
    now: datetime,
    pumps: Hl7Pumps,
    max_future_skew_s: float = 300.0,
    pseudonym_id: PseudonymId = FIRST_ID,
) -> Decoded:
    """A pump server's ``ORU^R01`` (as ``hl7in.parse`` gave it): one ``PumpReading`` per
    configured pump in it; ``Hl7Error`` when refused whole.

    Whole-message reasons (AE): ``bad_escape``, ``unknown_device``, ``no_observation``, ``bed_mismatch``,
    ``patient_mismatch``, ``no_current_rate``, and any refused row of a configured pump:
    ``missing_unit``, ``unknown_unit``, ``wrong_unit``, ``not_a_number``, ``huge_number``,
    ``negative``, ``sentinel``, ``bad_timestamp``, ``future_timestamp``, ``too_old``,
    ``duplicate_metric``.
    Per row (in ``rejected``): ``unknown_device``, ``unknown_code``. An ADT or other
    message is ``unsupported_message`` (AR), as for the vitals.
    """
    check_escapes(message, where)
    msh = message.segment("MSH")
    kind = (_component(msh, 9, 1), _component(msh, 9, 2))
    if kind != SUPPORTED:
        raise Hl7Error("AR", "unsupported_message", f"MSH-9 {'^'.join(kind)}: only ORU^R01 is taken", where)
    try:
        default_time = _field(message.segment("OBR"), 7)
    except KeyError:
        default_time = ""
    rows, rejected, unknown_devices = _pump_rows(
        message,
        pumps=pumps,
        default_time=default_time,
        where=where,
        now=now,
        max_future_skew_s=max_future_skew_s,
    )
    if not rows:
        if unknown_devices:
            shown = ", ".join(ids.shown(d) for d in sorted(unknown_devices)[:5])
            raise Hl7Error("AE", "unknown_device", f"OBX-18 names no configured pump: {shown}", where)
        raise Hl7Error("AE", "no_observation", "no pump rate or volume to file", where)
    _check_place(message, rows.values(), where, pseudonym_id)
    events: list[Event] = [_reading(found, where) for found in rows.values()]
    return Decoded(control_id(message), tuple(events), tuple(rejected))


def _pump_rows(
    message: hl7.Message,
    *,
    pumps: Hl7Pumps,
    default_time: str,
    where: str,
    now: datetime,
    max_future_skew_s: float,
) -> tuple[dict[str, _Rows], list[InputError], set[str]]:
    """Each configured pump's rows; the rows refused one by one; the unknown devices seen."""
    segments = list(message.segments("OBX"))
    mds_device = _mds_devices(segments)
    rows: dict[str, _Rows] = {}
    rejected: list[InputError] = []
    unknown: set[str] = set()
    for obx in segments:
        if _field(obx, 11) == "X":
            continue  # a structure row (MDS, VMD, channel): nothing to file
        quantity = pumps.quantity(obx)
        if quantity is None and _field(obx, 2) != "NM":
            continue  # a text value (a drug's name): nothing to file, as for the vitals
        at = f"{where} OBX {_field(obx, 1)}"
        own = _equipment(obx)
        equipment = own if any(own) else mds_device.get(_mds(obx), ("", ""))
        pump = pumps.pump(equipment)
        if pump is None:
            name = equipment[0] or equipment[1]
            unknown.add(name or "(none)")
            rejected.append(
                InputError("unknown_device", f"OBX-18 {ids.shown(name)} is not a configured hl7 pump", at)
            )
            continue
        if quantity is None:
            code = _component(obx, 3, 1) or _component(obx, 3, 2)
            rejected.append(InputError("unknown_code", f"OBX-3 {ids.shown(code)} is not a pump quantity", at))
            continue
        try:
            value = _value(obx, quantity, at)
            when = _time(_field(obx, 14) or default_time, "OBX-14", at, now, max_future_skew_s)
        except InputError as exc:
            raise Hl7Error("AE", exc.reason, exc.detail, exc.where) from exc
        found = rows.setdefault(pump.id, _Rows(pump))
        if quantity in found.values:
            raise Hl7Error("AE", "duplicate_metric", f"{quantity} of pump {pump.id} appears twice", at)
        found.values[quantity] = value
        found.times.append(when)
    return rows, rejected, unknown


def _mds_devices(segments: Sequence[hl7.Segment]) -> dict[str, tuple[str, str]]:
    """The equipment of each MDS ordinal: its MDS row's OBX-18, else the first row's that has one."""
    devices: dict[str, tuple[str, str]] = {}
    for obx in segments:
        equipment, mds = _equipment(obx), _mds(obx)
        if not any(equipment) or not mds:
            continue
        if _field(obx, 4) == f"{mds}.0.0.0":
            devices[mds] = equipment  # the MDS row, even after a metric row that names one
        else:
            devices.setdefault(mds, equipment)
    return devices


def _value(obx: hl7.Segment, quantity: Quantity, at: str) -> float:
    """OBX-5 as a number in the quantity's unit; ``InputError`` with the reason."""
    text = _field(obx, 5)
    if _field(obx, 2) != "NM":
        raise InputError("not_a_number", f"{quantity} sent as OBX-2 {ids.shown(_field(obx, 2))}, not NM", at)
    try:
        value = float(text)
    except ValueError as exc:
        raise InputError("not_a_number", f"{quantity} OBX-5 {ids.shown(text)} is not a number", at) from exc
    if value.is_integer() and int(value) in mdc.SENTINELS:
        raise InputError("sentinel", f"{quantity} sent the 11073 '{mdc.SENTINELS[int(value)]}' value", at)
    if not math.isfinite(value):
        raise InputError("huge_number", f"{quantity} OBX-5 {ids.shown(text)} is not a finite number", at)
    if value < 0:
        raise InputError("negative", f"{quantity} {value:g} is below zero", at)
    allowed = ", ".join(sorted(UNITS[quantity]))
    sent = [_component(obx, 6, n) for n in range(1, 7)]
    if not any(sent):
        raise InputError("missing_unit", f"{quantity} without a unit (OBX-6 empty); expected {allowed}", at)
    unit = _unit(obx)
    if not unit:
        shown = "^".join(sent).rstrip("^")
        raise InputError("unknown_unit", f"{quantity} in OBX-6 {ids.shown(shown)}, not a known unit", at)
    if unit not in UNITS[quantity]:
        raise InputError("wrong_unit", f"{quantity} in {ids.shown(unit)}; expected {allowed}", at)
    return value


def _check_place(message: hl7.Message, rows: Iterable[_Rows], where: str, which: PseudonymId) -> None:
    """PV1-3 and the pseudonym in PID-3, when sent, must be the pumps' configured bed and patient."""
    try:
        pv1 = message.segment("PV1")
        ward, bed = _component(pv1, 3, 1), _component(pv1, 3, 3)
    except KeyError:
        ward = bed = ""
    patient = patient_of(message, which)
    for found in rows:
        pump = found.pump
        if (ward or bed) and (ward, bed) != (pump.ward, pump.bed):
            # A pump moved to another bed without the config saying so: filing its
            # volume in the first bed's ledger would be another patient's dose.
            raise Hl7Error(
                "AE",
                "bed_mismatch",
                f"PV1-3 names ward {ward!r} bed {bed!r}; pump {pump.id} is configured at {pump.ward}/{pump.bed}",
                where,
            )
        if patient is not None and patient != pump.patient:
            raise Hl7Error(
                "AE",
                "patient_mismatch",
                f"PID-3 {ids.shown(patient)} is not the patient configured at {pump.ward}/{pump.bed}",
                where,
            )


def _reading(found: _Rows, where: str) -> PumpReading:
    pump, values = found.pump, found.values
    current = values.get(Quantity.CURRENT_RATE)
    if current is None:
        raise Hl7Error(
            "AE",
            "no_current_rate",
            f"pump {pump.id}: no current rate ({Quantity.CURRENT_RATE}), so whether it infuses is not known",
            where,
        )
    return PumpReading(
        ward=pump.ward,
        bed=pump.bed,
        pump=pump.id,
        time=max(found.times),
        state=PumpState.INFUSING if current > 0 else PumpState.STOPPED,
        rate_ml_per_h=values.get(Quantity.PROGRAMMED_RATE, current),
        volume_infused_ml=values.get(Quantity.VOLUME_INFUSED),
    )


class PumpSilence:
    """The link health of the hl7 pumps, as ``PumpSource`` reports a serial pump's: a
    service of the pipeline.

    Guarantees: ``CONNECTED`` at the first reading of a pump, and again at the first after
    a loss; ``LOST`` once a pump has sent no reading for its ``comm_lost_after_s``
    (counted from the start, so a pump never heard from is lost too).
    """

    name = "hl7.pumps.silence"

    def __init__(self, pumps: Hl7Pumps, clock: Clock, emit: Emit) -> None:
        self._pumps = {pump.id: pump for pump in pumps.by_device.values()}
        self._clock = clock
        self._emit = emit
        start = clock.monotonic()
        self._heard_s = dict.fromkeys(self._pumps, start)
        self._health: dict[str, Health | None] = dict.fromkeys(self._pumps)

    def health(self, pump_id: str) -> Health | None:
        """The last health emitted for a pump (``None`` before any)."""
        return self._health[pump_id]

    async def heard(self, reading: PumpReading) -> None:
        """A reading of an hl7 pump was processed: the pump server speaks for it."""
        pump = self._pumps.get(reading.pump)
        if pump is None:
            return  # a serial pump's
        self._heard_s[pump.id] = self._clock.monotonic()
        if self._health[pump.id] is not Health.CONNECTED:
            self._health[pump.id] = Health.CONNECTED
            await self._emit(
                SourceHealth(pump.ward, pump.bed, f"pump[{pump.id}]", self._clock.now(), Health.CONNECTED)
            )

    async def run(self) -> None:
        """Watch until cancelled."""
        if not self._pumps:
            return
        start = self._clock.monotonic()
        for pump_id, heard in self._heard_s.items():
            self._heard_s[pump_id] = max(heard, start)
        while True:
            now_s = self._clock.monotonic()
            waits: list[float] = []
            for pump in self._pumps.values():
                deadline = self._heard_s[pump.id] + pump.comm_lost_after_s
                if now_s < deadline:
                    waits.append(deadline - now_s)
                    continue
                if self._health[pump.id] is not Health.LOST:
                    self._health[pump.id] = Health.LOST
                    detail = f"no reading from the pump server for {pump.comm_lost_after_s:g} s"
                    log.warning("pump[%s]: %s", pump.id, detail)
                    await self._emit(
                        SourceHealth(
                            pump.ward, pump.bed, f"pump[{pump.id}]", self._clock.now(), Health.LOST, detail
                        )
                    )
                waits.append(pump.comm_lost_after_s)
            await self._clock.sleep(min(waits))
