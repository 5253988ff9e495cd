"""Admissions over HL7 v2: ADT A01 (admit), A02 (transfer), A03 (discharge) and A08 (update)
decoded into ``daemon.admissions.Change`` (python-hl7, never hand-split strings).

Where each fact comes from (HL7 v2.5 ADT): the bed from PV1-3, a person location whose
point of care (component 1) is the ward and bed (component 3) the bed, as for PCD-01
(``daemon.hl7.hl7in``); the bed a transfer leaves from PV1-6 (prior patient location); the
patient's pseudonym from the PID-3 identifier the site names (``[admissions]
pseudonym_type`` / ``pseudonym_authority``, matched on CX-5 and CX-4; the first
identifier when neither is set); weight and height from OBX rows whose OBX-3 code is
one of ``weight_codes`` / ``height_codes``, OBX-5 the value, OBX-6 the UCUM unit (kg or
g, cm or m); a discharge's reason from PV1-36 (discharge disposition) when sent.

ADT never carries the protocol: staff set it (``wardd admit --protocol``).
"""

from __future__ import annotations

import hl7

from daemon import ids
from daemon.admissions import Action, Change, Via
from daemon.config import AdmissionsConfig
from daemon.hl7.hl7in import Hl7Error, PseudonymId, _component, check_escapes, pseudonym

EVENTS = {"A01": Action.ADMIT, "A02": Action.TRANSFER, "A03": Action.DISCHARGE, "A08": Action.UPDATE}
"""The ADT trigger events taken, and what each does."""

_WEIGHT_KG = {"kg": 1.0, "g": 0.001}
_HEIGHT_CM = {"cm": 1.0, "m": 100.0}


def is_adt(message: hl7.Message) -> bool:
    """Whether MSH-9 names an ADT message (of any event)."""
    return _component(message.segment("MSH"), 9, 1) == "ADT"


def _segment(message: hl7.Message, name: str, where: str) -> hl7.Segment:
    try:
        return message.segment(name)
    except KeyError as exc:
        raise Hl7Error("AE", "missing_segment", f"no {name} segment", where) from exc


def pseudonym_id(settings: AdmissionsConfig) -> PseudonymId:
    """Which PID-3 identifier the site names as the pseudonym, for every HL7 message."""
    return PseudonymId(settings.pseudonym_type, settings.pseudonym_authority)


def _measure(
    message: hl7.Message, settings: AdmissionsConfig, where: str
) -> tuple[float | None, float | None]:
    weight_kg: float | None = None
    height_cm: float | None = None
    try:
        rows = message.segments("OBX")
    except KeyError:
        return None, None  # python-hl7 raises when a message has none: nothing sent
    for obx in rows:
        code = _component(obx, 3, 1)
        table = (
            _WEIGHT_KG
            if code in settings.weight_codes
            else _HEIGHT_CM
            if code in settings.height_codes
            else None
        )
        if table is None:
            continue
        at = f"{where} OBX {_component(obx, 1)}"
        unit = _component(obx, 6, 1)
        if unit not in table:
            raise Hl7Error(
                "AE",
                "bad_unit",
                f"OBX-6 {ids.shown(unit)} for {code}: expected one of {', '.join(table)}",
                at,
            )
        try:
            value = float(_component(obx, 5)) * table[unit]
        except ValueError as exc:
            raise Hl7Error(
                "AE", "not_a_number", f"OBX-5 {ids.shown(_component(obx, 5))} is not a number", at
            ) from exc
        if table is _WEIGHT_KG:
            weight_kg = value
        else:
            height_cm = value
    return weight_kg, height_cm


def decode(message: hl7.Message, *, where: str, settings: AdmissionsConfig) -> Change:
    """One ADT message (as ``hl7in.parse`` gave it) as a change; ``Hl7Error`` when refused:
    ``unsupported_message`` (AR: another ADT event), ``missing_segment``, ``missing_patient``,
    ``missing_bed``, ``bad_unit``, ``not_a_number`` (AE)."""
    check_escapes(message, where)
    msh = message.segment("MSH")
    event = _component(msh, 9, 2)
    action = EVENTS.get(event)
    if action is None:
        raise Hl7Error(
            "AR",
            "unsupported_message",
            f"MSH-9 ADT^{ids.shown(event)}: only A01, A02, A03 and A08 are taken",
            where,
        )
    pid = _segment(message, "PID", where)
    pv1 = _segment(message, "PV1", where)
    patient = pseudonym(pid, pseudonym_id(settings))
    if not patient:
        raise Hl7Error(
            "AE", "missing_patient", "no PID-3 identifier of the configured kind (the pseudonym)", where
        )
    ward, bed = _component(pv1, 3, 1) or None, _component(pv1, 3, 3) or None
    if action in (Action.ADMIT, Action.TRANSFER) and (ward is None or bed is None):
        raise Hl7Error("AE", "missing_bed", "PV1-3 gives no point of care and bed", where)
    weight_kg, height_cm = _measure(message, settings, where)
    sender = _component(msh, 3, 1) or "?"
    return Change(
        action=action,
        via=Via.ADT,
        who=f"adt:{sender}" if ids.is_user_id(sender) else "adt",
        ward=ward,
        bed=bed if action is not Action.DISCHARGE else None,
        patient=patient,
        weight_kg=weight_kg,
        height_cm=height_cm,
        from_bed=(_component(pv1, 6, 3) or None) if action is Action.TRANSFER else None,
        reason=(f"ADT A03, disposition {_component(pv1, 36, 1)}" if _component(pv1, 36, 1) else "ADT A03")
        if action is Action.DISCHARGE
        else None,
    )


def location(message: hl7.Message) -> tuple[str, str]:
    """``(ward, bed)`` of PV1-3 (empty strings when not sent)."""
    try:
        pv1 = message.segment("PV1")
    except KeyError:
        return "", ""
    return _component(pv1, 3, 1), _component(pv1, 3, 3)
