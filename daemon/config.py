"""Configuration: pydantic v2 models loaded from TOML, every error reported at once.

The models describe; they do not run anything. ``daemon.app.build`` turns a
``Config`` into running objects. Defaults that are clinical come from
``shared/domain.md`` (the section is named beside each one); defaults that no
source gives (alarm delays, clearing times) are site choices, marked as such.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence, Set
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from daemon import ids, mdc
from daemon.errors import ConfigError, ConfigIssue
from daemon.web.passwords import checked_hash


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("needs a time zone offset, e.g. 2026-03-02T08:00:00Z")
    return value


# Ward, bed and pump ids become MQTT topic levels, InfluxDB tags and alert ids.
Ident = Annotated[str, AfterValidator(ids.config_id)]
# A bag id is shown in alerts and stored; the same rule as a bag announced over MQTT.
BagId = Annotated[str, AfterValidator(ids.bag_id_value)]
# A broker user name that may acknowledge: a topic level, and the journal's actor.
UserId = Annotated[str, AfterValidator(ids.user_id)]
# A device as a message names it (an HL7 pump's OBX-18): the rule of bag ids.
DeviceId = Annotated[str, AfterValidator(ids.bag_id_value)]
AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


def _display_name(value: str) -> str:
    problem = ids.name_problem(value)
    if problem is not None:
        raise ValueError(f"{problem}; a name is {ids.NAME_RULE}")
    return value.strip()


# A person's name as the journal and the page show it.
DisplayName = Annotated[str, AfterValidator(_display_name)]
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
    # Absolute, so that `wardd status` finds the service's store from any directory;
    # the demo and the scenarios use temporary folders of their own.
    state_dir: Path = Path("/var/lib/wardd")
    tick_interval_s: PositiveSeconds = 1.0
    shutdown_timeout_s: PositiveSeconds = 10.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one object per line, for a log collector
    capture: Path | None = None  # JSON-lines capture of every input event, for `wardd replay`
    # The durable store (SQLite, WAL): inbound log, rule states, alerts, journal, outboxes.
    store: Path | None = None  # default: <state_dir>/wardd.sqlite
    # "full": a commit survives a power cut; "normal": a daemon crash only (faster).
    store_synchronous: Literal["full", "normal"] = "full"
    # Least time from the end of one commit to the start of the next: a commit that
    # would follow sooner waits and takes what was staged meanwhile, so a steady stream
    # of inputs makes fewer commits; one after a quiet spell, or one holding an alert's
    # message, a notice or an answer, never waits. At 1,000 beds ×
    # 1 Hz, 2 ms took a fifth off the daemon's CPU and lowered its median and p99 alert
    # latency (README, "Scale"). 0: a commit as soon as the last one ends.
    store_commit_gap_s: Annotated[float, Field(ge=0, le=1.0)] = 0.002
    # How often rule states are written (real time); a crash replays the inputs since.
    # Every state a bed's samples changed is written again each time: at 5,000 beds × 0.2 Hz
    # a 5 s interval kept the store's thread writing states about half the time, and the
    # alerts' commits queued behind them (README, "Scale").
    checkpoint_interval_s: PositiveSeconds = 15.0
    # Inputs received but not yet processed; beyond this the daemon stops acknowledging
    # and the broker holds the rest (back-pressure instead of loss).
    max_inflight_messages: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    # Worker processes, each owning a stable share of the beds (daemon/partition.py).
    workers: Annotated[int, Field(ge=1, le=64)] = 1

    @property
    def store_path(self) -> Path:
        """The store's file."""
        return self.store or self.state_dir / "wardd.sqlite"


