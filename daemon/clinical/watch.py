"""The fever, haemodynamic and neurotoxicity watch of one bed, put together.

Its rules build on one another's vocabulary (NEWS2 and CRS read the vital-sign
tracks of ``daemon.clinical.vitals``), so the family is assembled here, above them all.
"""

from __future__ import annotations

from typing import Any

from daemon.clinical.crs import CrsRule, IcansRule, NeuroCheckRule
from daemon.clinical.dose import configured_bag
from daemon.clinical.news2 import News2Rule
from daemon.clinical.protocols import schedule_for
from daemon.clinical.vitals import VitalsRule
from daemon.config import BedConfig, Config
from daemon.rules import Rule


def vital_rules(config: Config, bed: BedConfig) -> list[Rule[Any]]:
    """Every rule of the fever, haemodynamic and neurotoxicity watch for one bed.

    In evaluation order: vital signs, NEWS2, CRS, ICANS, neuro-check reminder.
    """
    th = config.thresholds_for(bed.id).vitals
    schedule = schedule_for(bed, config)
    bag = configured_bag(config, bed)
    return [
        VitalsRule(th, bed, schedule),
        News2Rule(th, bed),
        CrsRule(th, bed, schedule, bag.concentration_ug_per_ml if bag else None),
        IcansRule(bed),
        NeuroCheckRule(th, bed, schedule),
    ]
