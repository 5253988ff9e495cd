"""Admissions: beds, patients and protocol starts changed while the daemon runs (pure).

Three sources change who lies where (README, "Admissions"): the config file (the beds
it lists, as at start), an HL7 ADT feed (``daemon.hl7.adt``: admit, transfer, discharge,
update) and staff with an authenticated admin command (``wardd admit``, ``transfer``,
``discharge``). Each change is one ``Change``; ``apply`` checks it against the ward as it
is (the file's beds overlaid with the stored rows) with the config's own checks, and
gives the rows to store and what the pipeline must do, or refuses it with an
``AdmissionError`` that says why. No I/O and no clock: the time of the change is passed in.

The protocol and its start come only from staff: an ADT admission gives a bed with a
patient and no protocol watch until staff set one (``wardd admit --protocol ...``), so
its data is counted as reaching an unwatched bed, never judged against a guessed protocol.

A stored row overrides the file's bed of the same id only while the file still says
what it said when the row was written (``Occupant.file_patient``): a file edited since
(another patient, or the bed gone) is the newer change and wins (``load``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError

from daemon import ids
from daemon.config import AwareDatetime, BedConfig, Config, Ident, Model, bed_problems
from daemon.errors import InputError
from daemon.timefmt import iso

PATIENT_MAX_CHARS = 64


class Via(StrEnum):
    """Where a change came from (journaled as ``via``)."""

    ADT = "adt"  # an HL7 ADT message over MLLP
    ADMIN = "admin"  # `wardd admit` ..., as the broker's authenticated user
    WEB = "web"  # the ward page, as a logged-in user of role admin
    CONFIG = "config"  # the config file, edited and the daemon restarted


class Action(StrEnum):
    """What a change does."""

    ADMIT = "admit"
    UPDATE = "update"
    TRANSFER = "transfer"
    DISCHARGE = "discharge"


class AdmissionError(InputError):
    """A change refused; ``reason`` is a short code, ``detail`` says why for a person."""


class Occupant(Model):
    """Who lies in a bed, as the store keeps it; ``patient`` ``None``: the bed was emptied
    (a discharge or a transfer out of a bed the file lists)."""

    ward: Ident
    id: Ident
    patient: Annotated[str, Field(min_length=1, max_length=PATIENT_MAX_CHARS)] | None = None
    weight_kg: Annotated[float, Field(gt=0, lt=400)] | None = None
    height_cm: Annotated[float, Field(gt=30, lt=260)] | None = None
    protocol: str | None = None
    protocol_start: AwareDatetime | None = None
    watch_from: AwareDatetime | None = None
    delivered_before_watch_ug: Annotated[float, Field(ge=0, le=100_000)] | None = None
    news2_spo2_scale: Literal[1, 2] = 1
    thresholds: dict[str, dict[str, Any]] = Field(default_factory=dict)
    file_patient: str | None = None
    """The file's patient at this bed when the row was written (``None``: not in the file)."""

    @property
    def watched(self) -> bool:
        """Whether a protocol watch runs at this bed (a patient, a protocol and its start)."""
        return self.patient is not None and self.protocol is not None and self.protocol_start is not None

    def bed(self) -> BedConfig:
        """The watched bed as the rules take it; ``ValidationError`` when it is not valid."""
        return BedConfig.model_validate(
            {
                "ward": self.ward,
                "id": self.id,
                "patient": self.patient,
                "weight_kg": self.weight_kg,
                "height_cm": self.height_cm,
                "protocol": self.protocol,
                "protocol_start": self.protocol_start,
                "watch_from": self.watch_from,
                "delivered_before_watch_ug": self.delivered_before_watch_ug,
                "news2_spo2_scale": self.news2_spo2_scale,
                "thresholds": self.thresholds,
            }
        )


