"""The nurses' observations: validation of their JSON entries (``parse_observation``).

The CRS, ICANS and NEWS2 rules read what these entries record; the dose rule reads
their ``dose_declaration`` (validated in ``daemon.clinical.dose_label``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

from daemon import ids
from daemon.clinical.dose_label import parse_declaration
from daemon.errors import InputError
from daemon.events import (
    Acvpu,
    Handwriting,
    IcpFinding,
    MotorWeakness,
    Observation,
    Seizure,
    SeizurePattern,
)
from daemon.payloads import DEFAULT_MAX_PAYLOAD_BYTES, finite_number, load_json_object
from daemon.timefmt import parse_iso

OBSERVATION_FIELDS = frozenset(
    {
        "time",
        "by",
        "id",
        "corrects",
        "withdraws",
        "o2_flow_l_per_min",
        "o2_device",
        "vasopressors",
        "vasopressin",
        "acvpu",
        "antipyretic_given",
        "corticosteroid_given",
        "anti_cytokine_given",
        "seizure",
        "seizure_pattern",
        "seizure_over_5_min",
        "seizure_resolved",
        "motor_weakness",
        "raised_icp",
        "handwriting",
        "ice_score",
        "dose_declaration",
    }
)
# Oxygen devices a nurse may record (CRS grading in daemon.clinical.crs reads them).
O2_DEVICES: tuple[str, ...] = (
    "air",
    "nasal_cannula",
    "blow_by",
    "high_flow",
    "facemask",
    "non_rebreather",
    "venturi",
    "cpap",
    "bipap",
    "ventilator",
)
MAX_O2_FLOW_L_PER_MIN = 60.0  # high-flow systems top out around 60 L/min: site choice
MAX_VASOPRESSORS = 5  # more concurrent vasopressors is a typing error: site choice
MAX_FUTURE_SKEW_S = 300.0  # a nurse's clock may run a little ahead: site choice
MAX_AGE_S = 7 * 86_400.0  # older entries are typing errors, not late entries: site choice


def parse_observation(
    payload: bytes,
    ward: str,
    bed: str,
    where: str,
    now: datetime,
    *,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> Observation:
    """Validate a nurse's JSON entry; raise ``InputError`` with a stable reason key.

    Whatever the bytes, the result is an ``Observation`` or an ``InputError``.
    Fields: the clinical fields of ``events.Observation`` (all optional, at least one
    required) plus ``by`` (a person's name, see ``daemon.ids``), ``time`` (RFC 3339
    with an offset; default ``now``) and the entry's ``id``. An entry that ``corrects``
    an id restates the whole observation, with ``by`` and the ``time`` it applies to;
    one that ``withdraws`` an id carries only ``by`` and, optionally, ``time``.
    Reasons: those of ``load_json_object`` (``too_large``, ``invalid_json``,
    ``too_deep``, ``huge_number``, ``not_object``, ``duplicate_field``),
    ``unknown_field``, ``bad_type``, ``bad_name``, ``bad_id``, ``out_of_range``,
    ``bad_value``, ``bad_time``, ``future_time``, ``too_old``, ``empty``,
    ``inconsistent``, ``missing_by``, ``missing_time``; a ``dose_declaration`` adds
    ``missing_field`` (``daemon.clinical.dose_label.parse_declaration``).
    """
    data = load_json_object(payload, where, max_bytes=max_bytes, unique_fields=True)
    unknown = set(data) - OBSERVATION_FIELDS
    if unknown:
        allowed = ", ".join(sorted(OBSERVATION_FIELDS))
        raise InputError(
            "unknown_field", f"unknown field(s) {ids.shown_fields(unknown)} (allowed: {allowed})", where
        )
    time = _time(data.get("time"), now, where)
    by = data.get("by")
    if by is not None and not isinstance(by, str):
        raise InputError("bad_type", f"'by' must be a string, got {ids.shown(by)}", where)
    if by is not None:
        by = ids.person_name(by, "by", where)
    entry_id, corrects, withdraws = _entry_refs(data, by, where)
    flow = _number(data, "o2_flow_l_per_min", 0.0, MAX_O2_FLOW_L_PER_MIN, where)
    device = data.get("o2_device")
    if device is not None:
        if not isinstance(device, str):
            raise InputError("bad_type", "'o2_device' must be a string", where)
        if device not in O2_DEVICES:
            known = ", ".join(O2_DEVICES)
            raise InputError("bad_value", f"unknown o2_device {ids.shown(device)} (known: {known})", where)
    if device == "air" and flow is not None and flow > 0:
        raise InputError("inconsistent", "o2_device 'air' with an oxygen flow above 0", where)
    vasopressors = _integer(data, "vasopressors", 0, MAX_VASOPRESSORS, where)
    vasopressin = _boolean(data, "vasopressin", where)
    anti_cytokine = _boolean(data, "anti_cytokine_given", where)
    seizure, pattern, over_5_min, resolved = _seizure(data, where)
    motor = _choice(data, "motor_weakness", MotorWeakness, where)
    raised_icp = _icp_findings(data, where)
    ice_score = _integer(data, "ice_score", 0, 10, where)
    antipyretic = _boolean(data, "antipyretic_given", where)
    corticosteroid = _boolean(data, "corticosteroid_given", where)
    acvpu = _choice(data, "acvpu", Acvpu, where)
    handwriting = _choice(data, "handwriting", Handwriting, where)
    declaration = None
    if data.get("dose_declaration") is not None:
        # Read by the dose rule only; validated in daemon.clinical.dose_label.
        declaration = parse_declaration(data["dose_declaration"], by, time, where)
    clinical = (
        flow,
        device,
        vasopressors,
        vasopressin,
        acvpu,
        antipyretic,
        corticosteroid,
        anti_cytokine,
        seizure,
        motor,
        raised_icp,
        handwriting,
        ice_score,
        declaration,
    )
    if withdraws is not None:
        if any(value is not None for value in clinical):
            raise InputError("inconsistent", "a withdrawal records nothing else (send a correction)", where)
    elif all(value is None for value in clinical):
        raise InputError("empty", "the observation records nothing", where)
    return Observation(
        ward=ward,
        bed=bed,
        time=time,
        by=by,
        id=entry_id,
        corrects=corrects,
        withdraws=withdraws,
        o2_flow_l_per_min=flow,
        o2_device=device,
        vasopressors=vasopressors,
        vasopressin=vasopressin,
        acvpu=acvpu,
        antipyretic_given=antipyretic,
        corticosteroid_given=corticosteroid,
        anti_cytokine_given=anti_cytokine,
        seizure=seizure,
        seizure_pattern=pattern,
        seizure_over_5_min=over_5_min,
        seizure_resolved=resolved,
        motor_weakness=motor,
        raised_icp=raised_icp,
        handwriting=handwriting,
        ice_score=ice_score,
        dose_declaration=declaration,
    )


def _entry_refs(
    data: Mapping[str, Any], by: str | None, where: str
) -> tuple[str | None, str | None, str | None]:
    """``id``, ``corrects`` and ``withdraws``, checked against each other."""
    entry_id, corrects, withdraws = (_reference(data, key, where) for key in ("id", "corrects", "withdraws"))
    if corrects is not None and withdraws is not None:
        raise InputError("inconsistent", "an entry either corrects or withdraws, not both", where)
    if withdraws is not None and entry_id is not None:
        raise InputError("inconsistent", "a withdrawal has no 'id' of its own", where)
    if entry_id is not None and entry_id == corrects:
        raise InputError("inconsistent", "an entry cannot correct itself", where)
    if (corrects is not None or withdraws is not None) and by is None:
        raise InputError("missing_by", "a correction or a withdrawal must say who makes it ('by')", where)
    if corrects is not None and data.get("time") is None:
        raise InputError(
            "missing_time", "a correction must give the 'time' of the observation it restates", where
        )
    return entry_id, corrects, withdraws


def _reference(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError("bad_type", f"'{key}' must be a string, got {ids.shown(value)}", where)
    return ids.device_id(value, key, where, reason="bad_id")


def _seizure(
    data: Mapping[str, Any], where: str
) -> tuple[Seizure | None, SeizurePattern | None, bool | None, bool | None]:
    """``seizure`` and the facts about it; the facts need a seizure in the same entry."""
    seizure = _choice(data, "seizure", Seizure, where)
    pattern = _choice(data, "seizure_pattern", SeizurePattern, where)
    over_5_min = _boolean(data, "seizure_over_5_min", where)
    resolved = _boolean(data, "seizure_resolved", where)
    facts = (pattern, over_5_min, resolved)
    if (seizure is None or seizure is Seizure.NONE) and any(fact is not None for fact in facts):
        raise InputError(
            "inconsistent",
            "seizure_pattern, seizure_over_5_min and seizure_resolved describe a seizure",
            where,
        )
    return seizure, pattern, over_5_min, resolved


def _icp_findings(data: Mapping[str, Any], where: str) -> tuple[IcpFinding, ...] | None:
    value = data.get("raised_icp")
    if value is None:
        return None
    if not isinstance(value, list):
        raise InputError("bad_type", f"'raised_icp' must be a list, got {ids.shown(value)}", where)
    findings: list[IcpFinding] = []
    for item in value:
        if not isinstance(item, str):
            raise InputError("bad_type", f"'raised_icp' items must be strings, got {ids.shown(item)}", where)
        try:
            finding = IcpFinding(item)
        except ValueError as exc:
            known = ", ".join(m.value for m in IcpFinding)
            raise InputError(
                "bad_value", f"'raised_icp' item {ids.shown(item)} is not one of {known}", where
            ) from exc
        if finding in findings:
            raise InputError("bad_value", f"'raised_icp' lists {finding.value} twice", where)
        findings.append(finding)
    return tuple(findings)


def _time(raw: Any, now: datetime, where: str) -> datetime:
    if raw is None:
        return now
    if not isinstance(raw, str):
        raise InputError("bad_time", f"'time' must be an RFC 3339 string, got {ids.shown(raw)}", where)
    try:
        time = parse_iso(raw)
    except ValueError as exc:
        raise InputError("bad_time", f"'time' {exc} (write it like 2026-03-02T08:00:00Z)", where) from exc
    if time - now > timedelta(seconds=MAX_FUTURE_SKEW_S):
        raise InputError("future_time", f"'time' {raw} is ahead of the daemon's clock", where)
    if now - time > timedelta(seconds=MAX_AGE_S):
        raise InputError("too_old", f"'time' {raw} is more than 7 days old", where)
    return time


def _number(data: Mapping[str, Any], key: str, low: float, high: float, where: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    number = finite_number(value)
    if number is None:
        raise InputError("bad_type", f"'{key}' must be a number, got {ids.shown(value)}", where)
    if not low <= number <= high:
        raise InputError("out_of_range", f"'{key}' {number:g} is outside {low:g}-{high:g}", where)
    return number


def _integer(data: Mapping[str, Any], key: str, low: int, high: int, where: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError("bad_type", f"'{key}' must be a whole number, got {ids.shown(value)}", where)
    if not low <= value <= high:
        raise InputError("out_of_range", f"'{key}' {ids.shown(value)} is outside {low}-{high}", where)
    return value


def _boolean(data: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise InputError("bad_type", f"'{key}' must be true or false, got {ids.shown(value)}", where)
    return value


_E = TypeVar("_E", Acvpu, Handwriting, Seizure, SeizurePattern, MotorWeakness)


def _choice(data: Mapping[str, Any], key: str, kind: type[_E], where: str) -> _E | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError("bad_type", f"'{key}' must be a string, got {ids.shown(value)}", where)
    try:
        # ACVPU letters are upper case; a nurse's "v" means the same.
        return kind(value.upper() if kind is Acvpu else value)
    except ValueError as exc:
        known = ", ".join(m.value for m in kind)
        raise InputError("bad_value", f"'{key}' {ids.shown(value)} is not one of {known}", where) from exc
