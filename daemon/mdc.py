"""IEEE 11073-10101 codes and UCUM units for the vital signs the daemon reads.

Sources: shared/domain.md section 5 (codes, units) and section 3 (plausible ranges,
"no value" sentinels).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from daemon.events import Metric


@dataclass(frozen=True, slots=True)
class Term:
    """An MDC term that maps onto one of the daemon's metrics."""

    code: int
    ref_id: str
    metric: Metric


# Numeric code = partition × 65536 + term code (domain.md section 5).
TERMS: tuple[Term, ...] = (
    Term(150364, "MDC_TEMP_BODY", Metric.TEMP_C),
    Term(150344, "MDC_TEMP", Metric.TEMP_C),  # generic, seen in vendor feeds
    Term(150021, "MDC_PRESS_BLD_NONINV_SYS", Metric.SBP_MMHG),
    Term(150022, "MDC_PRESS_BLD_NONINV_DIA", Metric.DBP_MMHG),
    Term(150023, "MDC_PRESS_BLD_NONINV_MEAN", Metric.MAP_MMHG),
    # Generic (e.g. arterial line) blood pressure: a pressure all the same.
    Term(150017, "MDC_PRESS_BLD_SYS", Metric.SBP_MMHG),
    Term(150018, "MDC_PRESS_BLD_DIA", Metric.DBP_MMHG),
    Term(150019, "MDC_PRESS_BLD_MEAN", Metric.MAP_MMHG),
    Term(147842, "MDC_ECG_HEART_RATE", Metric.HR_PER_MIN),
    Term(149514, "MDC_PULS_RATE", Metric.HR_PER_MIN),
    Term(149530, "MDC_PULS_OXIM_PULS_RATE", Metric.HR_PER_MIN),
    Term(149546, "MDC_PULS_RATE_NON_INV", Metric.HR_PER_MIN),
    Term(150456, "MDC_PULS_OXIM_SAT_O2", Metric.SPO2_PCT),
    Term(151562, "MDC_RESP_RATE", Metric.RR_PER_MIN),
    Term(151578, "MDC_TTHOR_RESP_RATE", Metric.RR_PER_MIN),
    Term(151594, "MDC_CO2_RESP_RATE", Metric.RR_PER_MIN),
    Term(151658, "MDC_PULS_OXIM_RESP_RATE", Metric.RR_PER_MIN),
)

BY_REF_ID: Mapping[str, Term] = {t.ref_id: t for t in TERMS}
BY_CODE: Mapping[int, Term] = {t.code: t for t in TERMS}


def _identity(value: float) -> float:
    return value


def _fahrenheit_to_celsius(value: float) -> float:
    return (value - 32.0) * 5.0 / 9.0


# UCUM units accepted per metric, with the conversion to the metric's own unit.
UNITS: Mapping[Metric, Mapping[str, Callable[[float], float]]] = {
    Metric.TEMP_C: {"Cel": _identity, "[degF]": _fahrenheit_to_celsius},
    Metric.SBP_MMHG: {"mm[Hg]": _identity},
    Metric.DBP_MMHG: {"mm[Hg]": _identity},
    Metric.MAP_MMHG: {"mm[Hg]": _identity},
    Metric.HR_PER_MIN: {"/min": _identity, "{beats}/min": _identity},
    Metric.SPO2_PCT: {"%": _identity},
    Metric.RR_PER_MIN: {"/min": _identity, "{breaths}/min": _identity},
}

# MDC units (OBX-6 of an HL7 PCD-01 message) as the UCUM units above (domain.md section 5).
MDC_UNITS: Mapping[str, str] = {
    "268192": "Cel",
    "MDC_DIM_DEGC": "Cel",
    "266016": "mm[Hg]",
    "MDC_DIM_MMHG": "mm[Hg]",
    "264864": "/min",
    "MDC_DIM_BEAT_PER_MIN": "/min",
    "262688": "%",
    "MDC_DIM_PERCENT": "%",
    "264928": "/min",
    "MDC_DIM_RESP_PER_MIN": "/min",
    # Infusion pumps (``daemon.hl7.hl7pump``): rate and volume.
    "265266": "mL/h",
    "MDC_DIM_MILLI_L_PER_HR": "mL/h",
    "263762": "mL",
    "MDC_DIM_MILLI_L": "mL",
}

# UCUM units accepted for a pump's rate and volume (``daemon.hl7.hl7pump``), as they are: UCUM
# takes "l" and "L" alike for the litre. Any other unit is refused, never converted.
PUMP_RATE_UNITS = frozenset({"mL/h", "ml/h"})
PUMP_VOLUME_UNITS = frozenset({"mL", "ml"})

# The pump rows of domain.md section 5 (OBX-3 of a pump server's PCD-01 message): the
# defaults of ``[hl7.pump_codes]``, which a site may replace, since domain.md marks these
# rows as confirmed by one vendor's capture only.
PUMP_PROGRAMMED_RATE = ("157784", "MDC_FLOW_FLUID_PUMP")
PUMP_CURRENT_RATE = ("158014", "MDC_FLOW_FLUID_PUMP_CURRENT")
PUMP_VOLUME_INFUSED = ("157993", "MDC_VOL_FLUID_DELIV_TOTAL")

# MIMIC-III vitals_first_day accepted ranges, exclusive unless noted (domain.md section 3).
# Values outside are artifacts, never physiology.
PLAUSIBLE: Mapping[Metric, tuple[float, float, bool]] = {
    # metric: (low exclusive, high, high inclusive?)
    Metric.HR_PER_MIN: (0.0, 300.0, False),
    Metric.SBP_MMHG: (0.0, 400.0, False),
    Metric.DBP_MMHG: (0.0, 300.0, False),
    Metric.MAP_MMHG: (0.0, 300.0, False),
    Metric.RR_PER_MIN: (0.0, 70.0, False),
    Metric.TEMP_C: (10.0, 50.0, False),
    Metric.SPO2_PCT: (0.0, 100.0, True),
}

# IEEE 11073-20601 FLOAT special values, as a device sends them in a numeric field.
SENTINELS: Mapping[int, str] = {
    0x007FFFFF: "NaN",
    0x00800000: "NRes",
    0x007FFFFE: "+INF",
    0x00800002: "-INF",
    0x00800001: "reserved",
}


def lookup(code: object) -> Term | None:
    """The term for a reference id (``"MDC_TEMP_BODY"``) or a numeric code (``150364``)."""
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return BY_CODE.get(code)
    if isinstance(code, str):
        if code.isdigit():
            # isdigit() is true for "²" and other non-ASCII digits that int() refuses,
            # and int() refuses very long digit strings: neither is one of our codes.
            return BY_CODE.get(int(code)) if code.isascii() and len(code) <= 10 else None
        return BY_REF_ID.get(code)
    return None


def plausible(metric: Metric, value: float) -> bool:
    """Whether ``value`` lies in the physiologically possible range for ``metric``."""
    low, high, high_inclusive = PLAUSIBLE[metric]
    return low < value and (value <= high if high_inclusive else value < high)
