"""What a simulated bedside monitor shows, and its messages in the daemon's vitals contract.

Values follow a baseline with Gaussian noise; excursions move one metric towards a
target over a ramp (a fever rising to 38.2 °C from hour 12, say). The scenario runner
(``simulators/scenario.py``) publishes them over MQTT on its simulated clock.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from daemon.capture import iso
from daemon.events import Metric

# Metric -> (MDC reference id, UCUM unit) as a monitor sends them.
CODES: Mapping[Metric, tuple[str, str]] = {
    Metric.TEMP_C: ("MDC_TEMP_BODY", "Cel"),
    Metric.SBP_MMHG: ("MDC_PRESS_BLD_NONINV_SYS", "mm[Hg]"),
    Metric.DBP_MMHG: ("MDC_PRESS_BLD_NONINV_DIA", "mm[Hg]"),
    Metric.MAP_MMHG: ("MDC_PRESS_BLD_NONINV_MEAN", "mm[Hg]"),
    Metric.HR_PER_MIN: ("MDC_ECG_HEART_RATE", "/min"),
    Metric.SPO2_PCT: ("MDC_PULS_OXIM_SAT_O2", "%"),
    Metric.RR_PER_MIN: ("MDC_RESP_RATE", "/min"),
}

BASELINE: Mapping[Metric, float] = {
    Metric.TEMP_C: 36.8,
    Metric.SBP_MMHG: 120.0,
    Metric.DBP_MMHG: 74.0,
    Metric.HR_PER_MIN: 78.0,
    Metric.SPO2_PCT: 97.0,
    Metric.RR_PER_MIN: 16.0,
}
NOISE_SD: Mapping[Metric, float] = {
    Metric.TEMP_C: 0.05,
    Metric.SBP_MMHG: 3.0,
    Metric.DBP_MMHG: 2.0,
    Metric.HR_PER_MIN: 2.0,
    Metric.SPO2_PCT: 0.4,
    Metric.RR_PER_MIN: 0.6,
}
DECIMALS: Mapping[Metric, int] = {Metric.TEMP_C: 1}


@dataclass(frozen=True, slots=True)
class Excursion:
    """From ``start_s`` (seconds after the profile's start), ``metric`` moves to ``target``
    linearly over ``ramp_s``, holds until ``end_s`` (if any), then returns to baseline."""

    metric: Metric
    start_s: float
    target: float
    ramp_s: float = 0.0
    end_s: float | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    """What a simulated patient's monitor shows over time."""

    baseline: Mapping[Metric, float] = field(default_factory=lambda: dict(BASELINE))
    noise_sd: Mapping[Metric, float] = field(default_factory=lambda: dict(NOISE_SD))
    excursions: Sequence[Excursion] = ()

    def value(self, metric: Metric, elapsed_s: float, rng: random.Random) -> float:
        """The metric at ``elapsed_s``, with noise."""
        value = self.baseline[metric]
        for exc in self.excursions:
            if exc.metric != metric or elapsed_s < exc.start_s:
                continue
            if exc.end_s is not None and elapsed_s >= exc.end_s:
                continue
            progress = 1.0 if exc.ramp_s <= 0 else min(1.0, (elapsed_s - exc.start_s) / exc.ramp_s)
            value += (exc.target - value) * progress
        noisy = value + rng.gauss(0.0, self.noise_sd.get(metric, 0.0))
        return round(noisy, DECIMALS.get(metric, 0))


def vitals_payload(device: str, when: datetime, values: Mapping[Metric, float]) -> bytes:
    """One message in the daemon's vitals contract."""
    obs = [{"code": CODES[m][0], "value": v, "unit": CODES[m][1]} for m, v in values.items()]
    return json.dumps({"ts": iso(when), "device": device, "obs": obs}).encode()