class TlsConfig(Model):
    """TLS for a link whose URL asks for it (``mqtts://``, ``https://``).

    Without ``ca_file`` the server's certificate is checked against the system's CA
    store; a hospital's own CA goes in ``ca_file``. The server's name is checked
    against its certificate unless ``check_hostname`` is false (its certificate is
    still verified). ``cert_file`` (and ``key_file``, unless the key is in the same
    file) is the daemon's own certificate, for brokers that authenticate clients by
    certificate.
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    min_version: Literal["1.2", "1.3"] = "1.2"
    check_hostname: bool = True

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is given without cert_file")
        return self

    @property
    def customised(self) -> bool:
        """Whether anything differs from the defaults (which a plain-text URL would ignore)."""
        return self != TlsConfig()


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
    # A link down this long raises BROKER_UNAVAILABLE (technical): shorter losses, a
    # broker restart say, are only counted and logged. A site choice, not a clinical fact.
    alert_after_s: PositiveSeconds = 30.0
    tls: TlsConfig = TlsConfig()

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not re.match(r"^mqtts?://[^/:]+(:\d+)?/?$", value):
            raise ValueError("must look like mqtt://host:1883 or mqtts://host:8883")
        return value

    @model_validator(mode="after")
    def _tls_needs_mqtts(self) -> MqttConfig:
        # Never a silent downgrade: TLS settings with a plain-text URL are a mistake.
        if self.tls.customised and not self.url.startswith("mqtts://"):
            raise ValueError("tls settings are given but the url is mqtt:// (plain text): use mqtts://")
        return self


class InfluxConfig(Model):
    """Time-series storage, fed from the store's point outbox.

    ``api = "none"`` appends points as line protocol to ``<spool_dir>/points.lp``.
    """

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
    spool_dir: Path | None = None  # api = "none" only: where points.lp goes; default <state_dir>/spool
    spool_max_mb: Annotated[int, Field(ge=1)] = 512  # limit of the point outbox while the database is away

    tls: TlsConfig = TlsConfig()

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://", value):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _tls_needs_https(self) -> InfluxConfig:
        if self.tls.customised and not self.url.startswith("https://"):
            raise ValueError("tls settings are given but the url is http:// (plain text): use https://")
        return self


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
    # A sample more than this older than the daemon's clock when it arrives is stored
    # but not judged; within it, it is judged at its own time, in time order (a
    # documented fever matters for CRS grading for an hour): site choice.
    fever_late_s: Annotated[float, Field(ge=0)] = 3600.0

    # Alarm below either: SBP < 90 mmHg (ASTCT adaptations, domain.md section 2) and
    # MAP < 65 mmHg (Surviving Sepsis target, domain.md section 3).
    hypotension_sbp_mmhg: Annotated[float, Field(gt=0, lt=400)] = 90.0
    hypotension_map_mmhg: Annotated[float, Field(gt=0, lt=300)] = 65.0
    hypotension_hysteresis_mmhg: Annotated[float, Field(ge=0, le=30)] = 5.0  # site choice
    hypotension_delay_s: Annotated[float, Field(ge=0)] = 60.0  # site choice
    hypotension_clear_s: Annotated[float, Field(ge=0)] = 900.0  # site choice
    hypotension_late_s: Annotated[float, Field(ge=0)] = 900.0  # as fever_late_s: site choice
    # When a monitor sends SBP and DBP without MAP, estimate MAP = DBP + (SBP - DBP) / 3.
    # The usual bedside approximation, not in domain.md: site choice.
    map_from_sbp_dbp: bool = True

    # Alarm below: NEWS2 scores SpO2 <= 91 % as 3 (scale 1), domain.md section 3.
    hypoxia_spo2_pct: Annotated[float, Field(gt=50, le=100)] = 92.0
    hypoxia_hysteresis_pct: Annotated[float, Field(ge=0, le=10)] = 2.0  # site choice
    hypoxia_delay_s: Annotated[float, Field(ge=0)] = 30.0  # site choice
    hypoxia_clear_s: Annotated[float, Field(ge=0)] = 300.0  # site choice
    hypoxia_late_s: Annotated[float, Field(ge=0)] = 900.0  # as fever_late_s: site choice

    # Alarm at or above: NEWS2 scores pulse >= 131 /min as 3, domain.md section 3.
    tachycardia_per_min: Annotated[float, Field(gt=0, lt=300)] = 131.0
    tachycardia_hysteresis_per_min: Annotated[float, Field(ge=0, le=40)] = 10.0  # site choice
    tachycardia_delay_s: Annotated[float, Field(ge=0)] = 120.0  # site choice
    tachycardia_clear_s: Annotated[float, Field(ge=0)] = 300.0  # site choice
    tachycardia_late_s: Annotated[float, Field(ge=0)] = 900.0  # as fever_late_s: site choice

    # Alarm at or above: NEWS2 scores respiration >= 25 /min as 3, domain.md section 3.
    tachypnoea_per_min: Annotated[float, Field(gt=0, lt=70)] = 25.0
    tachypnoea_hysteresis_per_min: Annotated[float, Field(ge=0, le=10)] = 3.0  # site choice
    tachypnoea_delay_s: Annotated[float, Field(ge=0)] = 120.0  # site choice
    tachypnoea_clear_s: Annotated[float, Field(ge=0)] = 300.0  # site choice
    tachypnoea_late_s: Annotated[float, Field(ge=0)] = 900.0  # as fever_late_s: site choice

    # NEWS2_HIGH noise control and the age beyond which a vital or an observation no
    # longer counts towards the score: site choices.
    news2_delay_s: Annotated[float, Field(ge=0)] = 60.0
    news2_clear_s: Annotated[float, Field(ge=0)] = 900.0
    news2_max_age_s: PositiveSeconds = 14_400.0
    # Vitals and observations later than this (daemon clock) are not scored; nurses'
    # charted observations often reach the system within the hour: site choice.
    news2_late_s: Annotated[float, Field(ge=0)] = 3600.0

    # A probe-off sentinel must last this long (measurement time) before PROBE_OFF, so
    # that re-seating a probe does not alarm: site choice.
    probe_off_delay_s: Annotated[float, Field(ge=0)] = 30.0
    # No vitals from a bed on protocol for this long (daemon clock): issue default 120 s.
    telemetry_stale_s: PositiveSeconds = 120.0
    # Daily handwriting test (domain.md section 0): NEURO_CHECK_DUE after this long
    # without a handwriting test or an ICE score (daemon clock).
    neuro_check_interval_s: PositiveSeconds = 86_400.0
    # With no check recorded, the first is due this long after the protocol start, or
    # after the daemon began watching a bed already on protocol (it cannot know of
    # earlier checks). domain.md gives the daily test but not when the first one falls
    # due: site choice; unset, one neuro_check_interval_s.
    neuro_check_first_s: PositiveSeconds | None = None
    # How long an antipyretic or corticosteroid dose keeps fever "no longer required"
    # for CRS grading (ASTCT gives no duration, domain.md section 2): site choice.
    fever_masking_s: PositiveSeconds = 86_400.0


class DoseThresholds(Model):
    """Dose-schedule checks (issue: dose-schedule compliance). Times in seconds."""

    # Band around the protocol's dose for the day before DOSE_RATE_HIGH/LOW (site choice).
    rate_tolerance_pct: Annotated[float, Field(gt=0, lt=100)] = 10.0
    # How long a dose rate must stay out of the band before it alarms (site choice).
    rate_delay_s: Annotated[float, Field(ge=0)] = 300.0
    # DOSE_RATE_HIGH turns high priority at this multiple of the expected dose (site choice).
    rate_high_escalate_ratio: Annotated[float, Field(gt=1)] = 2.0
    # STEP_UP_DUE this long before a step-up: the higher-dose bag and the premedication the
    # label calls for before the step dose must be ready (domain.md section 1; lead time is a
    # site choice).
    step_up_due_before_s: Annotated[float, Field(ge=0)] = 7200.0
    # Either step's dose is accepted this long either side of the step time; beyond it
    # STEP_UP_LATE / STEP_UP_EARLY (site choice).
    step_window_s: Annotated[float, Field(ge=0)] = 7200.0
    # A higher dose started earlier than this before the step is a wrong dose
    # (DOSE_RATE_HIGH) rather than an early step (site choice).
    step_early_horizon_s: Annotated[float, Field(gt=0)] = 86400.0
    # Stopped, paused or zero rate this long while the protocol says infuse (site choice).
    interruption_delay_s: Annotated[float, Field(ge=0)] = 900.0
    # An interruption of 4 h or more needs premedication and a supervised restart
    # (label, domain.md section 1).
    interruption_supervised_restart_s: Annotated[float, Field(gt=0)] = 14400.0
    # A break longer than 7 days starts a new cycle (label, domain.md section 1).
    interruption_new_cycle_s: Annotated[float, Field(gt=0)] = 604800.0
    # Delivered total versus the protocol's expected total to date (site choice).
    cumulative_tolerance_pct: Annotated[float, Field(gt=0, lt=100)] = 10.0
    # No cumulative check before this much protocol time: on hour 2 a few minutes' pause
    # is a large percentage of a tiny total (site choice).
    cumulative_grace_s: Annotated[float, Field(ge=0)] = 86400.0
    # BAG_LOW when the bag will run out within this time at the steady rate (site choice).
    bag_low_s: Annotated[float, Field(ge=0)] = 3600.0
    # Part of a bag's announced volume that never reaches the patient (the 24 h bag's
    # 270 mL holds 30 mL of overfill that primes the line, domain.md section 1); site choice.
    bag_line_fill_ml: Annotated[float, Field(ge=0)] = 0.0
    # Without a pump reading for this long the delivered rate is unknown, never assumed
    # (site choice; the pump's own link alarm belongs to the pump rule).
    reading_stale_s: Annotated[float, Field(gt=0)] = 3600.0
    # BOLUS_SUSPECTED when the volume infused between two readings exceeds what the
    # reported rates explain by more than both of these (site choice: counter jitter).
    bolus_min_excess_ml: Annotated[float, Field(gt=0)] = 0.5
    bolus_excess_pct: Annotated[float, Field(ge=0)] = 20.0
    # A pump rate jump by this factor over the steady rate that also delivers this
    # multiple of the expected dose is a rate spike (site choice).
    bolus_rate_ratio: Annotated[float, Field(gt=1)] = 2.0
    # A bolus this close to a bag change is reported as a suspected flush (site choice).
    bolus_bag_change_window_s: Annotated[float, Field(ge=0)] = 1800.0
    # BOLUS_SUSPECTED clears this long after the last evidence (site choice).
    bolus_hold_s: Annotated[float, Field(gt=0)] = 900.0
    # Body-surface-area formula for the built-in < 45 kg protocols (Mosteller or Du Bois;
    # the label does not name one: site choice).
    bsa_formula: Literal["mosteller", "dubois"] = "mosteller"
    # RESTART_REASON_NEEDED: when the infusion restarts after a break of more than
    # interruption_new_cycle_s, or after a declared grade 3 reaction, with no declaration
    # of why (new cycle, restart after the reaction), prompt staff to declare it. The
    # label gives the rules, not how a ward records them: site choice.
    restart_reason_prompt: bool = True
    # A bag announced late (hung_at before the announcement) re-attributes the volume
    # infused since hung_at to its concentration, back to this long before the last
    # reading; older volume stays with the bag known then (site choice).
    bag_late_window_s: Annotated[float, Field(ge=0, le=604_800)] = 14_400.0
    # `wardd check-config` (and `wardd run`'s log) warns about a bag whose concentration is
    # more than this factor outside what the bed's protocol needs from any of the label's
    # bags (0.0375 to 1.944 µg/mL at 9 and 28 µg/day, domain.md section 1): a typo, or a
    # bag for another patient. domain.md gives no such margin: site choice.
    bag_concentration_plausible_factor: Annotated[float, Field(gt=1)] = 3.0


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
    # NEWS2 SpO2 scale: 2 only for hypercapnic respiratory failure (target 88-92 %), on a
    # clinician's decision; 1 otherwise (RCP 2017, domain.md section 3).
    news2_spo2_scale: Literal[1, 2] = 1
    thresholds: dict[str, dict[str, Any]] = {}  # partial overrides of [thresholds]
    # A watch that starts partway through the protocol (README, "Admissions"): when the
    # watch began (unset: at protocol_start), and the µg the patient had received by then,
    # as staff give it (unset: unknown). The dose checks judge only the watched span.
    watch_from: AwareDatetime | None = None
    delivered_before_watch_ug: Annotated[float, Field(ge=0, le=100_000)] | None = None

    @model_validator(mode="after")
    def _watch_span(self) -> BedConfig:
        if self.watch_from is not None and self.watch_from < self.protocol_start:
            raise ValueError("watch_from is before protocol_start")
        if self.delivered_before_watch_ug is not None and self.watch_from is None:
            raise ValueError("delivered_before_watch_ug needs watch_from (the watch began at protocol_start)")
        return self

    @property
    def starts_partway(self) -> bool:
        """Whether the watch began after the protocol did (what came before is declared or unknown)."""
        return self.watch_from is not None and self.watch_from > self.protocol_start


class PumpConfig(Model):
    """An infusion pump on a serial line (issue: infusion pumps)."""

    id: Ident
    bed: Ident
    # The pump's protocol: "ne1000" (New Era NE-500/NE-1000), "alaris-asena" (BD Alaris
    # Asena GH/CC) or "fresenius-base-a" (Fresenius Kabi Base A), docs/pump-protocols.md;
    # "hl7": readings sent by a pump server as PCD-01 ORU^R01 (README, "HL7 v2 in").
    driver: Literal["ne1000", "alaris-asena", "fresenius-base-a", "hl7"] = "ne1000"
    # pyserial URL: /dev/ttyUSB0, a pseudo-terminal, socket://host:port (serial drivers only).
    url: str | None = None
    # "hl7" only: the pump as OBX-18 names it, its entity identifier (component 1) or its
    # universal id (component 3, e.g. the EUI-64).
    device: DeviceId | None = None
    address: Annotated[int, Field(ge=0, le=99)] = 0  # NE-1000 only
    # Default per driver: 19200 for the NE-1000 and the Fresenius base, 38400 for the Alaris.
    baudrate: Literal[300, 1200, 2400, 9600, 19200, 38400] = 19200
    poll_interval_s: PositiveSeconds = 2.0
    comm_lost_after_s: PositiveSeconds = 30.0
    # Line framing; the NE-1000 is 8N1 (domain.md section 6). A serial-to-LAN bridge
    # (socket://) ignores these.
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    # Safe mode (CRC-protected packets), timeout in whole seconds; 0 = basic mode.
    # Site choice, default off: in safe mode the pump STOPS infusing when no valid packet
    # arrives within the timeout, so a daemon restart or a cable fault interrupts the
    # infusion (and an interruption of 4 h or more needs a supervised restart).
    safe_mode_timeout_s: Annotated[int, Field(ge=0, le=255)] = 0
    # Seconds to wait for each reply (site choice; 1 s covers a 20-byte reply at 300 baud).
    reply_timeout_s: PositiveSeconds = 1.0
    # Extra attempts per command after a timeout or a corrupted reply (site choice).
    retries: Annotated[int, Field(ge=0, le=5)] = 2
    # Reopening a lost port: jittered exponential backoff between these bounds, in seconds.
    reconnect_min_s: PositiveSeconds = 0.5
    reconnect_max_s: PositiveSeconds = 30.0
    # Alaris only: the remote-enable keep-alive is re-sent this often. infupy 2022.1.11
    # sends it every second; how long the pump waits for it is not known.
    keepalive_interval_s: PositiveSeconds = 1.0
    # Fresenius only: the pump's module index on the base (1-9); unset for a pump on its own.
    module: Annotated[int, Field(ge=1, le=9)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _driver_defaults(cls, data: Any) -> Any:
        # The Alaris speaks at 38,400 baud (infupy 2022.1.11); the NE-1000 defaults to 19,200.
        if isinstance(data, dict) and data.get("driver") == "alaris-asena" and "baudrate" not in data:
            return {**data, "baudrate": 38400}
        if isinstance(data, dict) and data.get("driver") == "fresenius-base-a":
            # 7 data bits, even parity (infupy 2022.1.11), unless the site says otherwise.
            return {"bytesize": 7, "parity": "E", **data}
        return data

    @model_validator(mode="after")
    def _pump_timing(self) -> PumpConfig:
        given = self.model_fields_set
        if self.driver == "hl7":
            return self._hl7_pump(given)
        if self.url is None:
            raise ValueError(f"the {self.driver} driver reads a serial line: set url")
        if self.device is not None:
            raise ValueError(f"device is an hl7 setting, not a {self.driver} one")
        if self.driver != "ne1000" and ("address" in given or "safe_mode_timeout_s" in given):
            raise ValueError(f"address and safe_mode_timeout_s are NE-1000 settings, not {self.driver} ones")
        if self.driver != "alaris-asena" and "keepalive_interval_s" in given:
            raise ValueError(f"keepalive_interval_s is an Alaris setting, not a {self.driver} one")
        if self.driver != "fresenius-base-a" and self.module is not None:
            raise ValueError(f"module is a Fresenius setting, not a {self.driver} one")
        if self.driver != "alaris-asena" and self.baudrate > 19200:
            raise ValueError(f"the {self.driver} speaks at 300 to 19200 baud")
        if self.comm_lost_after_s <= self.poll_interval_s:
            raise ValueError("comm_lost_after_s must be longer than poll_interval_s")
        if self.safe_mode_timeout_s and self.safe_mode_timeout_s <= self.poll_interval_s:
            # Otherwise the pump times out between two polls and stops infusing.
            raise ValueError("safe_mode_timeout_s must be longer than poll_interval_s")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        return self

    def _hl7_pump(self, given: Set[str]) -> PumpConfig:
        """A pump whose readings a pump server sends: its device, and no serial setting."""
        if self.device is None:
            raise ValueError("an hl7 pump needs its device: OBX-18 as the pump server sends it")
        serial = sorted(given - {"id", "bed", "driver", "device", "comm_lost_after_s"})
        if serial:
            raise ValueError(
                f"{', '.join(serial)}: serial-line settings; an hl7 pump takes id, bed, device "
                "and comm_lost_after_s"
            )
        return self

    @property
    def serial(self) -> bool:
        """Whether the daemon polls this pump on a serial line (not an hl7 one)."""
        return self.driver != "hl7"

    @property
    def line(self) -> str:
        """The serial URL of a serial driver's pump (validation makes sure it is set)."""
        if self.url is None:
            raise ValueError(f"pump {self.id} ({self.driver}) has no serial line")
        return self.url