def from_bed(bed: BedConfig) -> Occupant:
    """A configured bed as an occupant."""
    return Occupant(
        ward=bed.ward,
        id=bed.id,
        patient=bed.patient,
        weight_kg=bed.weight_kg,
        height_cm=bed.height_cm,
        protocol=bed.protocol,
        protocol_start=bed.protocol_start,
        watch_from=bed.watch_from,
        delivered_before_watch_ug=bed.delivered_before_watch_ug,
        news2_spo2_scale=bed.news2_spo2_scale,
        thresholds=bed.thresholds,
        file_patient=bed.patient,
    )


@dataclass(frozen=True, slots=True)
class Change:
    """One admission change, from whichever source. Fields not given are ``None``.

    ``admit``: ``ward``/``bed``, ``patient`` (else the bed's current one), weight and
    height, and from staff the protocol and its start; ``delivered_before_ug`` with
    ``before_unknown`` for a start in the past. ``update``: the patient (or the bed) and
    new weight or height. ``transfer``: the patient (or ``from_bed``) to ``ward``/``bed``.
    ``discharge``: the patient or the bed, and a ``reason``.
    """

    action: Action
    via: Via
    who: str
    ward: str | None = None
    bed: str | None = None
    patient: str | None = None
    weight_kg: float | None = None
    height_cm: float | None = None
    protocol: str | None = None
    protocol_start: datetime | None = None
    delivered_before_ug: float | None = None
    before_unknown: bool = False
    news2_spo2_scale: int | None = None
    from_bed: str | None = None
    reason: str | None = None

    def summary(self) -> dict[str, Any]:
        """The change's given fields, for the journal."""
        out: dict[str, Any] = {"action": str(self.action), "via": str(self.via)}
        for name in (
            "ward",
            "bed",
            "patient",
            "weight_kg",
            "height_cm",
            "protocol",
            "delivered_before_ug",
            "news2_spo2_scale",
            "from_bed",
            "reason",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.protocol_start is not None:
            out["protocol_start"] = iso(self.protocol_start)
        if self.before_unknown:
            out["delivered_before"] = "unknown"
        return out


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an accepted change does: the rows to store (``None`` value: delete the row),
    and for the pipeline the beds whose watch starts, changes, moves or ends."""

    action: Action
    rows: dict[str, Occupant | None] = field(default_factory=dict)
    started: tuple[str, ...] = ()  # beds whose watch starts (new patient, or a first protocol)
    changed: tuple[str, ...] = ()  # beds whose watch goes on with new settings (states kept)
    moved: tuple[str, str] | None = None  # (from bed, to bed): states, ledger and alerts move
    ended: tuple[str, ...] = ()  # beds whose watch ends (their alerts close)
    noop: bool = False  # the ward is already as the change asks (a resent message)
    detail: str = ""  # a line for the log and the reply

    def journal(self, change: Change, at: datetime) -> dict[str, Any]:
        """The journal entry of this outcome (who, when, what)."""
        entry: dict[str, Any] = {
            "at": iso(at),
            "who": change.who,
            "what": str(self.action),
            "via": str(change.via),
            "change": change.summary(),
            "detail": self.detail,
        }
        bed = self.moved[1] if self.moved else (change.bed or change.from_bed)
        if bed is None:
            bed = next(iter(self.rows), None)
        entry["bed"] = bed
        return entry


class Ward:
    """The ward as it stands: the file's beds overlaid with the stored rows."""

    def __init__(self, config: Config, rows: Mapping[str, Occupant] | None = None) -> None:
        self.config = config
        """The config as read from the file (its beds are the baseline)."""
        self.rows: dict[str, Occupant] = dict(rows or {})
        self._file = {bed.id: bed for bed in config.beds}

    @functools.cached_property
    def wards(self) -> frozenset[str]:
        """The wards of its beds, the file's and the admitted ones (a ward is changed by
        ``updated``, which makes a new one)."""
        return frozenset(bed.ward for bed in self.config.beds) | {row.ward for row in self.rows.values()}

    def occupants(self) -> dict[str, Occupant]:
        """Every occupied bed, by id (the file's, unless a row overrides it)."""
        out = {bed.id: from_bed(bed) for bed in self.config.beds}
        for bed_id, row in self.rows.items():
            if row.patient is None:
                out.pop(bed_id, None)
            else:
                out[bed_id] = row
        return out

    def beds(self) -> list[BedConfig]:
        """The watched beds, in the file's order then the admitted ones."""
        return [occupant.bed() for occupant in self.occupants().values() if occupant.watched]

    def effective(self) -> Config:
        """The config with the watched beds of the ward as it stands."""
        return self.config.model_copy(update={"beds": self.beds()})

    def where(self, bed_id: str) -> str | None:
        """The ward a bed belongs to, if any source knows it."""
        row = self.rows.get(bed_id)
        if row is not None:
            return row.ward
        bed = self._file.get(bed_id)
        return None if bed is None else bed.ward

    def find_patient(self, patient: str) -> Occupant | None:
        """The bed of ``patient``, if admitted."""
        return next((o for o in self.occupants().values() if o.patient == patient), None)

    def updated(self, outcome: Outcome) -> Ward:
        """The ward after ``outcome``."""
        rows = dict(self.rows)
        for bed_id, row in outcome.rows.items():
            if row is None:
                rows.pop(bed_id, None)
            else:
                rows[bed_id] = row
        return Ward(self.config, rows)

    def _row(self, occupant: Occupant) -> Occupant:
        """``occupant`` as stored: with the file's patient at its bed, when the file lists it."""
        file_bed = self._file.get(occupant.id)
        return occupant.model_copy(update={"file_patient": None if file_bed is None else file_bed.patient})

    def _vacated(self, ward: str, bed_id: str) -> Occupant | None:
        """The row that empties ``bed_id``: a marker over the file's bed, else no row at all."""
        file_bed = self._file.get(bed_id)
        if file_bed is None:
            return None
        return Occupant(ward=ward, id=bed_id, file_patient=file_bed.patient)

    # --- the changes ------------------------------------------------------------------------

    def apply(self, change: Change, now: datetime) -> Outcome:
        """Check ``change`` at time ``now`` and say what it does; ``AdmissionError`` when refused."""
        try:
            if change.action is Action.ADMIT:
                return self._admit(change, now)
            if change.action is Action.UPDATE:
                return self._update(change)
            if change.action is Action.TRANSFER:
                return self._transfer(change)
            return self._discharge(change)
        except ValidationError as exc:
            # Whatever field a sender got wrong, a refusal that says which, never a crash.
            raise AdmissionError("invalid", "; ".join(_reason(e) for e in exc.errors())) from exc

    def _place(self, change: Change) -> tuple[str, str]:
        if change.ward is None or change.bed is None:
            raise AdmissionError("missing_bed", "the change names no ward and bed")
        _ident(change.ward, "ward")
        _ident(change.bed, "bed")
        known = self.where(change.bed)
        if known is not None and known != change.ward:
            # Bed ids are unique across wards: the rules, the store and alert ids key on them.
            raise AdmissionError(
                "bed_in_other_ward", f"bed {change.bed} belongs to ward {known}, not {change.ward}"
            )
        return change.ward, change.bed

    def _admit(self, change: Change, now: datetime) -> Outcome:
        ward, bed_id = self._place(change)
        occupants = self.occupants()
        current = occupants.get(bed_id)
        patient = change.patient or (current.patient if current is not None else None)
        if patient is None:
            raise AdmissionError("missing_patient", f"bed {bed_id} is empty: name the patient (a pseudonym)")
        _patient(patient)
        if current is not None and current.patient != patient:
            raise AdmissionError(
                "bed_occupied",
                f"bed {bed_id} holds patient {current.patient}: discharge or transfer them first",
            )
        elsewhere = self.find_patient(patient)
        if elsewhere is not None and elsewhere.id != bed_id:
            raise AdmissionError(
                "already_admitted", f"patient {patient} is in bed {elsewhere.id}: transfer them instead"
            )
        base = current or Occupant(ward=ward, id=bed_id, patient=patient)
        updates: dict[str, Any] = {"patient": patient}
        if change.weight_kg is not None:
            updates["weight_kg"] = change.weight_kg
        if change.height_cm is not None:
            updates["height_cm"] = change.height_cm
        if change.news2_spo2_scale is not None:
            updates["news2_spo2_scale"] = change.news2_spo2_scale
        if change.protocol is not None or change.protocol_start is not None:
            if change.via is Via.ADT:
                raise AdmissionError(
                    "protocol_from_adt", "the protocol and its start are set by staff, not by ADT"
                )
            if change.protocol is None or change.protocol_start is None:
                raise AdmissionError("missing_protocol", "give both the protocol and its start")
            updates.update(self._start(change, now))
        elif change.delivered_before_ug is not None or change.before_unknown:
            raise AdmissionError(
                "missing_protocol", "what was delivered before the watch goes with a protocol start"
            )
        occupant = self._checked(base, updates)
        if current is not None and _same(current, occupant):
            return Outcome(Action.ADMIT, noop=True, detail=f"bed {bed_id} already holds {patient} as asked")
        rows: dict[str, Occupant | None] = {bed_id: self._row(occupant)}
        if current is None or not current.watched:
            started = (bed_id,) if occupant.watched else ()
            detail = f"{patient} admitted to {ward}/{bed_id}" + (
                f" on {occupant.protocol} from {iso(occupant.protocol_start)}"
                if occupant.watched and occupant.protocol_start is not None
                else ", no protocol watch until staff set one"
            )
            return Outcome(Action.ADMIT, rows, started=started, detail=detail)
        return Outcome(Action.ADMIT, rows, changed=(bed_id,), detail=f"{patient} at {ward}/{bed_id} updated")

    def _start(self, change: Change, now: datetime) -> dict[str, Any]:
        """The protocol fields of an admission; a start in the past says what came before."""
        start = change.protocol_start
        assert start is not None
        if start.tzinfo is None:
            raise AdmissionError("bad_start", "the protocol start needs a time zone offset")
        given = change.delivered_before_ug is not None or change.before_unknown
        if start >= now:
            if given:
                raise AdmissionError(
                    "nothing_before",
                    "the protocol starts now or later: nothing was delivered before the watch",
                )
            return {"protocol": change.protocol, "protocol_start": start, "watch_from": None,
                    "delivered_before_watch_ug": None}  # fmt: skip
        if not given:
            raise AdmissionError(
                "delivered_before_missing",
                f"the protocol started {iso(start)}, before this admission: give what was delivered "
                "before the watch (µg), or say it is unknown",
            )
        if change.delivered_before_ug is not None and change.before_unknown:
            raise AdmissionError(
                "delivered_before_twice", "give the µg delivered before the watch, or unknown, not both"
            )
        return {
            "protocol": change.protocol,
            "protocol_start": start,
            "watch_from": now,
            "delivered_before_watch_ug": change.delivered_before_ug,
        }

    def _checked(self, base: Occupant, updates: Mapping[str, Any]) -> Occupant:
        """``base`` with ``updates``, validated as the config validates a bed."""
        try:
            occupant = Occupant.model_validate({**base.model_dump(), **updates})
        except ValidationError as exc:
            raise AdmissionError("invalid", "; ".join(_reason(e) for e in exc.errors())) from exc
        if not occupant.watched:
            return occupant
        try:
            bed = occupant.bed()
        except ValidationError as exc:
            raise AdmissionError("invalid", "; ".join(_reason(e) for e in exc.errors())) from exc
        problems = bed_problems(self.config, bed)
        if problems:
            raise AdmissionError("refused", "; ".join(problems))
        return occupant

    def _occupant_of(self, change: Change, bed_id: str | None) -> Occupant:
        occupants = self.occupants()
        if change.patient is not None:
            found = self.find_patient(change.patient)
            if found is None:
                raise AdmissionError("not_admitted", f"patient {ids.shown(change.patient)} is in no bed")
            if bed_id is not None and found.id != bed_id:
                raise AdmissionError(
                    "wrong_bed", f"patient {change.patient} is in bed {found.id}, not {bed_id}"
                )
            return found
        if bed_id is None:
            raise AdmissionError("missing_patient", "name the patient or the bed")
        found = occupants.get(bed_id)
        if found is None:
            raise AdmissionError("not_admitted", f"bed {ids.shown(bed_id)} is empty")
        return found

    def _update(self, change: Change) -> Outcome:
        current = self._occupant_of(change, change.bed)
        updates: dict[str, Any] = {}
        if change.weight_kg is not None:
            updates["weight_kg"] = change.weight_kg
        if change.height_cm is not None:
            updates["height_cm"] = change.height_cm
        occupant = self._checked(current, updates)
        if _same(current, occupant):
            return Outcome(Action.UPDATE, noop=True, detail=f"nothing new for {current.patient}")
        return Outcome(
            Action.UPDATE,
            {current.id: self._row(occupant)},
            changed=(current.id,) if occupant.watched else (),
            detail=f"{current.patient} at {current.ward}/{current.id} updated",
        )

    def _transfer(self, change: Change) -> Outcome:
        ward, to_bed = self._place(change)
        if change.patient is None and change.from_bed is None:
            raise AdmissionError("missing_patient", "name the patient or the bed they leave")
        if change.patient is not None:
            found = self.find_patient(change.patient)
            if found is not None and found.id == to_bed:
                return Outcome(Action.TRANSFER, noop=True, detail=f"{change.patient} is already in {to_bed}")
        current = self._occupant_of(change, change.from_bed)
        if current.id == to_bed:
            return Outcome(Action.TRANSFER, noop=True, detail=f"{current.patient} is already in {to_bed}")
        target = self.occupants().get(to_bed)
        if target is not None:
            raise AdmissionError("bed_occupied", f"bed {to_bed} holds patient {target.patient}")
        moved = current.model_copy(update={"ward": ward, "id": to_bed})
        # The target bed's own settings from the file (threshold overrides) do not follow
        # the patient: what moves is the patient, their protocol and their measurements.
        moved = self._checked(moved, {})
        rows: dict[str, Occupant | None] = {
            to_bed: self._row(moved),
            current.id: self._vacated(current.ward, current.id),
        }
        return Outcome(
            Action.TRANSFER,
            rows,
            moved=(current.id, to_bed) if moved.watched else None,
            detail=f"{current.patient} moved from {current.ward}/{current.id} to {ward}/{to_bed}",
        )

    def _discharge(self, change: Change) -> Outcome:
        if change.patient is not None:
            found = self.find_patient(change.patient)
            if found is None and change.bed is not None and change.bed not in self.occupants():
                return Outcome(Action.DISCHARGE, noop=True, detail=f"{change.patient} is in no bed")
        current = self._occupant_of(change, change.bed)
        return Outcome(
            Action.DISCHARGE,
            {current.id: self._vacated(current.ward, current.id)},
            ended=(current.id,) if current.watched else (),
            detail=f"{current.patient} discharged from {current.ward}/{current.id}"
            + (f" ({change.reason})" if change.reason else ""),
        )


def _same(a: Occupant, b: Occupant) -> bool:
    keep = {"file_patient"}
    return a.model_dump(exclude=keep) == b.model_dump(exclude=keep)


def _reason(error: Mapping[str, Any]) -> str:
    where = ".".join(str(p) for p in error.get("loc", ()))
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _ident(value: str, what: str) -> None:
    if not ids.is_config_id(value):
        raise AdmissionError(
            f"bad_{what}", f"{what} {ids.shown(value)} is not an id (letters, digits, - and _)"
        )


def _patient(value: str) -> None:
    if not 0 < len(value) <= PATIENT_MAX_CHARS or not value.isprintable():
        raise AdmissionError(
            "bad_patient", f"patient {ids.shown(value)}: 1 to {PATIENT_MAX_CHARS} printable characters"
        )


def load(config: Config, stored: Sequence[Mapping[str, Any]]) -> tuple[Ward, list[tuple[str, str]]]:
    """The ward from the file and the store's rows; and the rows the file overrides, as
    ``(bed, why)``: those whose bed the file has changed since they were written, and
    those that no longer validate (a protocol removed from the file)."""
    file_beds = {bed.id: bed for bed in config.beds}
    rows: dict[str, Occupant] = {}
    dropped: list[tuple[str, str]] = []
    for data in stored:
        try:
            row = Occupant.model_validate(data)
        except ValidationError as exc:
            dropped.append((str(data.get("id", "?")), f"unreadable row: {exc.errors()[0].get('msg', '')}"))
            continue
        file_bed = file_beds.get(row.id)
        now_in_file = None if file_bed is None else file_bed.patient
        if now_in_file != row.file_patient:
            dropped.append((row.id, f"the config file changed bed {row.id} since (it wins)"))
            continue
        if row.watched:
            try:
                problems = bed_problems(config, row.bed())
            except ValidationError as exc:
                problems = [str(exc.errors()[0].get("msg", ""))]
            if problems:
                dropped.append((row.id, "no longer valid under the config: " + "; ".join(problems)))
                continue
        rows[row.id] = row
    return Ward(config, rows), dropped


def row_data(row: Occupant) -> dict[str, Any]:
    """A row as JSON-compatible data (``Occupant.model_validate`` reads it back)."""
    return row.model_dump(mode="json")


# --- the admin command (MQTT) ----------------------------------------------------------------

MAX_COMMAND_BYTES = 4096
_COMMAND_KEYS = frozenset(
    {
        "request",
        "action",
        "ward",
        "bed",
        "patient",
        "weight_kg",
        "height_cm",
        "protocol",
        "protocol_start",
        "delivered_before_ug",
        "news2_spo2_scale",
        "from_bed",
        "reason",
    }
)


def parse_command(data: Mapping[str, Any], who: str, via: Via = Via.ADMIN) -> tuple[str, Change]:
    """An admin command's JSON object as ``(request id, Change)``; ``AdmissionError`` when malformed.

    ``delivered_before_ug`` is a number of µg, or the string ``"unknown"``.
    """
    unknown = sorted(set(data) - _COMMAND_KEYS)
    if unknown:
        raise AdmissionError("bad_command", f"unknown field(s): {ids.shown_fields(unknown)}")
    request = data.get("request", "")
    if not isinstance(request, str) or len(request) > 64:
        raise AdmissionError("bad_command", "request: a text of at most 64 characters")
    try:
        action = Action(str(data.get("action")))
    except ValueError as exc:
        raise AdmissionError("bad_command", "action: admit, update, transfer or discharge") from exc

    def text(name: str, limit: int = PATIENT_MAX_CHARS) -> str | None:
        value = data.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not 0 < len(value) <= limit:
            raise AdmissionError("bad_command", f"{name}: a text of 1 to {limit} characters")
        return value

    def number(name: str) -> float | None:
        value = data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise AdmissionError("bad_command", f"{name}: a number")
        return float(value)

    start_text = text("protocol_start")
    start = None
    if start_text is not None:
        try:
            start = datetime.fromisoformat(start_text)
        except ValueError as exc:
            raise AdmissionError(
                "bad_start", f"protocol_start {ids.shown(start_text)} is not an ISO 8601 time"
            ) from exc
        if start.tzinfo is None:
            raise AdmissionError("bad_start", "protocol_start needs a time zone offset")
    before = data.get("delivered_before_ug")
    before_unknown = before == "unknown"
    scale = data.get("news2_spo2_scale")
    if scale is not None and scale not in (1, 2):
        raise AdmissionError("bad_command", "news2_spo2_scale: 1 or 2")
    change = Change(
        action=action,
        via=via,
        who=who,
        ward=text("ward"),
        bed=text("bed"),
        patient=text("patient"),
        weight_kg=number("weight_kg"),
        height_cm=number("height_cm"),
        protocol=text("protocol"),
        protocol_start=start,
        delivered_before_ug=None if before_unknown else number("delivered_before_ug"),
        before_unknown=before_unknown,
        news2_spo2_scale=scale,
        from_bed=text("from_bed"),
        reason=text("reason", 200),
    )
    return request, change
