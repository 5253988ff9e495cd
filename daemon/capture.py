"""Events as JSON lines: the capture format that ``wardd run --capture`` writes and
``wardd replay`` and the golden test cases read.

One object per line with a ``type`` (``vitals``, ``pump``, ``bag``, ``observation``,
``health``, ``tick``) and the event's fields; times are RFC 3339 UTC.

A capture the daemon writes starts with a header line, ``{"type": "capture",
"config_sha256": ..., "wardd": VERSION}``, again each time a run appends to it: the
fingerprint of what in its config decides the alerts (``config_fingerprint``), so
that ``wardd replay`` can refuse a config that would give other alerts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from daemon.errors import InputError
from daemon.events import (
    Acvpu,
    BagHung,
    DeclarationKind,
    DoseDeclaration,
    Event,
    Handwriting,
    Health,
    IcpFinding,
    Metric,
    MotorWeakness,
    Observation,
    PumpReading,
    PumpState,
    Reaction,
    Seizure,
    SeizurePattern,
    SourceHealth,
    Tick,
    VitalSample,
)
from daemon.timefmt import iso as iso  # noqa: PLC0414 -- re-exported: the simulators stamp messages with it
from daemon.timefmt import parse_iso

if TYPE_CHECKING:
    from daemon.config import Config

HEADER_TYPE = "capture"
ADMISSION_TYPE = "admission"
"""A line that says beds changed at run time (README, "Admissions"): a replay does not
apply it, and ``wardd replay`` refuses such a capture unless forced."""
"""The ``type`` of a capture's header line (not an event)."""

TYPES: Mapping[str, type[Any]] = {
    "vitals": VitalSample,
    "pump": PumpReading,
    "bag": BagHung,
    "observation": Observation,
    "health": SourceHealth,
    "tick": Tick,
}
_NAMES = {cls: name for name, cls in TYPES.items()}
_ENUMS: Mapping[str, type[StrEnum]] = {
    "state": PumpState,
    "health": Health,
    "acvpu": Acvpu,
    "handwriting": Handwriting,
    "seizure": Seizure,
    "seizure_pattern": SeizurePattern,
    "motor_weakness": MotorWeakness,
}
_ENUM_TUPLES: Mapping[str, type[StrEnum]] = {"raised_icp": IcpFinding}


def to_dict(event: Event) -> dict[str, Any]:
    """An event as JSON-compatible data."""
    out: dict[str, Any] = {"type": _NAMES[type(event)]}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if field.name == "beds":
            if value is None:
                continue  # a tick for every bed, written as ticks always were
            value = list(value)
        if isinstance(value, datetime):
            value = iso(value)
        elif field.name == "values":
            value = {str(k): v for k, v in value.items()}
        elif isinstance(value, DoseDeclaration):
            value = _declaration_dict(value)
        out[field.name] = value
    return out


def from_dict(data: Mapping[str, Any], where: str = "") -> Event:
    """An event from ``to_dict``'s output; ``InputError`` when it is not one."""
    kind = data.get("type")
    cls = TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InputError("unknown_type", f"'type' must be one of {', '.join(TYPES)}, got {kind!r}", where)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - fields - {"type"}
    if unknown:
        raise InputError("unknown_field", f"unexpected field(s) {', '.join(sorted(unknown))}", where)
    try:
        kwargs = {name: _field(name, value) for name, value in data.items() if name != "type"}
        return cls(**kwargs)  # type: ignore[no-any-return]
    except (TypeError, ValueError, AttributeError) as exc:
        raise InputError("bad_event", str(exc), where) from exc


def _field(name: str, value: Any) -> Any:
    if name == "time":
        return parse_iso(value)
    if name == "values":
        return {Metric(k): float(v) for k, v in value.items()}
    if name in _ENUMS and value is not None:
        return _ENUMS[name](value)
    if name == "dose_declaration" and value is not None:
        return _declaration(value)
    if name in _ENUM_TUPLES and value is not None:
        return tuple(_ENUM_TUPLES[name](v) for v in value)
    if name == "beds" and value is not None:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError("'beds' must be a list of bed ids")
        return tuple(value)
    return value