class BagConfig(Model):
    """A bag announced in the configuration (bags may also arrive over MQTT)."""

    bed: Ident
    bag_id: BagId
    concentration_ug_per_ml: Annotated[float, Field(gt=0, lt=100)]
    volume_ml: Annotated[float, Field(gt=0, le=5000)] | None = None
    hung_at: AwareDatetime


class ProtocolStep(Model):
    """One step of a schedule: a dose over a range of protocol days (1-based, inclusive).

    Give either a flat ``dose_ug_per_day`` or a body-surface dose
    ``dose_ug_per_m2_per_day`` (optionally capped by ``max_ug_per_day``).
    """

    day_from: Annotated[int, Field(ge=1, le=366)]  # first protocol day of the step
    day_to: Annotated[int, Field(ge=1, le=366)]  # last protocol day, inclusive
    dose_ug_per_day: Annotated[float, Field(gt=0, le=1000)] | None = None  # flat dose
    dose_ug_per_m2_per_day: Annotated[float, Field(gt=0, le=1000)] | None = None  # per m² BSA
    max_ug_per_day: Annotated[float, Field(gt=0, le=1000)] | None = None  # cap on a BSA dose

    @model_validator(mode="after")
    def _one_dose(self) -> ProtocolStep:
        if self.day_to < self.day_from:
            raise ValueError(f"day_to ({self.day_to}) is before day_from ({self.day_from})")
        if (self.dose_ug_per_day is None) == (self.dose_ug_per_m2_per_day is None):
            raise ValueError("give exactly one of dose_ug_per_day and dose_ug_per_m2_per_day")
        if self.max_ug_per_day is not None and self.dose_ug_per_m2_per_day is None:
            raise ValueError("max_ug_per_day only caps a dose_ug_per_m2_per_day step")
        return self


