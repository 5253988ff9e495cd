"""Configuration: pydantic v2 models loaded from TOML, every error reported at once.

The models describe; they do not run anything. ``daemon.app.build`` turns a
``Config`` into running objects. Defaults that are clinical come from
``shared/domain.md`` (the section is named beside each one); defaults that no
source gives (alarm delays, clearing times) are site choices, marked as such.
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from daemon.errors import ConfigError, ConfigIssue

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _topic_safe(value: str) -> str:
    # Ward and bed ids become MQTT topic levels and InfluxDB tags.
    if not _ID.match(value):
        raise ValueError("must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("needs a time zone offset, e.g. 2026-03-02T08:00:00Z")
    return value


Ident = Annotated[str, AfterValidator(_topic_safe)]
AwareDatetime = Annotated[datetime, AfterValidator(_aware)]
PositiveSeconds = Annotated[float, Field(gt=0)]


class Model(BaseModel):
    """Base: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Secret(Model):
    """A secret given inline, by environment variable, or by file (first one set wins)."""

    value: SecretStr | None = None
    env: str | None = None
    file: Path | None = None

    def resolve(self) -> str | None:
        """The secret's text, or ``None`` when none is configured."""
        if self.value is not None:
            return self.value.get_secret_value()
        if self.env is not None:
            return os.environ.get(self.env)
        if self.file is not None:
            return self.file.read_text(encoding="utf-8").strip()
        return None


class DaemonConfig(Model):
    """Process-wide settings."""

    language: Literal["en", "fr"] = "en"
    state_dir: Path = Path("var/wardd")
    tick_interval_s: PositiveSeconds = 1.0
    shutdown_timeout_s: PositiveSeconds = 10.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    capture: Path | None = None  # JSON-lines capture of every input event, for `wardd replay`


class MqttConfig(Model):
    """The broker that carries vitals in and alerts out."""

    url: str = "mqtt://127.0.0.1:1883"
    client_id: Ident = "wardd"
    topic_prefix: Ident = "ward"
    qos: Literal[0, 1, 2] = 1
    username: str | None = None
    password: Secret = Secret()
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    reconnect_min_s: PositiveSeconds = 0.5
    reconnect_max_s: PositiveSeconds = 30.0
    max_payload_bytes: Annotated[int, Field(ge=256, le=1_048_576)] = 65_536
    max_future_skew_s: Annotated[float, Field(ge=0)] = 300.0

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not re.match(r"^mqtts?://[^/:]+(:\d+)?/?$", value):
            raise ValueError("must look like mqtt://host:1883 or mqtts://host:8883")
        return value


