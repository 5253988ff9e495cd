"""Technical conditions that concern the daemon itself rather than a device at the bed.

They are a ward's, not a bed's: the database and the broker serve every bed of the
ward at once, so one outage is one alert for the ward (at its ``ward_subject``, see
``daemon.ids``), not one per bed; a thousand beds would otherwise page staff a
thousand times for one outage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from daemon.config import Config
from daemon.events import AlertCandidate, Event, Health, Kind, Priority, SourceHealth, Text, Tick
from daemon.frozen import replace
from daemon.ids import ward_subject
from daemon.rules import Rule
from daemon.timefmt import iso, parse_iso

STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class StorageState:
    """Whether the ward's data is being spooled instead of stored."""

    down: bool = False


class StorageRule:
    """``STORAGE_UNAVAILABLE`` while the database is down and points are spooled to disk.

    Low priority: nothing is lost (the spool is drained later) and no patient harm
    follows directly, but the degradation must be visible, not only logged.
    """

    consumes = (SourceHealth,)
    """The events this rule reads (``daemon.rules.Rule``); it ignores every other."""

    name = "storage"

    def __init__(self, ward: str) -> None:
        self._ward = ward

    def initial(self) -> StorageState:
        """Storage assumed up."""
        return StorageState()

    def step(
        self, state: StorageState, event: Event, now: datetime
    ) -> tuple[StorageState, Sequence[AlertCandidate]]:
        """Follow the storage health signals."""
        if not isinstance(event, SourceHealth) or event.source != "storage":
            return state, ()
        down = event.health is not Health.CONNECTED
        if down == state.down:
            return state, ()
        message = (
            Text(
                en=f"Time-series storage unavailable; data is kept on local disk and sent later ({event.detail}).",
                fr=f"Stockage des séries temporelles indisponible ; les données sont gardées sur le disque local et envoyées plus tard ({event.detail}).",
            )
            if down
            else Text(
                en="Time-series storage reachable again.",
                fr="Stockage des séries temporelles de nouveau joignable.",
            )
        )
        candidate = AlertCandidate(
            STORAGE_UNAVAILABLE,
            self._ward,
            ward_subject(self._ward),
            event.time,
            present=down,
            kind=Kind.TECHNICAL,
            priority=Priority.LOW,
            message=message,
        )
        return StorageState(down), (candidate,)

    def dump(self, state: StorageState) -> Mapping[str, Any]:
        """JSON-compatible state."""
        return {"down": state.down}

    def load(self, data: Mapping[str, Any]) -> StorageState:
        """State from ``dump``."""
        return StorageState(bool(data.get("down", False)))


BROKER_UNAVAILABLE = "BROKER_UNAVAILABLE"
BROKER_BACK = Text(en="MQTT broker reachable again.", fr="Broker MQTT de nouveau joignable.")


@dataclass(frozen=True, slots=True)
class BrokerState:
    """Since when the broker has been unreachable, and whether that was announced."""

    down_since: datetime | None = None
    detail: str = ""
    raised: bool = False


class BrokerRule:
    """``BROKER_UNAVAILABLE`` once the MQTT link has been down for ``mqtt.alert_after_s``.

    Medium priority: while the broker is away, alert transitions wait in the store
    and reach no station over MQTT, so staff must learn it by another way (the
    console, ``wardd status``). A short reconnection (a broker restart) stays a
    counted, logged event; a refused certificate does not fix itself, so it lasts
    and is announced like any other loss, with what was refused in the message.
    """

    consumes = (SourceHealth, Tick)
    """The events this rule reads (``daemon.rules.Rule``); it ignores every other."""

    name = "broker"

    def __init__(self, ward: str, alert_after_s: float) -> None:
        self._ward = ward
        self._alert_after = timedelta(seconds=alert_after_s)

    def initial(self) -> BrokerState:
        """Broker assumed reachable."""
        return BrokerState()

    def step(
        self, state: BrokerState, event: Event, now: datetime
    ) -> tuple[BrokerState, Sequence[AlertCandidate]]:
        """Follow the link's health; announce a loss once it has lasted."""
        if isinstance(event, SourceHealth):
            if event.source != "mqtt":
                return state, ()
            if event.health is Health.CONNECTED:
                if not state.raised:
                    return BrokerState(), ()
                return BrokerState(), (self._candidate(event.time, present=False, message=BROKER_BACK),)
            since = state.down_since if state.down_since is not None else event.time
            state = replace(state, down_since=since, detail=event.detail)
        elif not isinstance(event, Tick):
            return state, ()
        if state.down_since is None or state.raised or now - state.down_since < self._alert_after:
            return state, ()
        lost = Text(
            en=f"MQTT broker unreachable: alerts reach no station until it is back ({state.detail}).",
            fr=f"Broker MQTT injoignable : les alertes n'atteignent aucun poste jusqu'à son retour ({state.detail}).",
        )
        return replace(state, raised=True), (self._candidate(now, present=True, message=lost),)

    def _candidate(self, time: datetime, *, present: bool, message: Text) -> AlertCandidate:
        return AlertCandidate(
            BROKER_UNAVAILABLE,
            self._ward,
            ward_subject(self._ward),
            time,
            present=present,
            kind=Kind.TECHNICAL,
            priority=Priority.MEDIUM,
            message=message,
        )

    def dump(self, state: BrokerState) -> Mapping[str, Any]:
        """JSON-compatible state."""
        return {
            "down_since": None if state.down_since is None else iso(state.down_since),
            "detail": state.detail,
            "raised": state.raised,
        }

    def load(self, data: Mapping[str, Any]) -> BrokerState:
        """State from ``dump``."""
        since = data.get("down_since")
        return BrokerState(
            None if since is None else parse_iso(since),
            str(data.get("detail", "")),
            bool(data.get("raised", False)),
        )


WARD_CONDITIONS = frozenset({STORAGE_UNAVAILABLE, BROKER_UNAVAILABLE})
"""The conditions raised once per ward; before, they were raised at every bed."""


def tech_rules(config: Config, ward: str) -> list[Rule[Any]]:
    """The daemon's own technical rules for one ward (run at its ``ward_subject``)."""
    return [StorageRule(ward), BrokerRule(ward, config.mqtt.alert_after_s)]