class ProtocolConfig(Model):
    """A user-defined step schedule (steps must not overlap)."""

    steps: list[ProtocolStep] = Field(min_length=1, max_length=100)
    # BSA formula for per-m² steps; unset = thresholds.dose.bsa_formula.
    bsa_formula: Literal["mosteller", "dubois"] | None = None
    # The protocol of the cycle that follows when staff declare a new cycle (a break of
    # more than 7 days, label); unset = this protocol again from its day 1.
    next_cycle: str | None = None
    # Steps after a restart that follows a grade 3 adverse reaction, days counted from the
    # restart (a plan ends where the interrupted cycle would have, moved by the break).
    # Unset: the label's 9 µg/day for 7 days then 28 µg/day (5 then 15 µg/m²/day, capped
    # at 9 and 28, when this protocol doses per m²).
    restart_steps: list[ProtocolStep] | None = Field(default=None, min_length=1, max_length=100)

    @property
    def flat(self) -> bool:
        """Whether any step (restart steps included) gives a flat µg/day dose."""
        steps = [*self.steps, *(self.restart_steps or ())]
        return any(step.dose_ug_per_day is not None for step in steps)

    @model_validator(mode="after")
    def _no_overlap(self) -> ProtocolConfig:
        ordered = sorted(self.steps, key=lambda step: step.day_from)
        for before, after in itertools.pairwise(ordered):
            if after.day_from <= before.day_to:
                raise ValueError(
                    f"steps overlap: days {before.day_from}-{before.day_to} and "
                    f"{after.day_from}-{after.day_to}"
                )
        return self


class AlertsConfig(Model):
    """The alert engine: escalation (its alerts and journal live in the store)."""

    # Issue 5 default (5 min); the interval itself is a site choice.
    escalate_after_s: PositiveSeconds = 300.0
    # How often unacknowledged alerts are checked for escalation (daemon clock).
    check_interval_s: PositiveSeconds = 1.0
    # MQTT user names that may acknowledge (the broker proves the name: see README,
    # Locking the broker down). Empty: any user the broker lets publish on
    # ``.../ack/by/<user>``, which on a broker without an ACL is anyone.
    ack_users: list[UserId] = []


class WebUserConfig(Model):
    """One login of the ward page."""

    # The login, journaled as ``who`` when this user acknowledges (as an MQTT user is).
    name: UserId
    # viewer: sees the ward; nurse and admin: may also acknowledge alerts.
    role: Literal["viewer", "nurse", "admin"]
    # Shown on the page and journaled as ``name`` beside the login.
    display_name: DisplayName
    language: Literal["en", "fr"] = "en"
    # From `wardd web-password` (scrypt, salted); never the password itself.
    password_hash: Annotated[str, AfterValidator(checked_hash)]


class WebSoundConfig(Model):
    """The page's alarm sound (README, "Ward page", "Sound").

    The patterns are IEC 60601-1-8's (shared/domain.md section 4): a high-priority burst
    of 10 pulses (two groups of 5), 3 pulses for medium, 1 for low. Every timing and the
    tone below is a site choice, not from domain.md: the defaults are placeholders, to be
    set by the site's clinical engineering, not clinical facts.
    """

    # One pulse's length, and the silence between two pulses of a group.
    pulse_s: Annotated[float, Field(ge=0.02, le=1.0)] = 0.15
    pulse_gap_s: Annotated[float, Field(ge=0.02, le=1.0)] = 0.1
    # The silence between the two groups of 5 of a high-priority burst.
    high_group_gap_s: Annotated[float, Field(ge=0.02, le=5.0)] = 0.35
    # A burst is repeated this often (from the start of one to the next) while it lasts.
    high_repeat_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    medium_repeat_s: Annotated[float, Field(gt=0, le=600)] = 20.0
    low_repeat_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    # Low priority may sound 1 pulse (domain.md allows it); off: low alerts are only seen.
    low_sounds: bool = False
    # The tone's frequency, in hertz.
    tone_hz: Annotated[float, Field(ge=150.0, le=4000.0)] = 660.0
    # "Audio paused" (a temporary inactivation, apart from acknowledgement) lasts this long.
    audio_paused_s: Annotated[float, Field(gt=0, le=3600)] = 120.0

    def burst_s(self, pulses: int) -> float:
        """How long a burst of ``pulses`` lasts (10 pulses: two groups of 5)."""
        gaps = (pulses - 1) * self.pulse_gap_s
        if pulses > 5:
            gaps += self.high_group_gap_s - self.pulse_gap_s
        return pulses * self.pulse_s + gaps

    @model_validator(mode="after")
    def _repeat_after_the_burst(self) -> WebSoundConfig:
        for priority, pulses, repeat_s in (
            ("high", 10, self.high_repeat_s),
            ("medium", 3, self.medium_repeat_s),
            ("low", 1, self.low_repeat_s),
        ):
            if repeat_s <= self.burst_s(pulses):
                raise ValueError(
                    f"{priority}_repeat_s ({repeat_s:g} s) must be longer than its burst "
                    f"({self.burst_s(pulses):g} s)"
                )
        return self


class WebConfig(Model):
    """The ward page, served by the daemon (README, "Ward page")."""

    enabled: bool = False
    # Plain HTTP: keep it on loopback behind the hospital's TLS reverse proxy.
    host: str = "127.0.0.1"
    # 0: any free port (the address is logged).
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    # A login lasts this long, whatever the activity (one shift): site choice.
    session_ttl_s: PositiveSeconds = 28_800.0
    # Login throttling, on the daemon's clock: after login_failures wrong passwords for one
    # login within login_window_s, that login is refused without a check for
    # login_lockout_s; the same for one client address after login_failures_per_address
    # (behind a reverse proxy every browser has the proxy's address: keep it high). Short,
    # so that a guesser gets a few tries a minute and nobody keeps a nurse out for long:
    # site choices.
    login_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    login_failures_per_address: Annotated[int, Field(ge=1, le=100_000)] = 50
    login_window_s: PositiveSeconds = 300.0
    login_lockout_s: PositiveSeconds = 60.0
    sound: WebSoundConfig = WebSoundConfig()
    users: list[WebUserConfig] = []


# Alert conditions a route or an inhibition may name (README, "Alerts"): a misspelt
# condition would match nothing and silently send nothing, so names are checked.
KNOWN_CONDITIONS = frozenset(
    {
        "FEVER", "HYPOTENSION", "HYPOXIA", "TACHYCARDIA", "TACHYPNOEA", "NEWS2_HIGH",
        "CRS_SUSPECTED", "ICANS_SUSPECTED", "NEURO_CHECK_DUE", "PROBE_OFF", "TELEMETRY_STALE",
        "DOSE_RATE_HIGH", "DOSE_RATE_LOW", "STEP_UP_DUE", "STEP_UP_LATE", "STEP_UP_EARLY",
        "INFUSION_INTERRUPTED", "BOLUS_SUSPECTED", "CUMULATIVE_DOSE_DEVIATION", "BAG_LOW",
        "INFUSION_AFTER_PROTOCOL_END", "RESTART_REASON_NEEDED", "DISCONTINUATION_RULE",
        "PUMP_COMM_LOST", "PUMP_STALL", "PUMP_RESET", "PUMP_SAFE_MODE_TIMEOUT",
        "PUMP_PROGRAM_ERROR", "PUMP_PHASE_OUT_OF_RANGE", "PUMP_ALARM", "PUMP_OCCLUSION",
        "PUMP_END_OF_INFUSION", "PUMP_NEAR_END_OF_INFUSION", "PUMP_BATTERY_LOW", "PUMP_BATTERY_EMPTY",
        "PUMP_ON_BATTERY", "STORAGE_UNAVAILABLE",
        "BROKER_UNAVAILABLE", "RULE_FAILED", "DELIVERY_FAILED", "UNWATCHED_BED_DATA",
    }
)  # fmt: skip


def _condition(value: str) -> str:
    if value not in KNOWN_CONDITIONS:
        raise ValueError(f"unknown alert condition {value!r} (known: {', '.join(sorted(KNOWN_CONDITIONS))})")
    return value


