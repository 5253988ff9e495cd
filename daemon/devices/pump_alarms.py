"""What each pump vendor's alarm codes mean: the alert condition, its text, whether it stops the pump.

A driver reports the pump's own alarm code as it read it (``PumpStatus.alarm``); the
pump rule (``daemon.pump_rules``) looks the code up here, in the table of the pump's
``driver``. A code no table names still raises an alert (``PUMP_ALARM``, with the code
in its text): an alarm is never dropped because wardd does not know it.

Where each code and its meaning come from, and which meanings are inferred, is in
``docs/pump-protocols.md`` ("Alarms"). In short: the NE-1000 codes are from its manual;
the Alaris codes are the names OpenICE lists, their meanings inferred from the names
except "no alarm" and the occlusion; the Fresenius base says only "presence of an alarm"
(command error ``12``), never which one.

``stops`` says whether the alarm means the pump stopped infusing. A stopping alarm's
condition stays present until the pump runs again (clearing the alarm at the keypad does
not restart the infusion); one that does not stop the pump (a low battery, a syringe
nearly empty) ends when the pump no longer reports it. A code whose meaning is unknown
counts as stopping: the condition then outlasts the alarm rather than ending early.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from daemon.events import Text

GENERIC = "PUMP_ALARM"
ALARIS_NO_ALARM = "AL_NOALM"
FRESENIUS_ALARM_ERROR = "12"  # command error "presence of an alarm"


@dataclass(frozen=True, slots=True)
class AlarmMeaning:
    """One vendor code: the condition it raises, the text, whether it stops the pump."""

    condition: str
    message: Text
    stops: bool = True


_STOPPED_EN = "infusion stopped"
_STOPPED_FR = "perfusion arrêtée"

NE1000: Mapping[str, AlarmMeaning] = {
    "S": AlarmMeaning(
        "PUMP_STALL",
        Text(
            "pump stalled (occlusion or empty syringe): infusion stopped",
            "pompe bloquée (occlusion ou seringue vide) : perfusion arrêtée",
        ),
    ),
    "R": AlarmMeaning(
        "PUMP_RESET",
        Text(
            "pump lost power and restarted: infusion stopped",
            "la pompe a perdu son alimentation et a redémarré : perfusion arrêtée",
        ),
    ),
    "T": AlarmMeaning(
        "PUMP_SAFE_MODE_TIMEOUT",
        Text(
            "pump stopped: no message from the daemon within its safe-mode timeout",
            "pompe arrêtée : aucun message du démon dans le délai du mode sécurisé",
        ),
    ),
    "E": AlarmMeaning(
        "PUMP_PROGRAM_ERROR",
        Text("pump program error: infusion stopped", "erreur de programme de la pompe : perfusion arrêtée"),
    ),
    "O": AlarmMeaning(
        "PUMP_PHASE_OUT_OF_RANGE",
        Text(
            "pump program phase out of range: infusion stopped",
            "phase du programme de la pompe hors limites : perfusion arrêtée",
        ),
    ),
}

# The Alaris codes OpenICE lists whose meaning its name gives clearly enough. The other
# listed codes (AL_CALLB, AL_COMTO, AL_LDSCN, "AL DRDIS" (so spelt), AL_FAULT, AL_LBTAC, AL_PRDSC,
# AL_RHIGH, AL_SYRCO, AL_TCITG, AL_TITCA, AL_TITNC, AL_VTBIC, AL_VTBIK, AL_VTBIS) and any
# other code raise PUMP_ALARM with the code: their meaning is not known.
ALARIS: Mapping[str, AlarmMeaning] = {
    "AL_OCCLU": AlarmMeaning(
        "PUMP_OCCLUSION",
        Text(
            "pump reports an occlusion: infusion stopped",
            "la pompe signale une occlusion : perfusion arrêtée",
        ),
    ),
    "AL_EOIST": AlarmMeaning(
        "PUMP_END_OF_INFUSION",
        Text(
            "pump reports the end of the infusion (syringe or volume done): infusion stopped",
            "la pompe signale la fin de la perfusion (seringue ou volume terminé) : perfusion arrêtée",
        ),
    ),
    "AL_EOIKV": AlarmMeaning(
        "PUMP_END_OF_INFUSION",
        Text(
            "pump reports the end of the infusion and keeps the vein open at a minimal rate",
            "la pompe signale la fin de la perfusion et garde la veine ouverte à débit minimal",
        ),
        stops=False,
    ),
    "AL_NEOIN": AlarmMeaning(
        "PUMP_NEAR_END_OF_INFUSION",
        Text(
            "pump reports the infusion nearly done (syringe nearly empty)",
            "la pompe signale la perfusion presque terminée (seringue presque vide)",
        ),
        stops=False,
    ),
    "AL_LWBAT": AlarmMeaning(
        "PUMP_BATTERY_LOW",
        Text("pump battery low", "batterie de la pompe faible"),
        stops=False,
    ),
    "AL_EMBAT": AlarmMeaning(
        "PUMP_BATTERY_EMPTY",
        Text("pump battery empty: infusion stopped", "batterie de la pompe vide : perfusion arrêtée"),
    ),
    "AL_ACDIS": AlarmMeaning(
        "PUMP_ON_BATTERY",
        Text(
            "pump disconnected from mains power: running on its battery",
            "pompe débranchée du secteur : elle fonctionne sur batterie",
        ),
        stops=False,
    ),
}

FRESENIUS: Mapping[str, AlarmMeaning] = {
    FRESENIUS_ALARM_ERROR: AlarmMeaning(
        GENERIC,
        Text(
            "pump reports an alarm (its base does not say which): infusion not read",
            "la pompe signale une alarme (sa base ne dit pas laquelle) : perfusion non lue",
        ),
    ),
}

BY_DRIVER: Mapping[str, Mapping[str, AlarmMeaning]] = {
    "ne1000": NE1000,
    "alaris-asena": ALARIS,
    "fresenius-base-a": FRESENIUS,
}


# Every NE-1000 alarm stops the pump (domain.md section 6), known code or not.
_ALWAYS_STOPPED = frozenset({"ne1000"})


def meaning(driver: str, code: str) -> AlarmMeaning:
    """What ``code`` from a pump read with ``driver`` means; ``PUMP_ALARM`` when not known."""
    known = BY_DRIVER.get(driver, {}).get(code)
    if known is not None:
        return known
    shown = code or "?"
    if driver in _ALWAYS_STOPPED:
        return AlarmMeaning(
            GENERIC,
            Text(f"pump alarm {shown}: {_STOPPED_EN}", f"alarme pompe {shown} : {_STOPPED_FR}"),
        )
    return AlarmMeaning(
        GENERIC,
        Text(
            f"pump alarm {shown} (meaning not known): check the pump",
            f"alarme pompe {shown} (signification inconnue) : vérifier la pompe",
        ),
    )