class InfluxConfig(Model):
    """Time-series storage. ``api = "none"`` keeps points in ``spool_dir`` only."""

    api: Literal["v1", "v2", "none"] = "v2"
    url: str = "http://127.0.0.1:8086"
    org: str = ""  # v2
    bucket: str = "wardd"  # v2
    token: Secret = Secret()  # v2
    database: str = "wardd"  # v1
    retention_policy: str = ""  # v1, empty = the database's default
    username: str | None = None  # v1
    password: Secret = Secret()  # v1
    batch_size: Annotated[int, Field(ge=1, le=50_000)] = 500
    flush_interval_s: PositiveSeconds = 1.0
    timeout_s: PositiveSeconds = 5.0
    spool_dir: Path | None = None  # default: <state_dir>/spool
    spool_max_mb: Annotated[int, Field(ge=1)] = 512

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://", value):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class VitalThresholds(Model):
    """Vital-sign alarm limits and noise control (issue: fever and haemodynamic watch).

    Onset delays and clearing times run on the measurements' own timestamps; the
    staleness and neuro-check intervals run on the daemon's clock. A condition
    raises once ``confirm_samples`` consecutive samples are abnormal and the first
    of them is at least ``<condition>_delay_s`` old; it clears once values have
    stayed beyond the limit plus the hysteresis for ``<condition>_clear_s``.
    """

    # Consecutive abnormal samples needed before any onset, so that one artifact
    # (a 45 °C spike that is still in the plausible range) never alarms: site choice.
    confirm_samples: Annotated[int, Field(ge=1, le=20)] = 2

    fever_c: float = 38.0  # ASTCT fever criterion (>= 38.0 °C), domain.md section 2
    fever_hysteresis_c: Annotated[float, Field(ge=0, le=2)] = 0.3  # site choice
    fever_delay_s: Annotated[float, Field(ge=0)] = 120.0  # site choice
    fever_clear_s: Annotated[float, Field(ge=0)] = 1800.0  # site choice

    # Alarm below either: SBP < 90 mmHg (ASTCT adaptations, domain.md section 2) and
    # MAP < 65 mmHg (Surviving Sepsis target, domain.md section 3).
    hypotension_sbp_mmhg: Annotated[float, Field(gt=0, lt=400)] = 90.0
    hypotension_map_mmhg: Annotated[float, Field(gt=0, lt=300)] = 65.0
    hypotension_hysteresis_mmhg: Annotated[float, Field(ge=0, le=30)] = 5.0  # site choice
    hypotension_delay_s: Annotated[float, Field(ge=0)] = 60.0  # site choice
    hypotension_clear_s: Annotated[float, Field(ge=0)] = 900.0  # site choice
    # When a monitor sends SBP and DBP without MAP, estimate MAP = DBP + (SBP - DBP) / 3.
    # The usual bedside approximation, not in domain.md: site choice.
    map_from_sbp_dbp: bool = True

    # Alarm below: NEWS2 scores SpO2 <= 91 % as 3 (scale 1), domain.md section 3.
    hypoxia_spo2_pct: Annotated[float, Field(gt=50, le=100)] = 92.0
    hypoxia_hysteresis_pct: Annotated[float, Field(ge=0, le=10)] = 2.0  # site choice
    hypoxia_delay_s: Annotated[float, Field(ge=0)] = 30.0  # site choice
    hypoxia_clear_s: Annotated[float, Field(ge=0)] = 300.0  # site choice

    # Alarm at or above: NEWS2 scores pulse >= 131 /min as 3, domain.md section 3.
    tachycardia_per_min: Annotated[float, Field(gt=0, lt=300)] = 131.0
    tachycardia_hysteresis_per_min: Annotated[float, Field(ge=0, le=40)] = 10.0  # site choice
    tachycardia_delay_s: Annotated[float, Field(ge=0)] = 120.0  # site choice
    tachycardia_clear_s: Annotated[float, Field(ge=0)] = 300.0  # site choice

    # Alarm at or above: NEWS2 scores respiration >= 25 /min as 3, domain.md section 3.
    tachypnoea_per_min: Annotated[float, Field(gt=0, lt=70)] = 25.0
    tachypnoea_hysteresis_per_min: Annotated[float, Field(ge=0, le=10)] = 3.0  # site choice
    tachypnoea_delay_s: Annotated[float, Field(ge=0)] = 120.0  # site choice
    tachypnoea_clear_s: Annotated[float, Field(ge=0)] = 300.0  # site choice

    # NEWS2_HIGH noise control and the age beyond which a vital or an observation no
    # longer counts towards the score: site choices.
    news2_delay_s: Annotated[float, Field(ge=0)] = 60.0
    news2_clear_s: Annotated[float, Field(ge=0)] = 900.0
    news2_max_age_s: PositiveSeconds = 14_400.0

    # A probe-off sentinel must last this long (measurement time) before PROBE_OFF, so
    # that re-seating a probe does not alarm: site choice.
    probe_off_delay_s: Annotated[float, Field(ge=0)] = 30.0
    # No vitals from a bed on protocol for this long (daemon clock): issue default 120 s.
    telemetry_stale_s: PositiveSeconds = 120.0
    # Daily handwriting test (domain.md section 0): NEURO_CHECK_DUE after this long
    # without a handwriting test or an ICE score (daemon clock).
    neuro_check_interval_s: PositiveSeconds = 86_400.0
    # How long an antipyretic or corticosteroid dose keeps fever "no longer required"
    # for CRS grading (ASTCT gives no duration, domain.md section 2): site choice.
    fever_masking_s: PositiveSeconds = 86_400.0


class DoseThresholds(Model):
    """Dose-schedule checks (issue: dose-schedule compliance)."""

    rate_tolerance_pct: Annotated[float, Field(gt=0, lt=100)] = 10.0


class Thresholds(Model):
    """All rule parameters. The ``[thresholds]`` table sets ward defaults; a bed may override."""

    vitals: VitalThresholds = VitalThresholds()
    dose: DoseThresholds = DoseThresholds()