Condition = Annotated[str, AfterValidator(_condition)]


def _clock_time(value: str) -> str:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError("must be a local time HH:MM, 00:00 to 23:59")
    return value


ClockTime = Annotated[str, AfterValidator(_clock_time)]


class InhibitConfig(Model):
    """While an alert of ``source`` is open at a bed, ``targets`` of that bed send no
    notification of their own (they stay on the station and the page). Never a target
    of higher priority than the open source: that one still goes out."""

    source: Condition
    targets: list[Condition] = Field(min_length=1)


# CRS_SUSPECTED already tells of its fever and hypotension (domain.md section 2: ASTCT
# grades CRS on them). The dose conditions below are judged from the pump's readings,
# which a lost link stops (the pump rule's PUMP_COMM_LOST says why they may be wrong).
DEFAULT_INHIBIT = (
    InhibitConfig(source="CRS_SUSPECTED", targets=["FEVER", "HYPOTENSION"]),
    InhibitConfig(
        source="PUMP_COMM_LOST",
        targets=[
            "DOSE_RATE_HIGH",
            "DOSE_RATE_LOW",
            "STEP_UP_LATE",
            "STEP_UP_EARLY",
            "INFUSION_INTERRUPTED",
            "CUMULATIVE_DOSE_DEVIATION",
            "BAG_LOW",
            "INFUSION_AFTER_PROTOCOL_END",
        ],
    ),
)


class QuietConfig(Model):
    """A quiet period (local time, ``routing.timezone``): notifications of ``priorities``
    starting in it are held and sent as one digest when it ends. High priority always
    goes out, so it cannot be listed."""

    start: ClockTime
    end: ClockTime  # before ``start``: the period runs over midnight
    priorities: list[Literal["low", "medium"]] = ["low"]

    @model_validator(mode="after")
    def _not_empty(self) -> QuietConfig:
        if self.start == self.end:
            raise ValueError("start and end are the same time: the period would be empty")
        return self


class RoutingConfig(Model):
    """Who is told of an alert, and when (README, "Routing and delivery")."""

    # Alerts of one bed that start within this window go out as one notification; the
    # first waits this long for the others. 0: each alert at once. Site choice.
    group_window_s: Annotated[float, Field(ge=0, le=600)] = 10.0
    # How often groups, repeats and digests are checked (daemon clock).
    check_interval_s: PositiveSeconds = 1.0
    # The zone of the quiet periods' local times (IANA name).
    timezone: str = "UTC"
    inhibit: list[InhibitConfig] = list(DEFAULT_INHIBIT)
    quiet: list[QuietConfig] = []

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Paris)") from exc
        return value


class ReceiverBase(Model):
    """What every receiver has: a name that routes use, retries and a language."""

    name: Ident
    # Messages in this language; unset: daemon.language.
    language: Literal["en", "fr"] | None = None
    # One attempt's time limit.
    timeout_s: PositiveSeconds = 10.0
    # Retries wait retry_min_s, then twice as long each time, at most retry_max_s; they go
    # on until the receiver takes the notification (nothing is dropped).
    retry_min_s: PositiveSeconds = 1.0
    retry_max_s: PositiveSeconds = 60.0
    # After this many failed attempts the delivery counts as failed: DELIVERY_FAILED is
    # raised and the alert's next escalation level is told at once. Site choice.
    failed_after_attempts: Annotated[int, Field(ge=1, le=100)] = 4

    @model_validator(mode="after")
    def _retry_bounds(self) -> ReceiverBase:
        if self.retry_max_s < self.retry_min_s:
            raise ValueError("retry_max_s must not be below retry_min_s")
        return self


class WebhookReceiverConfig(ReceiverBase):
    """An HTTP POST of the notification's JSON, signed with HMAC-SHA256 of the body
    (header ``X-Wardd-Signature: sha256=<hex>``); any 2xx answer is a delivery."""

    type: Literal["webhook"]
    url: str
    # The HMAC key, shared with the receiving service.
    secret: Secret = Secret()

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError("must look like https://host/path")
        return value


class AppriseReceiverConfig(ReceiverBase):
    """Phones, chat and e-mail through Apprise: one URL (``ntfys://...``, ``pover://...``,
    ``mailtos://...``), kept like a password since it usually carries a token."""

    type: Literal["apprise"]
    url: Secret
    # Apprise waits this long between two notifications to one service (its default,
    # 5.5 s for most, respects public services' rate limits); unset: Apprise's default.
    min_gap_s: Annotated[float, Field(ge=0, le=60)] | None = None


def _event_code(value: str) -> str:
    if not re.fullmatch(r"[0-9]{1,10}\^MDC_[A-Z0-9_]{1,60}", value):
        raise ValueError(f"{value!r} is not '<code>^<MDC reference id>' (for example '196648^MDC_EVT_HI')")
    return value


# An OBX-3 event code as "<code>^<MDC reference id>" (IEEE 11073-10101, partition 3).
EventCode = Annotated[str, AfterValidator(_event_code)]


class Hl7ReceiverConfig(ReceiverBase):
    """An alert manager (IHE PCD ACM) that takes HL7 v2 ORU^R40 over MLLP (PCD-04, Report
    Alarm): one message per alert and notice; its accept acknowledgement decides (AA
    delivered, AE retried, AR refused)."""

    type: Literal["hl7"]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)]
    # Set: MLLP over TLS, the alert manager's certificate checked (ca_file: the hospital's CA).
    tls: TlsConfig | None = None
    # MSH-4, MSH-5, MSH-6: what the alert manager expects (site choice).
    sending_facility: str = Field(default="", max_length=180)
    receiving_application: str = Field(default="", max_length=180)
    receiving_facility: str = Field(default="", max_length=180)
    # Event codes (OBX-3 of facet 1) for conditions beyond the built-in ones (FEVER,
    # TACHYCARDIA, TACHYPNOEA: 196648^MDC_EVT_HI); a condition without one is sent under
    # its own name in the local coding system 99WARDD. Site choice: domain.md confirms
    # no other code.
    event_codes: dict[Condition, EventCode] = {}


ReceiverConfig = Annotated[
    WebhookReceiverConfig | AppriseReceiverConfig | Hl7ReceiverConfig, Field(discriminator="type")
]


class RouteConfig(Model):
    """Which alerts a route takes (every list left empty matches anything) and who is
    told at each escalation level. The first route that matches an alert takes it."""

    name: Ident
    wards: list[Ident] = []
    beds: list[Ident] = []
    conditions: list[Condition] = []
    kinds: list[Literal["physiological", "technical"]] = []
    priorities: list[Literal["low", "medium", "high"]] = []
    # levels[0]: told first; levels[1]: once the alert escalates (alerts.escalate_after_s,
    # or at once when a delivery fails); beyond the last, the last level again.
    levels: list[list[Ident]] = Field(min_length=1, max_length=10)
    # Told again this often while nobody has acknowledged the alert; 0: never. Site choice.
    repeat_after_s: Annotated[float, Field(ge=0)] = 600.0
    # A medium-priority alert nobody acknowledges goes to level 1 after this long, level 2
    # after twice that, and so on (high ones escalate by alerts.escalate_after_s; low ones
    # never do); 0: never, only repeats. Site choice.
    escalate_medium_after_s: Annotated[float, Field(ge=0)] = 0.0

    @field_validator("levels")
    @classmethod
    def _someone(cls, value: list[list[str]]) -> list[list[str]]:
        for i, level in enumerate(value):
            if not level:
                raise ValueError(f"level {i} names no receiver")
        return value


class HealthConfig(Model):
    """The daemon's own health: status topic, probes, metrics (README, "Running it as a service")."""

    # Retained online status with its time, every heartbeat_s: a station that sees it older
    # than a few periods knows the daemon is stuck even while its connection holds.
    heartbeat_s: PositiveSeconds = 10.0
    # The HTTP probes and metrics (/healthz, /readyz, /metrics); off when no port is set.
    # No login: keep it on loopback, or on a management network.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] | None = None  # 0: any free port (logged)
    # Inputs waiting and none processed for this long: /healthz says so and the systemd
    # watchdog is no longer fed, so systemd restarts the daemon.
    stall_after_s: PositiveSeconds = 30.0


