"""``wardd run`` without its clinical rules: the floor of the daemon's own path.

``python -m bench.floor run --config <toml>`` runs the daemon as ``python -m daemon``
does, except that a vital-sign sample reaches no rule unless it is of a bed named in
``WARDD_FLOOR_RULED_BEDS`` (comma-separated ids: the beds the harness probes, whose
fever alerts tell it that the daemon is ready and done). Everything else is the
daemon's: the MQTT link, each input logged and acknowledged after its commit, the
duplicate check, decoding, the points and their outbox, ticks and checkpoints. So
``wardd`` against ``wardd-floor`` in one run is what the rules cost, and
``wardd-floor`` against the baselines what the rest does.

For the bench only: a daemon that judges nothing is no ward's daemon.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime

from daemon.cli import main
from daemon.events import AlertCandidate, Event, VitalSample
from daemon.rules import RuleEngine

RULED_BEDS_ENV = "WARDD_FLOOR_RULED_BEDS"


def leave_out_rules(ruled_beds: frozenset[str]) -> None:
    """Make ``RuleEngine.handle`` hand vital-sign samples of other beds to no rule.

    Patched before ``main``: the workers are forked from this process and inherit it.
    """
    handle = RuleEngine.handle

    def floor_handle(self: RuleEngine, event: Event, now: datetime) -> list[AlertCandidate]:
        if isinstance(event, VitalSample) and event.bed not in ruled_beds:
            return []
        return handle(self, event, now)

    RuleEngine.handle = floor_handle  # type: ignore[method-assign]


if __name__ == "__main__":
    leave_out_rules(frozenset(filter(None, os.environ.get(RULED_BEDS_ENV, "").split(","))))
    sys.exit(main())
