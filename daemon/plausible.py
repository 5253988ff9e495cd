"""Values a valid config may hold but that are clinically implausible: warnings, not errors.

``wardd check-config`` prints them with their reason (``--strict`` fails on them) and
``wardd run`` logs them at start. Each check stands on a label fact (domain.md
section 1); where the label gives no bound, the bound is a setting marked as a site
choice. A patient under 45 kg on a flat-dose protocol is not here: the label forbids it,
so the config refuses it (``daemon.config``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

from daemon.clinical.protocols import (
    cycle_schedule,
    next_cycle_protocol,
    protocol_config,
    restart_schedule,
    schedule_for,
)
from daemon.config import LABEL_FLAT_DOSE_MIN_KG, BedConfig, Config
from daemon.errors import ConfigIssue

# The pump rates of the label's bags (domain.md section 1): 24 h at 10 mL/h, 48 h at
# 5 mL/h, 72 h (preserved) at 1.8 mL/h, 7 days (preserved) at 0.6 mL/h.
LABEL_BAG_RATES_ML_PER_H = (10.0, 5.0, 1.8, 0.6)


def review(config: Config, positions: Mapping[str, Sequence[int]] | None = None) -> list[ConfigIssue]:
    """Every implausible value of ``config``, with where and why.

    ``config`` may be the valid part of a file with errors (``config.valid_part``):
    ``positions`` then maps its beds and bags to their index in the file, and a bag of a
    bed left out, or a bed of an unknown protocol, is not judged (its error says why).
    """

    def index(key: str, i: int) -> int:
        return positions[key][i] if positions and key in positions else i

    issues: list[ConfigIssue] = []
    for i, bed in enumerate(config.beds):
        with contextlib.suppress(KeyError):
            issue = _per_m2_protocol_at_45_kg(config, bed, index("beds", i))
            if issue is not None:
                issues.append(issue)
    for i, bag in enumerate(config.bags):
        try:
            bed = config.bed(bag.bed)
            low, high, why = needed_concentrations(config, bed)
        except KeyError:
            continue
        factor = config.thresholds_for(bed.id).dose.bag_concentration_plausible_factor
        concentration = bag.concentration_ug_per_ml
        if low / factor <= concentration <= high * factor:
            continue
        ratio = concentration / high if concentration > high else low / concentration
        side = "above the most" if concentration > high else "below the least"
        issues.append(
            ConfigIssue(
                f"bags[{index('bags', i)}].concentration_ug_per_ml",
                f"{concentration:g} µg/mL is {ratio:.3g} times {side} that protocol '{bed.protocol}' "
                f"needs for bed {bed.id} from any of the label's bags ({low:.4g} to {high:.4g} µg/mL: "
                f"{why}); check the pharmacy label (warning beyond a factor of {factor:g}: "
                "thresholds.dose.bag_concentration_plausible_factor, a site choice)",
            )
        )
    return issues


def needed_concentrations(config: Config, bed: BedConfig) -> tuple[float, float, str]:
    """The least and the most concentration that ``bed``'s doses need from the label's bags,
    and how they were found: every dose of its protocol, its restart steps and its next
    cycle, at the fastest and the slowest bag rate."""
    start = bed.protocol_start
    schedules = [
        schedule_for(bed, config),
        restart_schedule(bed, config, bed.protocol, start=start, stop=start),
        cycle_schedule(bed, config, next_cycle_protocol(bed.protocol, config), start=start),
    ]
    doses = [
        step.dose_ug_per_day for schedule in schedules for step in schedule.steps if step.dose_ug_per_day
    ]
    fastest, slowest = max(LABEL_BAG_RATES_ML_PER_H), min(LABEL_BAG_RATES_ML_PER_H)
    low, high = min(doses) / (24 * fastest), max(doses) / (24 * slowest)
    why = f"{min(doses):.3g} µg/day at {fastest:g} mL/h to {max(doses):.3g} µg/day at {slowest:g} mL/h"
    return low, high, why


def _per_m2_protocol_at_45_kg(config: Config, bed: BedConfig, i: int) -> ConfigIssue | None:
    """The label doses per m² only below 45 kg: a heavier patient on a per-m² protocol."""
    if bed.weight_kg < LABEL_FLAT_DOSE_MIN_KG:
        return None
    protocol = protocol_config(bed.protocol, config)
    if any(step.dose_ug_per_day is not None for step in protocol.steps):
        return None
    return ConfigIssue(
        f"beds[{i}].protocol",
        f"the patient weighs {bed.weight_kg:g} kg and protocol '{bed.protocol}' doses per m² of body "
        f"surface: the label doses per m² below {LABEL_FLAT_DOSE_MIN_KG:g} kg only, and in flat "
        "µg/day from 45 kg (domain.md section 1)",
    )