class ServerTlsConfig(Model):
    """TLS for a listener of the daemon: its own certificate, and optionally the CA whose
    client certificates it requires (mutual TLS)."""

    cert_file: Path
    key_file: Path | None = None  # when the key is not in cert_file
    client_ca_file: Path | None = None  # set: every client must present a certificate it signed
    min_version: Literal["1.2", "1.3"] = "1.2"


MDC_CODE = re.compile(r"[0-9]{1,10}|MDC_[A-Z0-9_]{1,60}")
"""An OBX-3 code as the config names it: the numeric code or the reference id."""


def _mdc_codes(codes: tuple[str, ...]) -> tuple[str, ...]:
    if not codes:
        raise ValueError("needs at least one code")
    for code in codes:
        if MDC_CODE.fullmatch(code) is None:
            raise ValueError(f"{code!r} is neither a numeric MDC code nor an MDC_ reference id")
    return codes


MdcCodes = Annotated[tuple[str, ...], AfterValidator(_mdc_codes)]


class Hl7PumpCodes(Model):
    """Which OBX-3 codes of a pump server's PCD-01 message are which pump quantity: any of
    a list, by numeric code or reference id. Defaults: the pump rows of domain.md section 5,
    which it marks as confirmed by one vendor's capture only: a site checks them against
    its pump server (README, "HL7 v2 in")."""

    programmed_rate: MdcCodes = mdc.PUMP_PROGRAMMED_RATE  # mL/h
    current_rate: MdcCodes = mdc.PUMP_CURRENT_RATE  # mL/h: > 0 infusing, 0 stopped
    volume_infused: MdcCodes = mdc.PUMP_VOLUME_INFUSED  # mL

    @model_validator(mode="after")
    def _distinct(self) -> Hl7PumpCodes:
        seen: dict[str, str] = {}
        for name in ("programmed_rate", "current_rate", "volume_infused"):
            for code in getattr(self, name):
                if code in seen:
                    raise ValueError(f"{code} is both {seen[code]} and {name}")
                if mdc.lookup(code) is not None:
                    raise ValueError(f"{code} ({name}) is a vital-sign code")
                seen[code] = name
        return self


class AdmissionsConfig(Model):
    """Beds and patients changed at run time (README, "Admissions")."""

    # MQTT user names that may admit, transfer and discharge with `wardd admit` ... (the
    # broker proves the name, as for acknowledgements). Empty: nobody may.
    admin_users: list[UserId] = []
    # Which PID-3 identifier of an HL7 message is the patient's pseudonym (ADT takes the
    # patient from it; PCD-01 from monitors and pump servers is checked against it): the
    # repetition whose identifier type code (CX-5) and assigning authority (CX-4) match
    # those set here. Both unset: the first identifier. Site choice: a real record number
    # must not become the pseudonym.
    pseudonym_type: str | None = Field(default=None, min_length=1, max_length=20)
    pseudonym_authority: str | None = Field(default=None, min_length=1, max_length=40)
    # OBX-3 codes (first component) of an ADT message that carry weight and height.
    # Defaults: LOINC body weight / body height, measured or stated (site choice: check
    # them against the feed).
    weight_codes: list[str] = ["29463-7", "3141-9"]
    height_codes: list[str] = ["8302-2", "3137-7"]


class Hl7Config(Model):
    """HL7 v2 in: IHE PCD-01 ORU^R01 from monitor gateways and pump servers over MLLP (README, "HL7 v2 in")."""

    # Without [hl7.tls], plain TCP: keep it on loopback or the monitors' network.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] | None = None  # off while unset; 0: any free port
    max_message_bytes: Annotated[int, Field(ge=1024, le=16_777_216)] = 262_144
    tls: ServerTlsConfig | None = None
    pump_codes: Hl7PumpCodes = Hl7PumpCodes()  # pumps with driver = "hl7"


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
    alerts: AlertsConfig = AlertsConfig()
    web: WebConfig = WebConfig()
    routing: RoutingConfig = RoutingConfig()
    receivers: list[ReceiverConfig] = []
    routes: list[RouteConfig] = []
    health: HealthConfig = HealthConfig()
    hl7: Hl7Config = Hl7Config()
    admissions: AdmissionsConfig = AdmissionsConfig()
    # ``bed`` looks beds up by id: a linear search made start-up quadratic in beds.
    _bed_index: tuple[list[BedConfig] | None, dict[str, BedConfig]] = PrivateAttr(default=(None, {}))
    _merged_thresholds: tuple[list[BedConfig] | None, dict[str, Thresholds]] = PrivateAttr(default=(None, {}))
    # The wards whose own alerts (``daemon.tech_rules``) this process raises, when a
    # partition's config says (``daemon.partition.for_partition``); else every bed's ward.
    _own_wards: tuple[str, ...] | None = PrivateAttr(default=None)

    def own_wards(self) -> tuple[str, ...]:
        """The wards whose own alerts this config's daemon raises, in the beds' order."""
        if self._own_wards is not None:
            return self._own_wards
        return tuple(dict.fromkeys(bed.ward for bed in self.beds))

    def owning(self, wards: Iterable[str]) -> Config:
        """This config, raising the own alerts of ``wards`` (and no other ward's)."""
        copy = self.model_copy()
        copy._own_wards = tuple(wards)
        return copy

    def _private(self, name: str) -> Any:
        # Read from pydantic's documented store: ``self._name`` goes through the model's
        # ``__getattr__``, 10-20 µs a read, which start-up pays several times per bed.
        private = self.__pydantic_private__
        assert private is not None  # set by pydantic on every model with private attributes
        return private[name]

    def bed(self, bed_id: str) -> BedConfig:
        """The bed with this id (ids are unique once validated); ``KeyError`` if none has it."""
        index: dict[str, BedConfig]
        beds, index = self._private("_bed_index")
        if beds is not self.beds:
            # Built on first use, and again for a copy made with other beds
            # (``model_copy(update=...)`` keeps private attributes).
            index = {b.id: b for b in self.beds}
            self._bed_index = (self.beds, index)
        return index[bed_id]

    def thresholds_for(self, bed_id: str) -> Thresholds:
        """The ward thresholds with this bed's overrides applied."""
        overrides = self.bed(bed_id).thresholds
        if not overrides:
            return self.thresholds
        merged: dict[str, Thresholds]
        beds, merged = self._private("_merged_thresholds")
        if beds is not self.beds:
            merged = {}
            self._merged_thresholds = (self.beds, merged)
        found = merged.get(bed_id)
        if found is None:
            # Validated again on every call, this was most of start-up at 5,000 beds.
            found = merged[bed_id] = _merge_thresholds(self.thresholds, overrides)
        return found


BUILTIN_PROTOCOLS = frozenset(
    {"ssc-14d", "all-cycle1", "all-cycle2", "ssc-14d-bsa", "all-cycle1-bsa", "all-cycle2-bsa"}
)
# Built-in protocols dosed in flat µg/day: the label's >= 45 kg doses (domain.md section 1).
BUILTIN_FLAT_PROTOCOLS = frozenset({"ssc-14d", "all-cycle1", "all-cycle2"})
# Below this weight the label doses by body surface (µg/m²/day), domain.md section 1.
LABEL_FLAT_DOSE_MIN_KG = 45.0


def _flat_protocol(config: Config, name: str) -> bool | None:
    """Whether protocol ``name`` gives a flat µg/day dose; ``None`` when it is unknown."""
    if name in config.protocols:
        return config.protocols[name].flat
    if name in BUILTIN_PROTOCOLS:
        return name in BUILTIN_FLAT_PROTOCOLS
    return None


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