def _declaration_dict(declaration: DoseDeclaration) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": declaration.kind.value}
    if declaration.reaction is not None:
        out["reaction"] = declaration.reaction.value
    if declaration.grade is not None:
        out["grade"] = declaration.grade
    if declaration.onset is not None:
        out["onset"] = iso(declaration.onset)
    if declaration.resolved_at is not None:
        out["resolved_at"] = iso(declaration.resolved_at)
    return out


def _declaration(value: Mapping[str, Any]) -> DoseDeclaration:
    reaction, onset, resolved = value.get("reaction"), value.get("onset"), value.get("resolved_at")
    return DoseDeclaration(
        kind=DeclarationKind(value["kind"]),
        reaction=None if reaction is None else Reaction(reaction),
        grade=value.get("grade"),
        onset=None if onset is None else parse_iso(onset),
        resolved_at=None if resolved is None else parse_iso(resolved),
    )


def dumps(event: Event) -> str:
    """One capture line (no newline)."""
    return json.dumps(to_dict(event), separators=(",", ":"), ensure_ascii=False)


def read(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSON-lines file."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError("invalid_json", str(exc), f"{path}:{number}") from exc


# What the rules and the alert engine read from a config: a replay under a config that
# differs here can give other alerts (a pump's driver too: its alarms). The links
# (broker, database, ward page, probes), the paths and the pumps' line settings change
# none, so a capture still replays under a copy of its config with another state
# folder, broker or serial port.
_REPLAY_PARTS: dict[str, Any] = {
    "daemon": {"language", "tick_interval_s"},
    "thresholds": True,
    "protocols": True,
    "beds": True,
    "bags": True,
    "alerts": True,
    "pumps": {
        "__all__": {
            "id",
            "bed",
            "driver",
            "address",
            "poll_interval_s",
            "comm_lost_after_s",
            "safe_mode_timeout_s",
        }
    },
}


def config_fingerprint(config: Config) -> str:
    """SHA-256 of the parts of ``config`` that decide the alerts (hex)."""
    data = config.model_dump(mode="json", include=_REPLAY_PARTS)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_beside(capture: Path) -> Path:
    """Where ``wardd scenario`` writes the config of a capture: ``run.jsonl`` -> ``run.config.toml``."""
    return capture.with_name(capture.name.removesuffix(".jsonl") + ".config.toml")


def write_config(config: Config, path: Path, note: str) -> None:
    """Write ``config`` as TOML that ``wardd replay --config`` loads to the same fingerprint.

    Secrets given inline are left out (their environment variable or file stays named).
    """
    import tomli_w  # noqa: PLC0415 -- only scenarios with a capture write a config

    # What was set, not every default: some options are refused when set for a part they
    # do not apply to (an Alaris keep-alive on an NE-1000 pump), and the defaults come back
    # the same on loading.
    data = config.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    for section, key in (("mqtt", "password"), ("influx", "password"), ("influx", "token")):
        data.get(section, {}).get(key, {}).pop("value", None)
    comment = "".join(f"# {line}\n" for line in note.splitlines())
    path.write_text(comment + tomli_w.dumps(data), encoding="utf-8")


class CaptureWriter:
    """Appends every input event to a JSON-lines file (flushed per line), after a header
    with the fingerprint of ``config`` when one is given."""

    def __init__(self, path: Path, config: Config | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._out: IO[str] = path.open("a", encoding="utf-8")
        if config is not None:
            from daemon import __version__  # noqa: PLC0415

            header = {"type": HEADER_TYPE, "config_sha256": config_fingerprint(config), "wardd": __version__}
            self._out.write(json.dumps(header, separators=(",", ":")) + "\n")
            self._out.flush()

    def write(self, event: Event) -> None:
        """Append one event."""
        self._out.write(dumps(event) + "\n")
        self._out.flush()

    def admission(self, time: datetime, action: str, via: str, detail: str) -> None:
        """Append that beds changed at run time (``ADMISSION_TYPE``)."""
        line = {"type": ADMISSION_TYPE, "time": iso(time), "action": action, "via": via, "detail": detail}
        self._out.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n")
        self._out.flush()

    def close(self) -> None:
        """Close the file."""
        self._out.close()