class BedConfig(Model):
    """A bed on protocol."""

    ward: Ident
    id: Ident
    patient: str = Field(min_length=1, max_length=64)  # a pseudonym, never a name
    weight_kg: Annotated[float, Field(gt=0, lt=400)]
    height_cm: Annotated[float, Field(gt=30, lt=260)]
    protocol: str = "ssc-14d"
    protocol_start: AwareDatetime
    thresholds: dict[str, dict[str, Any]] = {}  # partial overrides of [thresholds]


class PumpConfig(Model):
    """An infusion pump on a serial line (issue: infusion pumps)."""

    id: Ident
    bed: Ident
    driver: Literal["ne1000"] = "ne1000"
    url: str  # pyserial URL: /dev/ttyUSB0, a pseudo-terminal, socket://host:port
    address: Annotated[int, Field(ge=0, le=99)] = 0
    baudrate: Literal[300, 1200, 2400, 9600, 19200] = 19200
    poll_interval_s: PositiveSeconds = 2.0
    comm_lost_after_s: PositiveSeconds = 30.0


class BagConfig(Model):
    """A bag announced in the configuration (bags may also arrive over MQTT)."""

    bed: Ident
    bag_id: str = Field(min_length=1, max_length=64)
    concentration_ug_per_ml: Annotated[float, Field(gt=0, lt=100)]
    volume_ml: Annotated[float, Field(gt=0, le=5000)] | None = None
    hung_at: AwareDatetime


class ProtocolStep(Model):
    """One step of a schedule: a dose over a range of protocol days (1-based, inclusive)."""

    day_from: Annotated[int, Field(ge=1)]
    day_to: Annotated[int, Field(ge=1)]
    dose_ug_per_day: Annotated[float, Field(gt=0)] | None = None
    dose_ug_per_m2_per_day: Annotated[float, Field(gt=0)] | None = None
    max_ug_per_day: Annotated[float, Field(gt=0)] | None = None


class ProtocolConfig(Model):
    """A user-defined step schedule."""

    steps: list[ProtocolStep] = Field(min_length=1)
    bsa_formula: Literal["mosteller", "dubois"] = "mosteller"


class Config(Model):
    """A whole ward configuration."""

    daemon: DaemonConfig = DaemonConfig()
    mqtt: MqttConfig = MqttConfig()
    influx: InfluxConfig = InfluxConfig()
    thresholds: Thresholds = Thresholds()
    protocols: dict[str, ProtocolConfig] = {}
    beds: list[BedConfig] = []
    pumps: list[PumpConfig] = []
    bags: list[BagConfig] = []

    def bed(self, bed_id: str) -> BedConfig:
        """The bed with this id (ids are unique once validated)."""
        return next(b for b in self.beds if b.id == bed_id)

    def thresholds_for(self, bed_id: str) -> Thresholds:
        """The ward thresholds with this bed's overrides applied."""
        return _merge_thresholds(self.thresholds, self.bed(bed_id).thresholds)


BUILTIN_PROTOCOLS = frozenset(
    {"ssc-14d", "all-cycle1", "all-cycle2", "ssc-14d-bsa", "all-cycle1-bsa", "all-cycle2-bsa"}
)


def _merge_thresholds(base: Thresholds, overrides: Mapping[str, Mapping[str, Any]]) -> Thresholds:
    groups: dict[str, Any] = {}
    for group, values in overrides.items():
        current = getattr(base, group).model_dump()
        groups[group] = {**current, **values}
    return Thresholds.model_validate({**base.model_dump(), **groups})