def _flat_dose_under_45_kg(config: Config, bed: BedConfig, i: int) -> ConfigIssue | None:
    """Refuse a flat-dose protocol (or later cycle) for a patient under 45 kg."""
    if bed.weight_kg >= LABEL_FLAT_DOSE_MIN_KG:
        return None
    protocol = config.protocols.get(bed.protocol)
    later = protocol.next_cycle if protocol is not None else None
    flat = [name for name in (bed.protocol, later) if name and _flat_protocol(config, name)]
    if not flat:
        return None
    return ConfigIssue(
        f"beds[{i}].protocol",
        f"the patient weighs {bed.weight_kg:g} kg and protocol '{flat[0]}' gives flat "
        f"µg/day doses: below {LABEL_FLAT_DOSE_MIN_KG:g} kg the label doses by body "
        "surface (µg/m²/day); choose a per-m² protocol"
        + (f" such as '{flat[0]}-bsa'" if flat[0] in BUILTIN_FLAT_PROTOCOLS else ""),
    )


def bed_problems(config: Config, bed: BedConfig) -> list[str]:
    """What the config's checks refuse in one bed added at run time (an admission): an
    unknown protocol, a flat dose under 45 kg, bad threshold overrides. Empty: acceptable."""
    others = [b for b in config.beds if b.id != bed.id]
    trial = config.model_copy(update={"beds": [*others, bed]})
    at = f"beds[{len(others)}]"
    return [
        f"{issue.location.removeprefix(at).lstrip('.') or 'bed'}: {issue.reason}"
        for issue in _cross_checks(trial)
        if issue.location.startswith(at)
    ]


def _shared_line(pump: PumpConfig, i: int, other: PumpConfig, j: int) -> ConfigIssue | None:
    """Why ``pump`` (``pumps[i]``) cannot share its URL with ``other`` (``pumps[j]``), if it cannot."""
    if pump.driver == "alaris-asena" or other.driver == "alaris-asena":
        return ConfigIssue(f"pumps[{i}].url", f"pumps[{j}] already reads {pump.url}: one Alaris per line")
    if pump.driver != other.driver:
        return ConfigIssue(f"pumps[{i}].url", f"pumps[{j}] reads {pump.url} with another driver")
    if pump.driver == "ne1000":
        # The protocol addresses pumps on one line (0-99), but each driver opens the port
        # for itself: two would split each other's replies. Refused until the line is shared.
        return ConfigIssue(
            f"pumps[{i}].url",
            f"pumps[{j}] already reads {pump.url}: one NE-1000 per line (several by address on one "
            "line are not supported yet)",
        )
    settings = ("baudrate", "bytesize", "parity", "stopbits")
    if any(getattr(pump, name) != getattr(other, name) for name in settings):
        return ConfigIssue(f"pumps[{i}].url", f"pumps[{j}] reads {pump.url} with other line settings")
    # Fresenius base modules: one line, one base, a module each.
    if pump.module is None or other.module is None:
        return ConfigIssue(
            f"pumps[{i}].module", f"pumps[{j}] reads {pump.url}: pumps sharing a base name their module"
        )
    if pump.module != other.module:
        return None
    return ConfigIssue(f"pumps[{i}].module", f"pumps[{j}] already reads module {pump.module} on {pump.url}")


def _line_issues(pumps: Sequence[PumpConfig], n: int, at: Sequence[int]) -> list[ConfigIssue]:
    """Why ``pumps[n]`` cannot share its serial line with an earlier pump, if it cannot
    (``at``: the pumps' indexes in the file)."""
    pump = pumps[n]
    for j, other in enumerate(pumps[:n]):
        if other.serial and other.url == pump.url:
            issue = _shared_line(pump, at[n], other, at[j])
            if issue is not None:
                return [issue]
    return []


def _hl7_pump_issues(config: Config, pump: PumpConfig, i: int, seen: dict[str, int]) -> list[ConfigIssue]:
    """An hl7 pump (``pumps[i]``) needs the listener on, and a device no earlier pump has
    (``seen``: device -> the index of the pump that has it; updated)."""
    issues: list[ConfigIssue] = []
    if config.hl7.port is None:
        issues.append(ConfigIssue(f"pumps[{i}].driver", "an hl7 pump needs the HL7 listener: set [hl7] port"))
    device = pump.device or ""
    if device in seen:
        # Two pumps under one device: a reading could not say whose it is.
        issues.append(
            ConfigIssue(f"pumps[{i}].device", f"'{device}' is already the device of pumps[{seen[device]}]")
        )
    seen.setdefault(device, i)
    return issues


def _cross_checks(
    config: Config, positions: Mapping[str, Sequence[int]] | None = None, bed_ids: Set[str] = frozenset()
) -> list[ConfigIssue]:
    """References between tables. ``positions`` maps a list's items to their index in the
    file, and ``bed_ids`` names every bed in it, when invalid items were left out before
    these checks (a pump of an invalid bed is not reported as orphaned too)."""
    where = positions or {}

    def index(key: str, i: int) -> int:
        return where[key][i] if key in where else i

    issues: list[ConfigIssue] = []
    seen_beds: dict[str, int] = {}
    for n, bed in enumerate(config.beds):
        i = index("beds", n)
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
        weight_issue = _flat_dose_under_45_kg(config, bed, i)
        if weight_issue is not None:
            issues.append(weight_issue)
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
    for name, protocol in config.protocols.items():
        if protocol.next_cycle is not None and _flat_protocol(config, protocol.next_cycle) is None:
            known = ", ".join(sorted(BUILTIN_PROTOCOLS | config.protocols.keys()))
            issues.append(
                ConfigIssue(
                    f"protocols.{name}.next_cycle",
                    f"unknown protocol '{protocol.next_cycle}' (known: {known})",
                )
            )
    seen_pumps: dict[str, int] = {}
    pump_of_bed: dict[str, int] = {}
    seen_devices: dict[str, int] = {}
    for n, pump in enumerate(config.pumps):
        i = index("pumps", n)
        if pump.id in seen_pumps:
            issues.append(
                ConfigIssue(f"pumps[{i}].id", f"'{pump.id}' is already used by pumps[{seen_pumps[pump.id]}]")
            )
        seen_pumps.setdefault(pump.id, i)
        if pump.bed in pump_of_bed:
            # The dose ledger and the pump alerts follow one blinatumomab line per bed.
            issues.append(
                ConfigIssue(
                    f"pumps[{i}].bed",
                    f"bed '{pump.bed}' already has pumps[{pump_of_bed[pump.bed]}]: one blinatumomab pump per bed",
                )
            )
        pump_of_bed.setdefault(pump.bed, i)
        if pump.bed not in seen_beds and pump.bed not in bed_ids:
            issues.append(ConfigIssue(f"pumps[{i}].bed", f"no bed with id '{pump.bed}'"))
        issues.extend(
            _line_issues(config.pumps, n, [index("pumps", m) for m in range(n + 1)])
            if pump.serial
            else _hl7_pump_issues(config, pump, i, seen_devices)
        )
    for n, bag in enumerate(config.bags):
        i = index("bags", n)
        if bag.bed not in seen_beds and bag.bed not in bed_ids:
            issues.append(ConfigIssue(f"bags[{i}].bed", f"no bed with id '{bag.bed}'"))
    if config.beds and config.mqtt.username is not None and not config.alerts.ack_users:
        # A broker with logins runs an ACL whose %u pattern lets every user, monitors
        # included, publish an acknowledgement as itself: only this list tells staff apart.
        issues.append(
            ConfigIssue(
                "alerts.ack_users",
                "the daemon logs in to the broker, so list the users who may acknowledge alerts "
                "(the stations): every logged-in user, monitors included, can publish an "
                "acknowledgement under its own name",
            )
        )
    for name, secret in (
        ("mqtt.password", config.mqtt.password),
        ("influx.token", config.influx.token),
        ("influx.password", config.influx.password),
    ):
        if secret.env is not None and secret.env not in os.environ:
            issues.append(ConfigIssue(f"{name}.env", f"environment variable {secret.env} is not set"))
        if secret.file is not None and not secret.file.is_file():
            issues.append(ConfigIssue(f"{name}.file", f"{secret.file} is not a readable file"))
    return (
        issues
        + _tls_files(config)
        + _web_checks(config.web, config.daemon.workers)
        + _routing_checks(config)
        + _admissions_checks(config)
    )


