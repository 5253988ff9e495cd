"""Technical conditions that concern the daemon itself rather than a device at the bed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon.config import BedConfig, Config
from daemon.events import AlertCandidate, Event, Health, Kind, Priority, SourceHealth, Text
from daemon.rules import Rule

STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class StorageState:
    """Whether the bed's data is being spooled instead of stored."""

    down: bool = False


class StorageRule:
    """``STORAGE_UNAVAILABLE`` while the database is down and points are spooled to disk.

    Low priority: nothing is lost (the spool is drained later) and no patient harm
    follows directly, but the degradation must be visible, not only logged.
    """

    consumes = (SourceHealth,)
    """The events this rule reads (``daemon.rules.Rule``); it ignores every other."""

    name = "storage"

    def __init__(self, bed: BedConfig) -> None:
        self._bed = bed

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
            self._bed.ward,
            self._bed.id,
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


def tech_rules(config: Config, bed: BedConfig) -> list[Rule[Any]]:
    """The daemon's own technical rules for one bed."""
    return [StorageRule(bed)]