def _location(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _reason(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown option (check the spelling against config/ward.example.toml)"
    if error["type"] == "missing":
        return "required option is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _cross_checks(config: Config) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    seen_beds: dict[str, int] = {}
    for i, bed in enumerate(config.beds):
        if bed.id in seen_beds:
            issues.append(
                ConfigIssue(f"beds[{i}].id", f"'{bed.id}' is already used by beds[{seen_beds[bed.id]}]")
            )
        seen_beds.setdefault(bed.id, i)
        if bed.protocol not in BUILTIN_PROTOCOLS and bed.protocol not in config.protocols:
            known = ", ".join(sorted(BUILTIN_PROTOCOLS | config.protocols.keys()))
            issues.append(
                ConfigIssue(f"beds[{i}].protocol", f"unknown protocol '{bed.protocol}' (known: {known})")
            )
        for group, values in bed.thresholds.items():
            if group not in Thresholds.model_fields:
                issues.append(ConfigIssue(f"beds[{i}].thresholds.{group}", "unknown threshold group"))
                continue
            try:
                _merge_thresholds(config.thresholds, {group: values})
            except ValidationError as exc:
                issues.extend(
                    ConfigIssue(f"beds[{i}].thresholds.{_location(e['loc'])}", _reason(e))
                    for e in exc.errors()
                )
    seen_pumps: dict[str, int] = {}
    ports: dict[tuple[str, int], int] = {}
    for i, pump in enumerate(config.pumps):
        if pump.id in seen_pumps:
            issues.append(
                ConfigIssue(f"pumps[{i}].id", f"'{pump.id}' is already used by pumps[{seen_pumps[pump.id]}]")
            )
        seen_pumps.setdefault(pump.id, i)
        if pump.bed not in seen_beds:
            issues.append(ConfigIssue(f"pumps[{i}].bed", f"no bed with id '{pump.bed}'"))
        key = (pump.url, pump.address)
        if key in ports:
            issues.append(
                ConfigIssue(
                    f"pumps[{i}].address",
                    f"pumps[{ports[key]}] already uses address {pump.address} on {pump.url}",
                )
            )
        ports.setdefault(key, i)
    for i, bag in enumerate(config.bags):
        if bag.bed not in seen_beds:
            issues.append(ConfigIssue(f"bags[{i}].bed", f"no bed with id '{bag.bed}'"))
    for name, secret in (
        ("mqtt.password", config.mqtt.password),
        ("influx.token", config.influx.token),
        ("influx.password", config.influx.password),
    ):
        if secret.env is not None and secret.env not in os.environ:
            issues.append(ConfigIssue(f"{name}.env", f"environment variable {secret.env} is not set"))
        if secret.file is not None and not secret.file.is_file():
            issues.append(ConfigIssue(f"{name}.file", f"{secret.file} is not a readable file"))
    return issues


def parse(data: Mapping[str, Any], source: str = "<config>") -> Config:
    """Validate a decoded TOML document; raise ``ConfigError`` listing every problem."""
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        issues = [ConfigIssue(_location(e["loc"]), _reason(e)) for e in exc.errors()]
        # Cross-reference checks still run on what did validate, so that a user
        # sees every problem in one pass.
        partial = _lenient(data)
        if partial is not None:
            issues.extend(_cross_checks(partial))
        raise ConfigError(source, issues) from exc
    issues = _cross_checks(config)
    if issues:
        raise ConfigError(source, issues)
    return config


_LIST_ITEMS: dict[str, type[Model]] = {"beds": BedConfig, "pumps": PumpConfig, "bags": BagConfig}


def _lenient(data: Mapping[str, Any]) -> Config | None:
    """The config with invalid list items and tables dropped, for cross checks only."""
    kept: dict[str, Any] = {}
    for key, value in data.items():
        field = Config.model_fields.get(key)
        if field is None:
            continue
        if isinstance(value, list):
            item_type = _LIST_ITEMS.get(key)
            if item_type is None:
                continue
            good: list[Model] = []
            for item in value:
                with contextlib.suppress(ValidationError):
                    good.append(item_type.model_validate(item))
            kept[key] = good
        else:
            try:
                Config.model_validate({key: value})
            except ValidationError:
                continue
            kept[key] = value
    try:
        lists = {key: kept.pop(key) for key in _LIST_ITEMS if key in kept}
        return Config.model_validate(kept).model_copy(update=lists)
    except ValidationError:
        return None


def load(path: Path | str) -> Config:
    """Read and validate a TOML file; raise ``ConfigError`` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [ConfigIssue("", f"cannot read: {exc.strerror}")]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [ConfigIssue("", f"not valid TOML: {exc}")]) from exc
    return parse(data, str(path))


def summary(config: Config) -> str:
    """A one-line description of a valid configuration."""
    wards = sorted({b.ward for b in config.beds})
    return (
        f"{len(config.beds)} bed(s) in {len(wards)} ward(s) ({', '.join(wards) or '-'}), "
        f"{len(config.pumps)} pump(s), MQTT {config.mqtt.url}, storage {config.influx.api}"
        + (f" {config.influx.url}" if config.influx.api != "none" else "")
    )