def _admissions_checks(config: Config) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    if config.admissions.admin_users and config.daemon.workers > 1:
        # Each worker holds only its share of the beds: nobody could apply a change whole.
        issues.append(
            ConfigIssue("admissions.admin_users", "admissions at run time need daemon.workers = 1 (for now)")
        )
    if config.hl7.port is not None and config.daemon.workers > 1:
        # One listener for every bed, and each worker would take only its own: the
        # second worker's listener found the port taken and stopped the daemon at start.
        issues.append(ConfigIssue("hl7.port", "HL7 v2 in needs daemon.workers = 1 (for now)"))
    return issues


def _tls_files(config: Config) -> list[ConfigIssue]:
    """The TLS files a link will read: found now, with their place, not at its first connection."""
    issues: list[ConfigIssue] = []
    for name, tls, used in (
        ("mqtt.tls", config.mqtt.tls, config.mqtt.url.startswith("mqtts://")),
        ("influx.tls", config.influx.tls, config.influx.url.startswith("https://")),
    ):
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(tls, key)
            if used and path is not None and not path.is_file():
                issues.append(ConfigIssue(f"{name}.{key}", f"{path} is not a readable file"))
    return issues


def _hl7_receiver_checks(receiver: Hl7ReceiverConfig, i: int) -> list[ConfigIssue]:
    """The TLS files an HL7 receiver will read: found now, not at its first delivery."""
    issues: list[ConfigIssue] = []
    if receiver.tls is not None:
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(receiver.tls, key)
            if path is not None and not path.is_file():
                issues.append(ConfigIssue(f"receivers[{i}].tls.{key}", f"{path} is not a readable file"))
    return issues


def _routing_checks(config: Config) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    receivers: dict[str, int] = {}
    for i, receiver in enumerate(config.receivers):
        if receiver.name in receivers:
            issues.append(
                ConfigIssue(
                    f"receivers[{i}].name",
                    f"'{receiver.name}' is already used by receivers[{receivers[receiver.name]}]",
                )
            )
        receivers.setdefault(receiver.name, i)
        if isinstance(receiver, Hl7ReceiverConfig):
            issues += _hl7_receiver_checks(receiver, i)
            continue
        secret = receiver.secret if isinstance(receiver, WebhookReceiverConfig) else receiver.url
        key = "secret" if isinstance(receiver, WebhookReceiverConfig) else "url"
        if secret.env is not None and secret.env not in os.environ:
            issues.append(
                ConfigIssue(f"receivers[{i}].{key}.env", f"environment variable {secret.env} is not set")
            )
        elif secret.file is not None and not secret.file.is_file():
            issues.append(ConfigIssue(f"receivers[{i}].{key}.file", f"{secret.file} is not a readable file"))
        elif secret.value is None and secret.env is None and secret.file is None:
            what = (
                "an HMAC key (secret.env, secret.file or secret.value)"
                if key == "secret"
                else "an Apprise URL"
            )
            issues.append(ConfigIssue(f"receivers[{i}].{key}", f"{what} is required"))
    routes: dict[str, int] = {}
    for i, route in enumerate(config.routes):
        if route.name in routes:
            issues.append(
                ConfigIssue(
                    f"routes[{i}].name", f"'{route.name}' is already used by routes[{routes[route.name]}]"
                )
            )
        routes.setdefault(route.name, i)
        for n, level in enumerate(route.levels):
            for name in level:
                if name not in receivers:
                    known = ", ".join(receivers) or "none configured"
                    issues.append(
                        ConfigIssue(
                            f"routes[{i}].levels[{n}]", f"no receiver named '{name}' (known: {known})"
                        )
                    )
    return issues


def _web_checks(web: WebConfig, workers: int) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    seen: dict[str, int] = {}
    for i, user in enumerate(web.users):
        if user.name in seen:
            issues.append(
                ConfigIssue(
                    f"web.users[{i}].name", f"'{user.name}' is already used by web.users[{seen[user.name]}]"
                )
            )
        seen.setdefault(user.name, i)
    if web.enabled and not web.users:
        issues.append(
            ConfigIssue("web.users", "the page is enabled but nobody can log in: add [[web.users]]")
        )
    if web.enabled and workers > 1:
        # Each worker holds only its share of the beds and would bind the same port.
        issues.append(ConfigIssue("web.enabled", "the ward page needs daemon.workers = 1 (for now)"))
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
        beds = data.get("beds")
        bed_ids = {b.get("id") for b in beds if isinstance(b, dict)} if isinstance(beds, list) else set()
        named = {i for i in bed_ids if isinstance(i, str)}
        if partial is not None:
            issues.extend(_cross_checks(*partial, bed_ids=named))
        issues.extend(_references_of_invalid_items(data, partial[1] if partial else {}, named))
        raise ConfigError(source, issues) from exc
    issues = _cross_checks(config)
    if issues:
        raise ConfigError(source, issues)
    return config


def _references_of_invalid_items(
    data: Mapping[str, Any], kept: Mapping[str, Sequence[int]], bed_ids: Set[str]
) -> list[ConfigIssue]:
    """The bed a pump or bag names, and the protocol a bed names, checked on the items that
    failed their own validation too (the cross checks see only valid items): every
    problem of the file in one pass, not the references after the fields are fixed."""
    issues: list[ConfigIssue] = []
    protocols = data.get("protocols")
    known = BUILTIN_PROTOCOLS | (set(protocols) if isinstance(protocols, dict) else set())
    for key, field, ok, what in (
        ("pumps", "bed", bed_ids, "no bed with id"),
        ("bags", "bed", bed_ids, "no bed with id"),
        ("beds", "protocol", known, "unknown protocol"),
    ):
        items = data.get(key)
        if not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            value = item.get(field) if isinstance(item, dict) else None
            if i not in kept.get(key, ()) and isinstance(value, str) and value not in ok:
                issues.append(ConfigIssue(f"{key}[{i}].{field}", f"{what} '{value}'"))
    return issues


_LIST_ITEMS: dict[str, type[Model]] = {"beds": BedConfig, "pumps": PumpConfig, "bags": BagConfig}


def valid_part(path: Path) -> tuple[Config, dict[str, list[int]]] | None:
    """What validates of a config file that has errors (invalid list items and tables left
    out), and the file index of each list item kept: for checks beyond the errors
    (``wardd check-config``'s warnings). ``None`` when the file cannot be read as TOML."""
    try:
        return _lenient(tomli.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, tomli.TOMLDecodeError):
        return None


def _lenient(data: Mapping[str, Any]) -> tuple[Config, dict[str, list[int]]] | None:
    """The config with invalid list items and tables left out, for cross checks only,
    and the file index of each list item kept."""
    kept: dict[str, Any] = {}
    positions: dict[str, list[int]] = {}
    for key, value in data.items():
        if key not in Config.model_fields:
            continue
        item_type = _LIST_ITEMS.get(key)
        if item_type is not None and isinstance(value, list):
            good: list[Model] = []
            positions[key] = []
            for i, item in enumerate(value):
                with contextlib.suppress(ValidationError):
                    good.append(item_type.model_validate(item))
                    positions[key].append(i)
            kept[key] = good
            continue
        try:
            Config.model_validate({key: value})
        except ValidationError:
            continue
        kept[key] = value
    try:
        lists = {key: kept.pop(key) for key in _LIST_ITEMS if key in kept}
        return Config.model_validate(kept).model_copy(update=lists), positions
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
        data = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        raise ConfigError(str(path), [ConfigIssue("", f"not valid TOML: {exc}")]) from exc
    return parse(data, str(path))


def summary(config: Config) -> str:
    """A one-line description of a valid configuration."""
    wards = sorted({b.ward for b in config.beds})
    return (
        f"{len(config.beds)} bed(s) in {len(wards)} ward(s) ({', '.join(wards) or '-'}), "
        f"{len(config.pumps)} pump(s), MQTT {config.mqtt.url}, storage {config.influx.api}"
        + (f" {config.influx.url}" if config.influx.api != "none" else "")
        + (f", ward page on {config.web.host}:{config.web.port}" if config.web.enabled else "")
    )
