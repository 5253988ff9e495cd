"""The alert engine: one lifecycle for every alert, and its delivery to staff.

Rules say what they see as ``AlertCandidate`` values, often and repeatedly; this
module turns them into alerts that a nurse can trust: one open alert per bed and
condition, a stable id, acknowledgement by a named person, latching, escalation,
an audit journal, and state that survives a restart. Vocabulary: IEC 60601-1-8
and IHE PCD ACM (``shared/domain.md`` section 4).

Lifecycle of one alert (``AlertBook``, pure: no I/O, no clock reads)::

    from           on                          to             phase
    -              condition present           ACTIVE         start
    ACTIVE         acknowledged                ACKNOWLEDGED   ack
    ACTIVE         cleared, low or medium      RESOLVED       end    (non-latching)
    ACTIVE         cleared, high               LATCHED        latch
    ACKNOWLEDGED   cleared                     RESOLVED       end
    ACKNOWLEDGED   severity rises              ACTIVE         escalate
    LATCHED        acknowledged                RESOLVED       ack
    LATCHED        condition present again     ACTIVE         reactivate

- An alert is *closed* once its state is ``resolved``; the phase says why (``end``:
  its condition cleared; ``ack``: a latched alert was acknowledged). Details that a
  clearing candidate carries (e.g. the withdrawal that cleared it) are merged into
  the alert's.
- Dedup: a repeat with the same priority, kind and details changes nothing and is
  not published, even if its value moved. IHE ACM sends messages on state changes
  and leaves periodic refreshes to site agreement; a value worth announcing is a
  rule's business (a new grade in ``details``, or a new priority).
- Severity is the priority, then a numeric ``details["grade"]`` (CRS, ICANS) if the
  rule gives one. A rise is an ``escalate``, a fall a ``deescalate``, any other change
  of details an ``update``. A rise re-activates an acknowledged alert: the
  acknowledgement was given for something milder. A rise of an active high alert
  keeps its escalation timer running.
- Escalation of unanswered alerts runs on the daemon's clock (``tick``): an active,
  unacknowledged high-priority alert gets escalation level 1 after
  ``escalate_after_s``, level 2 after twice that, and so on (phase ``overdue``).
  Latched alerts do not escalate: their condition has already cleared.

Delivery (``AlertService``) of each transition, in this order:

    alert row + audit journal line (one store transaction, see ``daemon.links.store``)
      -> <prefix>/<ward>/bed/<bed>/alerts          transition, QoS 1
      -> <prefix>/<ward>/bed/<bed>/alerts/<id>     current state, retained; empty when closed
      -> <prefix>/<ward>/escalations               ``overdue`` transitions only
      -> point ``alerts`` in the PointSink

Acknowledgements arrive on ``.../alerts/<id>/ack/by/<user>``, where ``<user>`` is the
broker's authenticated user (its ACL lets each user write only its own topic), with an
optional display name ``{"by": "..."}``; they are answered on ``.../ack/by/<user>/reply``.
The journal records both names. ``[alerts] ack_users``, when set, lists the users who
may acknowledge. The bare ``.../alerts/<id>/ack``, whose author nobody checked, is
refused with a reply on ``.../ack/reply`` that says why. Ids read ``<bed>-<condition>-<n>``
(``n`` counts up for the whole daemon and is persisted, so ids are not reused).
``wardd ack`` uses ``send_ack``: it does not parse ids, it finds the alert's ward
and bed from its retained state, which exists exactly while the alert is open.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from daemon import ids, topics
from daemon.clock import Clock, every
from daemon.config import Config
from daemon.errors import InputError, WarddError
from daemon.events import AlertCandidate, Kind, Priority, Text, place
from daemon.frozen import replace
from daemon.links.store import Store, StoreWriter, json_text
from daemon.metrics import Counters, reject
from daemon.payloads import load_json_object
from daemon.points import FieldValue, Point, PointSink
from daemon.publish import Publisher
from daemon.schedule import Schedule, floor_us
from daemon.timefmt import iso, iso_or_none, parse_iso, parse_iso_or_none

if TYPE_CHECKING:
    import aiomqtt  # the command-line clients' type only: the daemon never loads it

log = logging.getLogger(__name__)

STATE_VERSION = 1
DEFAULT_ESCALATE_AFTER_S = 300.0  # issue 5 default (5 min); a site choice, see AlertsConfig
MAX_ACK_PAYLOAD_BYTES = 4096
MAX_BY_CHARS = 64
SYSTEM_ACTOR = "wardd"  # "who" in the journal for transitions the daemon makes itself
NEXT_SEQ_KEY = "alerts.next_seq"  # in the store's meta: alert numbers are never reused

_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")


def _id_part(ward: str, bed: str) -> str:
    """What names the bed in an alert id: the bed id, or ``ward.<ward>`` for a ward's own alerts."""
    return _UNSAFE_ID_CHARS.sub("_", f"ward.{ward}" if ids.is_ward_subject(bed) else bed)


def is_alert_id(text: str) -> bool:
    """Whether ``text`` can be an alert id (one safe MQTT topic level)."""
    return bool(_TOPIC_LEVEL.match(text))


class AlertState(StrEnum):
    """Where an alert is in its lifecycle (BICEPS signal presence On / Ack / Latch, then off)."""

    ACTIVE = "active"  # condition present, not acknowledged
    ACKNOWLEDGED = "acknowledged"  # condition present, a person has acknowledged it
    LATCHED = "latched"  # high priority, condition cleared, not yet acknowledged
    RESOLVED = "resolved"  # closed; the last state an alert is published in


class Phase(StrEnum):
    """What a transition did (IHE ACM event phases, plus the daemon's own)."""

    START = "start"  # a new alert
    UPDATE = "update"  # same priority, new details (e.g. a grade)
    ESCALATE = "escalate"  # priority raised
    DEESCALATE = "deescalate"  # priority lowered
    OVERDUE = "overdue"  # still unacknowledged: escalation level raised
    ACK = "ack"  # acknowledged by a person (closes a latched alert)
    LATCH = "latch"  # high-priority condition cleared before acknowledgement
    REACTIVATE = "reactivate"  # condition back while latched
    END = "end"  # condition cleared: closed


class AckVia(StrEnum):
    """Where an acknowledgement came from (journaled as ``via``)."""

    MQTT = "mqtt"  # a station or `wardd ack`, as the broker's authenticated user
    WEB = "web"  # the ward page, as a logged-in user
    RECEIPT = "receipt"  # a receiver's signed receipt: a person accepted the notification


class UnknownAlertError(WarddError):
    """No open alert has this id (it never existed, or it is closed)."""

    def __init__(self, alert_id: str) -> None:
        self.alert_id = alert_id
        super().__init__(f"no open alert with id {alert_id!r}")


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as it stands after its latest transition.

    ``since`` is the condition's onset (the candidate's event time); ``updated``
    and ``active_since`` are daemon time: the last transition, and the start of
    the acknowledgement timer that drives escalation.
    """

    id: str
    condition: str
    kind: Kind
    priority: Priority
    state: AlertState
    phase: Phase
    ward: str
    bed: str
    value: float | None
    unit: str | None
    since: datetime
    updated: datetime
    active_since: datetime
    message: Text
    details: Mapping[str, Any] = field(default_factory=dict)
    escalation_level: int = 0
    acked_by: str | None = None  # the authenticated user
    acked_name: str | None = None  # the display name the user gave, if any
    acked_at: datetime | None = None

    @property
    def closed(self) -> bool:
        """True once the alert is resolved: it will never change again."""
        return self.state is AlertState.RESOLVED

    def to_payload(self, language: str, *, dumped: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The alert as published on MQTT, its message in ``language`` ("en" or "fr").

        ``dumped``: this alert's ``dump()``, when the caller has it already.
        """
        out = self.dump() if dumped is None else dict(dumped)
        # The published form: one language, and without ``active_since``, the daemon's
        # own acknowledgement timer for escalation.
        del out["active_since"]
        out["message"] = self.message.get(language)
        return out

    def dump(self) -> dict[str, Any]:
        """Every field as JSON-compatible data (both languages kept)."""
        return {
            "id": self.id,
            "condition": self.condition,
            "kind": str(self.kind),
            "priority": str(self.priority),
            "state": str(self.state),
            "phase": str(self.phase),
            "ward": self.ward,
            "bed": self.bed,
            "value": self.value,
            "unit": self.unit,
            "since": iso(self.since),
            "updated": iso(self.updated),
            "active_since": iso(self.active_since),
            "message": {"en": self.message.en, "fr": self.message.fr},
            "details": dict(self.details),
            "escalation_level": self.escalation_level,
            "acked_by": self.acked_by,
            "acked_name": self.acked_name,
            "acked_at": iso_or_none(self.acked_at),
        }

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> Alert:
        """An alert from ``dump``'s output; ``InputError("bad_alert", ...)`` if malformed."""
        try:
            value = data["value"]
            message = data["message"]
            return cls(
                id=_text(data["id"]),
                condition=_text(data["condition"]),
                kind=Kind(data["kind"]),
                priority=Priority(data["priority"]),
                state=AlertState(data["state"]),
                phase=Phase(data["phase"]),
                ward=_text(data["ward"]),
                bed=_text(data["bed"]),
                value=None if value is None else float(value),
                unit=None if data.get("unit") is None else _text(data["unit"]),
                since=parse_iso(data["since"]),
                updated=parse_iso(data["updated"]),
                active_since=parse_iso(data["active_since"]),
                message=Text(en=_text(message["en"]), fr=_text(message["fr"])),
                details=dict(data.get("details") or {}),
                escalation_level=int(data.get("escalation_level", 0)),
                acked_by=None if data.get("acked_by") is None else _text(data["acked_by"]),
                acked_name=None if data.get("acked_name") is None else _text(data["acked_name"]),
                acked_at=parse_iso_or_none(data.get("acked_at")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError("bad_alert", f"{type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of one alert: the alert after the change, and its state before."""

    alert: Alert
    previous: AlertState | None  # None for a start

    @property
    def phase(self) -> Phase:
        """What happened."""
        return self.alert.phase

    @property
    def closed(self) -> bool:
        """This transition closed the alert."""
        return self.alert.closed


class AlertBook:
    """The open alerts and their lifecycle; pure (time is passed in, nothing is written).

    Guarantees: at most one open alert per (ward, bed, condition); ids are never
    reused within a book and its reloads; every returned transition is already
    applied; an alert that is closed is gone from the book.
    """

    def __init__(self, *, escalate_after_s: float = DEFAULT_ESCALATE_AFTER_S, next_seq: int = 1) -> None:
        if not escalate_after_s > 0:
            raise ValueError(f"escalate_after_s must be > 0, got {escalate_after_s}")
        self.escalate_after_s = escalate_after_s
        self._next_seq = max(1, next_seq)
        self._open: dict[tuple[str, str, str], Alert] = {}
        self._by_id: dict[str, tuple[str, str, str]] = {}
        self._counts: collections.Counter[str] = collections.Counter()  # open alerts by condition
        # The conditions open at each bed: a discharge or a transfer takes its bed's alerts
        # without sorting every open alert of the hospital.
        self._beds: dict[tuple[str, str], set[str]] = {}
        # When each active high-priority alert may next escalate: a check takes only the
        # alerts due, not every open one (5,000 open alerts took 2.2 ms of the event loop
        # at each check). Put again at every change of its alert (``_watch``).
        self._escalations: Schedule[str] = Schedule()

    @property
    def next_seq(self) -> int:
        """The sequence number the next new alert will take (part of its id)."""
        return self._next_seq

    def open_alerts(self) -> list[Alert]:
        """Every open alert, oldest first."""
        return sorted(self._open.values(), key=_oldest_first)

    def unordered(self) -> Iterable[Alert]:
        """Every open alert, in no particular order (to count them without sorting)."""
        return self._open.values()

    def of_bed(self, ward: str, bed: str) -> list[Alert]:
        """The open alerts of one bed, oldest first."""
        conditions = self._beds.get((ward, bed), ())
        return sorted((self._open[(ward, bed, c)] for c in conditions), key=_oldest_first)

    def find_open(self, ward: str, bed: str, condition: str) -> Alert | None:
        """The open alert of ``condition`` at that bed, if any."""
        return self._open.get((ward, bed, condition))

    def open_count(self, condition: str) -> int:
        """How many alerts of ``condition`` are open."""
        return self._counts[condition]

    def find(self, alert_id: str) -> Alert | None:
        """The open alert with this id, if any."""
        key = self._by_id.get(alert_id)
        return None if key is None else self._open[key]

    def get(self, alert_id: str) -> Alert:
        """The open alert with this id; ``UnknownAlertError`` if there is none."""
        alert = self.find(alert_id)
        if alert is None:
            raise UnknownAlertError(alert_id)
        return alert

    def apply(self, candidate: AlertCandidate, now: datetime) -> list[Transition]:
        """Fold one candidate into the book; ``now`` is daemon time."""
        key = (candidate.ward, candidate.bed, candidate.condition)
        alert = self._open.get(key)
        if candidate.present:
            if alert is None:
                return [self._start(key, candidate, now)]
            return self._present_again(alert, candidate, now)
        if alert is None:
            return []
        if candidate.details:
            # A clearing candidate may say why (a withdrawn observation, by whom): the
            # journal keeps it alongside the details the alert had.
            alert = replace(alert, details={**alert.details, **_plain(candidate.details)})
        if alert.state is AlertState.ACTIVE and alert.priority is Priority.HIGH:
            return [self._put(alert, replace(alert, state=AlertState.LATCHED, phase=Phase.LATCH), now)]
        if alert.state in (AlertState.ACTIVE, AlertState.ACKNOWLEDGED):
            return [self._put(alert, replace(alert, state=AlertState.RESOLVED, phase=Phase.END), now)]
        return []  # latched: stays until acknowledged

    def apply_all(self, candidates: Iterable[AlertCandidate], now: datetime) -> list[Transition]:
        """``apply`` for each candidate in order."""
        return [t for candidate in candidates for t in self.apply(candidate, now)]

    def acknowledge(
        self, alert_id: str, by: str, now: datetime, *, name: str | None = None
    ) -> list[Transition]:
        """User ``by`` acknowledges an alert, shown as ``name`` if given.

        Active becomes acknowledged; latched becomes resolved (closed); an alert
        already acknowledged is left as it is (no transition). Raises
        ``UnknownAlertError`` for an id that is not open, ``InputError`` for an empty ``by``.
        """
        who = by.strip()
        if not who:
            raise InputError("missing_by", "an acknowledgement needs the name of the person who gives it")
        alert = self.get(alert_id)
        if alert.state is AlertState.ACKNOWLEDGED:
            return []
        state = AlertState.RESOLVED if alert.state is AlertState.LATCHED else AlertState.ACKNOWLEDGED
        acked = replace(alert, state=state, phase=Phase.ACK, acked_by=who, acked_name=name, acked_at=now)
        return [self._put(alert, acked, now)]

    def tick(self, now: datetime) -> list[Transition]:
        """Raise the escalation level of active high-priority alerts nobody has acknowledged
        (those due by ``now``, in the order ``open_alerts`` gives)."""
        alerts = [alert for alert in map(self.find, self._escalations.pop_due(now)) if alert is not None]
        out: list[Transition] = []
        for alert in sorted(alerts, key=_oldest_first):
            if alert.state is not AlertState.ACTIVE or alert.priority is not Priority.HIGH:
                continue  # acknowledged or lowered since: no escalation
            waited_s = (now - alert.active_since).total_seconds()
            level = math.floor(waited_s / self.escalate_after_s) if waited_s > 0 else 0
            if level > alert.escalation_level:
                out.append(self._put(alert, replace(alert, phase=Phase.OVERDUE, escalation_level=level), now))
            else:
                self._watch(alert)  # a microsecond early (``floor_us``): the next check
        return out

    def _watch(self, alert: Alert) -> None:
        """Schedule ``alert``'s next escalation check, or none if it cannot escalate."""
        if alert.closed or alert.state is not AlertState.ACTIVE or alert.priority is not Priority.HIGH:
            self._escalations.discard(alert.id)
            return
        wait = floor_us((alert.escalation_level + 1) * self.escalate_after_s)
        self._escalations.put(alert.id, alert.active_since + wait)

    def close_bed(self, ward: str, bed: str, now: datetime, reason: str) -> list[Transition]:
        """Close every open alert of a bed whose watch ends (a discharge), with ``reason``:
        a latched alert too, since nobody is left to act on it at that bed."""
        out: list[Transition] = []
        for alert in self.of_bed(ward, bed):
            closed = replace(
                alert,
                state=AlertState.RESOLVED,
                phase=Phase.END,
                details={**alert.details, "closed_because": reason},
            )
            out.append(self._put(alert, closed, now))
        return out

    def move_bed(self, ward: str, bed: str, to_ward: str, to_bed: str, now: datetime) -> list[Transition]:
        """Move the open alerts of a bed with its patient (a transfer): same ids and states,
        the new place, ``moved_from`` in their details; returned as ``update`` transitions."""
        out: list[Transition] = []
        for alert in self.of_bed(ward, bed):
            key = (alert.ward, alert.bed, alert.condition)
            self._forget(key)
            moved = replace(
                alert,
                ward=to_ward,
                bed=to_bed,
                phase=Phase.UPDATE,
                updated=now,
                details={**alert.details, "moved_from": f"{ward}/{bed}"},
            )
            new_key = (to_ward, to_bed, alert.condition)
            previous = self._open.get(new_key)
            if previous is not None:  # the new bed cannot hold one of its own: a bed is moved to empty
                self._by_id.pop(previous.id, None)
                self._counts[previous.condition] -= 1
                self._escalations.discard(previous.id)
            self._keep(new_key, moved)
            self._by_id[moved.id] = new_key
            out.append(Transition(moved, alert.state))
        return out

    def dump(self) -> dict[str, Any]:
        """The book as JSON-compatible data."""
        return {
            "version": STATE_VERSION,
            "next_seq": self._next_seq,
            "alerts": [alert.dump() for alert in self.open_alerts()],
        }

    @classmethod
    def load(
        cls, data: Mapping[str, Any], *, escalate_after_s: float = DEFAULT_ESCALATE_AFTER_S
    ) -> AlertBook:
        """A book from ``dump``'s output; ``InputError("bad_state", ...)`` if malformed."""
        if not isinstance(data, Mapping) or data.get("version") != STATE_VERSION:
            raise InputError("bad_state", f"not an alert book of version {STATE_VERSION}")
        try:
            book = cls(escalate_after_s=escalate_after_s, next_seq=int(data["next_seq"]))
            alerts = [Alert.load(item) for item in data["alerts"]]
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise InputError("bad_state", str(exc)) from exc
        for alert in alerts:
            book.restore(alert)
        return book

    def restore(self, alert: Alert) -> None:
        """Put back an alert as it was (loading); a closed one removes any open one with its id."""
        key = (alert.ward, alert.bed, alert.condition)
        if alert.closed:
            if self._by_id.get(alert.id) == key:
                del self._by_id[alert.id]
                self._forget(key)
                self._counts[alert.condition] -= 1
                self._escalations.discard(alert.id)
            return
        previous = self._open.get(key)
        if previous is not None:
            self._by_id.pop(previous.id, None)
            self._escalations.discard(previous.id)
        else:
            self._counts[alert.condition] += 1
        self._keep(key, alert)
        self._by_id[alert.id] = key
        self._watch(alert)
        self._next_seq = max(self._next_seq, _seq_of(alert.id) + 1)

    def _start(self, key: tuple[str, str, str], candidate: AlertCandidate, now: datetime) -> Transition:
        seq = self._next_seq
        self._next_seq += 1
        alert = Alert(
            id=f"{_id_part(candidate.ward, candidate.bed)}-{_UNSAFE_ID_CHARS.sub('_', candidate.condition)}-{seq}",
            condition=candidate.condition,
            kind=candidate.kind,
            priority=candidate.priority,
            state=AlertState.ACTIVE,
            phase=Phase.START,
            ward=candidate.ward,
            bed=candidate.bed,
            value=candidate.value,
            unit=candidate.unit,
            since=candidate.time,
            updated=now,
            active_since=now,
            message=candidate.message or _default_message(candidate),
            details=_plain(candidate.details),
        )
        self._keep(key, alert)
        self._by_id[alert.id] = key
        self._counts[alert.condition] += 1
        self._watch(alert)
        return Transition(alert, None)

    def _present_again(self, alert: Alert, candidate: AlertCandidate, now: datetime) -> list[Transition]:
        news: dict[str, Any] = {
            "priority": candidate.priority,
            "kind": candidate.kind,
            "value": candidate.value,
            "unit": candidate.unit,
            "message": candidate.message or alert.message,
            "details": _plain(candidate.details),
        }
        if alert.state is AlertState.LATCHED:
            return [
                self._put(
                    alert,
                    replace(
                        alert,
                        **news,
                        state=AlertState.ACTIVE,
                        phase=Phase.REACTIVATE,
                        since=candidate.time,
                        active_since=now,
                        escalation_level=0,
                    ),
                    now,
                )
            ]
        before = (alert.priority.rank, _grade(alert.details))
        after = (candidate.priority.rank, _grade(news["details"]))
        if after > before:
            if alert.state is AlertState.ACKNOWLEDGED or alert.priority is not Priority.HIGH:
                # The acknowledgement was given for something milder, or the alert only
                # now becomes high priority: announce it again and start the ack timer.
                changed = replace(
                    alert,
                    **news,
                    state=AlertState.ACTIVE,
                    phase=Phase.ESCALATE,
                    active_since=now,
                    escalation_level=0,
                    acked_by=None,
                    acked_name=None,
                    acked_at=None,
                )
            else:
                # Already active and high: worsening must not restart the escalation timer.
                changed = replace(alert, **news, phase=Phase.ESCALATE)
        elif after < before:
            level = alert.escalation_level if candidate.priority is Priority.HIGH else 0
            changed = replace(alert, **news, phase=Phase.DEESCALATE, escalation_level=level)
        elif news["details"] != alert.details or candidate.kind is not alert.kind:
            changed = replace(alert, **news, phase=Phase.UPDATE)
        else:
            return []
        return [self._put(alert, changed, now)]

    def _keep(self, key: tuple[str, str, str], alert: Alert) -> None:
        self._open[key] = alert
        self._beds.setdefault(key[:2], set()).add(key[2])

    def _forget(self, key: tuple[str, str, str]) -> None:
        del self._open[key]
        conditions = self._beds[key[:2]]
        conditions.discard(key[2])
        if not conditions:
            del self._beds[key[:2]]

    def _put(self, before: Alert, after: Alert, now: datetime) -> Transition:
        after = replace(after, updated=now)
        key = (after.ward, after.bed, after.condition)
        if after.closed:
            self._forget(key)
            del self._by_id[after.id]
            self._counts[after.condition] -= 1
        else:
            self._open[key] = after
        self._watch(after)
        return Transition(after, before.state)


def _oldest_first(alert: Alert) -> tuple[datetime, str]:
    return (alert.since, alert.id)


def _default_message(candidate: AlertCandidate) -> Text:
    where = place(candidate.ward, candidate.bed, at=True)
    return Text(en=f"{candidate.condition} {where.en}", fr=f"{candidate.condition} {where.fr}")


def _plain(details: Mapping[str, Any]) -> dict[str, Any]:
    # Round-trip through JSON so that what is compared is what is stored and reloaded
    # (tuples become lists, enums their values): no spurious update after a restart.
    plain: dict[str, Any] = json.loads(json.dumps(dict(details), default=str, sort_keys=True))
    return plain


def _grade(details: Mapping[str, Any]) -> float:
    # A rule's numeric "grade" (CRS, ICANS) orders severity within one priority.
    grade = details.get("grade")
    if isinstance(grade, int | float) and not isinstance(grade, bool):
        return float(grade)
    return -1.0


def _seq_of(alert_id: str) -> int:
    tail = alert_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


# --- I/O: persistence, journal, delivery, acknowledgement over MQTT ---------------------------


def load_book(
    store: Store, *, escalate_after_s: float = DEFAULT_ESCALATE_AFTER_S, counters: Counters | None = None
) -> AlertBook:
    """The book as it was before a restart: the open alert rows of the store.

    An unreadable row (which only a hand edit could make) is skipped and counted,
    never a reason not to start.
    """
    counters = counters or Counters()
    book = AlertBook(escalate_after_s=escalate_after_s, next_seq=int(store.meta(NEXT_SEQ_KEY, 1)))
    for row in store.alerts(open_only=True):
        try:
            book.restore(Alert.load(row.data))
        except InputError as exc:
            counters.inc("alerts.state_errors", "unreadable")
            log.error("alert row %s unreadable, skipped: %s", row.id, exc)
    return book


class AlertService:
    """Delivers the book's transitions: alert rows and journal, MQTT, retained state, storage.

    Guarantees: transitions are delivered in the order they happened, each once;
    the alert row and journal line of a transition are staged in the store before
    its messages are published (the daemon's publisher holds them until that commit);
    the cost of a transition is one row, whatever the number of open alerts;
    ``publish`` is only ever queued (``Publisher`` contract), so delivery does not
    wait on the broker. ``handle``, ``acknowledge`` and the escalation loop are
    serialised by one lock.
    """

    def __init__(
        self,
        *,
        book: AlertBook,
        publisher: Publisher,
        sink: PointSink,
        clock: Clock,
        counters: Counters,
        prefix: str,
        writer: StoreWriter,
        language: str = "en",
        check_interval_s: float = 1.0,
        qos: int = 1,
        ack_users: Iterable[str] = (),
    ) -> None:
        if language not in ("en", "fr"):
            raise ValueError(f"language must be 'en' or 'fr', got {language!r}")
        self.book = book
        self._publisher = publisher
        self._sink = sink
        self._clock = clock
        self._counters = counters
        self._prefix = prefix
        self._writer = writer
        self._language = language
        self._check_interval_s = check_interval_s
        self._qos = qos
        self._ack_users = frozenset(ack_users)
        self._lock = asyncio.Lock()
        self.listeners: list[Callable[[Transition], None]] = []
        """Called with each transition once it is staged and queued for MQTT (the ward
        page). A listener must not block and must not raise: it runs under the lock."""

    @classmethod
    def restore(
        cls,
        *,
        publisher: Publisher,
        sink: PointSink,
        clock: Clock,
        counters: Counters,
        prefix: str,
        writer: StoreWriter,
        language: str = "en",
        escalate_after_s: float = DEFAULT_ESCALATE_AFTER_S,
        check_interval_s: float = 1.0,
        qos: int = 1,
        ack_users: Iterable[str] = (),
    ) -> AlertService:
        """A service with the book as it was before the restart (see ``load_book``)."""
        book = load_book(writer.store, escalate_after_s=escalate_after_s, counters=counters)
        service = cls(
            book=book,
            publisher=publisher,
            sink=sink,
            clock=clock,
            counters=counters,
            prefix=prefix,
            writer=writer,
            language=language,
            check_interval_s=check_interval_s,
            qos=qos,
            ack_users=ack_users,
        )
        service._journal(
            [
                {
                    "at": iso(clock.now()),
                    "who": SYSTEM_ACTOR,
                    "what": "service_start",
                    "open": [alert.id for alert in book.open_alerts()],
                }
            ]
        )
        return service

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        publisher: Publisher,
        sink: PointSink,
        clock: Clock,
        counters: Counters,
        writer: StoreWriter,
    ) -> AlertService:
        """``restore`` with the settings of ``[alerts]``, ``[daemon]`` and ``[mqtt]``."""
        return cls.restore(
            publisher=publisher,
            sink=sink,
            clock=clock,
            counters=counters,
            prefix=config.mqtt.topic_prefix,
            writer=writer,
            language=config.daemon.language,
            escalate_after_s=config.alerts.escalate_after_s,
            check_interval_s=config.alerts.check_interval_s,
            qos=config.mqtt.qos,
            ack_users=config.alerts.ack_users,
        )

    def ack_subscriptions(self) -> list[str]:
        """The topic filters the MQTT link must subscribe to and route to ``handle_ack_message``."""
        return topics.ack_filters(self._prefix, "+", "+")

    async def handle(self, candidates: Iterable[AlertCandidate]) -> list[Transition]:
        """Apply the rules' candidates and deliver what changed."""
        async with self._lock:
            now = self._clock.now()
            transitions = self.book.apply_all(candidates, now)
            await self._deliver(transitions, now)
            return transitions

    async def acknowledge(
        self, alert_id: str, by: str, *, name: str | None = None, via: AckVia = AckVia.MQTT
    ) -> list[Transition]:
        """Acknowledge an alert on behalf of user ``by``; ``UnknownAlertError`` if it is not open.

        ``via`` says where it came from; the journal records it. Both ways are this one operation.
        """
        async with self._lock:
            now = self._clock.now()
            transitions = self.book.acknowledge(alert_id, by, now, name=name)
            await self._deliver(transitions, now, via=via)
            return transitions

    async def close_bed(self, ward: str, bed: str, reason: str) -> list[Transition]:
        """Close a bed's open alerts with ``reason`` (its watch ended) and deliver that."""
        async with self._lock:
            now = self._clock.now()
            transitions = self.book.close_bed(ward, bed, now, reason)
            await self._deliver(transitions, now)
            return transitions

    async def move_bed(self, ward: str, bed: str, to_ward: str, to_bed: str) -> list[Transition]:
        """Move a bed's open alerts to another (a transfer): the old retained states are
        cleared, the alerts published at their new place."""
        async with self._lock:
            now = self._clock.now()
            for alert in self.book.of_bed(ward, bed):
                topic = topics.alert_state(self._prefix, ward, bed, alert.id)
                await self._publisher.publish(topic, b"", qos=self._qos, retain=True)
            transitions = self.book.move_bed(ward, bed, to_ward, to_bed, now)
            await self._deliver(transitions, now)
            return transitions

    async def handle_ack_message(self, topic: str, payload: bytes) -> None:
        """One acknowledgement command from MQTT; every outcome gets a reply, refusals change nothing."""
        parts = topic.split("/")  # <prefix>/<ward>/bed/<bed>/alerts/<id>/ack[/by/<user>]
        if (
            len(parts) not in (7, 9)
            or parts[0] != self._prefix
            or parts[2] != "bed"
            or parts[4] != "alerts"
            or parts[6] != "ack"
            or (len(parts) == 9 and parts[7] != "by")
        ):
            # Nowhere to reply: the topic does not name an alert.
            reject(
                self._counters,
                "alerts.ack_rejected",
                "bad_topic",
                "not <prefix>/<ward>/bed/<bed>/alerts/<id>/ack/by/<user>",
                where=topic,
                payload=payload,
            )
            return
        ward, bed, alert_id = parts[1], parts[3], parts[5]
        user = parts[8] if len(parts) == 9 else None
        try:
            user = self._author(user, ward, bed, alert_id)
            name = _parse_ack(payload)
            self._check_place(alert_id, ward, bed)
            transitions = await self.acknowledge(alert_id, user, name=name, via=AckVia.MQTT)
        except (UnknownAlertError, InputError) as exc:
            reason, detail = (
                ("unknown_id", str(exc)) if isinstance(exc, UnknownAlertError) else (exc.reason, exc.detail)
            )
            self._refuse(topic, payload, reason, detail)
            await self._reply(topic, {"ok": False, "id": alert_id, "reason": reason, "error": detail})
            return
        self._counters.inc("alerts.acks", "accepted" if transitions else "already_acknowledged")
        state = transitions[-1].alert.state if transitions else AlertState.ACKNOWLEDGED
        body = {"ok": True, "id": alert_id, "state": str(state), "by": user, "name": name}
        await self._reply(topic, body)

    def _author(self, user: str | None, ward: str, bed: str, alert_id: str) -> str:
        """The authenticated user of an acknowledgement topic, if it may acknowledge."""
        if user is None:
            raise InputError(
                "unauthenticated",
                "an acknowledgement must prove its author: publish it on "
                f"{topics.alert_ack_by(self._prefix, ward, bed, alert_id, '<your MQTT user name>')}",
            )
        if not ids.is_user_id(user):
            raise InputError(
                "bad_user", f"user {ids.shown(user)} in the topic: a user name is {ids.USER_ID_RULE}"
            )
        if self._ack_users and user not in self._ack_users:
            raise InputError("not_allowed", f"user {user!r} may not acknowledge alerts ([alerts] ack_users)")
        return user

    async def republish_open(self) -> None:
        """Publish the retained state of every open alert again (the broker may have lost it)."""
        async with self._lock:
            for alert in self.book.open_alerts():
                await self._publish_state(alert)

    async def run(self) -> None:
        """Escalate unanswered alerts on the injected clock until cancelled."""
        await self.republish_open()
        async for _ in every(self._clock, self._check_interval_s):
            async with self._lock:
                now = self._clock.now()
                await self._deliver(self.book.tick(now), now)

    def _check_place(self, alert_id: str, ward: str, bed: str) -> None:
        alert = self.book.get(alert_id)
        if (alert.ward, alert.bed) != (ward, bed):
            raise InputError(
                "wrong_bed", f"alert {alert_id} is at ward {alert.ward} bed {alert.bed}, not {ward}/{bed}"
            )

    def _refuse(self, topic: str, payload: bytes, reason: str, detail: str) -> None:
        reject(self._counters, "alerts.ack_rejected", reason, detail, where=topic, payload=payload)

    async def _reply(self, ack_topic: str, body: Mapping[str, Any]) -> None:
        # The reply goes beside the command: a user can read the replies to its own only.
        await self._publisher.publish(f"{ack_topic}/reply", _encode(body), qos=self._qos, retain=False)

    async def _deliver(
        self, transitions: list[Transition], now: datetime, *, via: AckVia | None = None
    ) -> None:
        if not transitions:
            return
        # Each transition's alert is dumped once, for its row, its journal line and its
        # messages: at a fever sample's alert (two transitions with its CRS suggestion)
        # the dumps and their encoding were a third of the message's processing.
        dumps = [transition.alert.dump() for transition in transitions]
        self._save(transitions, dumps)
        self._journal([self._journal_entry(t, now, via, d) for t, d in zip(transitions, dumps, strict=True)])
        for transition, dumped in zip(transitions, dumps, strict=True):
            alert = transition.alert
            self._counters.inc("alerts.transitions", str(alert.phase))
            log.info(
                "alert %s %s: %s %s at %s/%s (%s)",
                alert.id,
                alert.phase,
                alert.condition,
                alert.priority,
                alert.ward,
                alert.bed,
                alert.state,
            )
            body = alert.to_payload(self._language, dumped=dumped)
            encoded = _encode(body)
            await self._publisher.publish(
                topics.alerts(self._prefix, alert.ward, alert.bed), encoded, qos=self._qos, retain=False
            )
            await self._publish_state(alert, encoded)
            if alert.phase is Phase.OVERDUE:
                notice = _overdue_notice(alert, self.book.escalate_after_s).get(self._language)
                await self._publisher.publish(
                    topics.escalations(self._prefix, alert.ward),
                    _encode({**body, "notice": notice}),
                    qos=self._qos,
                    retain=False,
                )
            self._sink.put(alert_point(alert, now, self._language))
            for listener in self.listeners:
                listener(transition)

    async def _publish_state(self, alert: Alert, encoded: bytes | None = None) -> None:
        """Publish ``alert``'s retained state; ``encoded``: its payload, when the caller has it."""
        topic = topics.alert_state(self._prefix, alert.ward, alert.bed, alert.id)
        # An empty retained message removes the retained state: a closed alert is not shown.
        if alert.closed:
            payload = b""
        else:
            payload = encoded if encoded is not None else _encode(alert.to_payload(self._language))
        await self._publisher.publish(topic, payload, qos=self._qos, retain=True)

    def _journal_entry(
        self, transition: Transition, now: datetime, via: AckVia | None, dumped: Mapping[str, Any]
    ) -> dict[str, Any]:
        alert = transition.alert
        by_person = alert.phase is Phase.ACK and alert.acked_by
        who = alert.acked_by if by_person else SYSTEM_ACTOR
        entry = {
            "at": iso(now),
            "who": who,
            "name": alert.acked_name if by_person else None,
            "what": str(alert.phase),
            "id": alert.id,
            "from": None if transition.previous is None else str(transition.previous),
            "to": str(alert.state),
            "alert": dumped,
        }
        if by_person and via is not None:
            # A person's acknowledgement says where it came from: MQTT or the ward page.
            entry["via"] = str(via)
        return entry

    def _journal(self, entries: list[dict[str, Any]]) -> None:
        staged = self._writer.stage().journal
        for entry in entries:
            alert = entry.get("alert") or {}
            staged.append(
                (
                    entry["at"],
                    entry["who"],
                    entry["what"],
                    entry.get("id"),
                    alert.get("bed"),
                    json_text(entry),
                )
            )

    def _save(self, transitions: list[Transition], dumps: list[dict[str, Any]]) -> None:
        changes = self._writer.stage()
        for transition, dumped in zip(transitions, dumps, strict=True):
            alert = transition.alert
            changes.alerts[alert.id] = (
                alert.ward,
                alert.bed,
                not alert.closed,
                iso(alert.updated),
                json_text(dumped),
            )
        changes.meta[NEXT_SEQ_KEY] = self.book.next_seq


def is_ack_topic(topic: str) -> bool:
    """Whether an inbound topic is an acknowledgement command (either form)."""
    return topic.endswith("/ack") or "/ack/by/" in topic


def _parse_ack(payload: bytes) -> str | None:
    """The display name in an acknowledgement command, if any; or an ``InputError``.

    An empty payload or ``{}`` gives none. Reasons: those of ``load_json_object``
    (``too_large`` beyond ``MAX_ACK_PAYLOAD_BYTES``, ``invalid_json``, ``too_deep``,
    ``huge_number``, ``not_object``), ``bad_by`` (not a name by ``daemon.ids``' rules).
    """
    if not payload:
        return None
    data = load_json_object(payload, max_bytes=MAX_ACK_PAYLOAD_BYTES)
    by = data.get("by")
    if by is None:
        return None
    # The name goes into the audit journal, the alert state and an InfluxDB field.
    return ids.person_name(by, "by", "", reason="bad_by")


def _overdue_notice(alert: Alert, escalate_after_s: float) -> Text:
    waited_min = round(alert.escalation_level * escalate_after_s / 60)
    return Text(
        en=f"Not acknowledged for {waited_min} min (escalation level {alert.escalation_level}): "
        f"{alert.message.en}",
        fr=f"Non acquittée depuis {waited_min} min (niveau d'escalade {alert.escalation_level}) : "
        f"{alert.message.fr}",
    )


def alert_point(alert: Alert, now: datetime, language: str) -> Point:
    """An alert transition as an ``alerts`` point (README, "Storage")."""
    fields: dict[str, FieldValue] = {
        "id": alert.id,
        "escalation_level": alert.escalation_level,
        "message": alert.message.get(language),
    }
    if alert.value is not None:
        fields["value"] = float(alert.value)
    if alert.acked_by is not None:
        fields["acked_by"] = alert.acked_by
    if alert.acked_name is not None:
        fields["acked_name"] = alert.acked_name
    tags = {
        "ward": alert.ward,
        "bed": alert.bed,
        "condition": alert.condition,
        "kind": str(alert.kind),
        "priority": str(alert.priority),
        "state": str(alert.state),
        "phase": str(alert.phase),
    }
    return Point("alerts", tags, fields, now)


# ``json.dumps`` with options builds a new encoder at every call.
_PAYLOAD_JSON = json.JSONEncoder(ensure_ascii=False, default=str)


def _encode(body: Mapping[str, Any]) -> bytes:
    return _PAYLOAD_JSON.encode(body).encode("utf-8")


# --- the client side of acknowledgement (``wardd ack``) ------------------------------------------


@dataclass(frozen=True, slots=True)
class AckReply:
    """The outcome of ``send_ack``: the daemon's answer, or why there was none."""

    ok: bool
    alert_id: str
    error: str = ""
    reason: str = ""
    state: str | None = None
    ward: str | None = None
    bed: str | None = None


async def send_ack(
    client: aiomqtt.Client,
    *,
    prefix: str,
    alert_id: str,
    user: str,
    name: str | None = None,
    timeout_s: float = 5.0,
) -> AckReply:
    """Acknowledge ``alert_id`` as the broker's user ``user``, as a nursing station would.

    ``client`` is connected as ``user`` and used for nothing else meanwhile; ``name``
    is the display name sent along. Ids do not encode the ward or bed, so the alert is
    first found by its retained state under ``<prefix>/+/bed/+/alerts/<id>`` (present
    exactly while the alert is open). A message sent to ourselves (on the user's own
    ``cli_scratch`` topics) after subscribing marks the end of the retained messages,
    so a missing alert is reported at once, not after a timeout.

    Only the MQTT exchange is here; what is checked, sent and understood is in the pure
    functions it calls (``ack_refusal``, ``ack_lookup_topics``, ``alert_place``,
    ``ack_command``, ``read_ack_reply``), which the unit tests cover.
    """
    if (refusal := ack_refusal(alert_id, user, name)) is not None:
        return refusal
    reply_filter, state_filter, barrier = ack_lookup_topics(prefix, alert_id, user, uuid.uuid4().hex)
    try:
        async with asyncio.timeout(timeout_s):
            # The reply filter first: no reply can arrive before its subscription.
            for topic in (reply_filter, state_filter, barrier):
                await client.subscribe(topic, qos=1)
            await client.publish(barrier, b"1", qos=1)
            place: tuple[str, str] | None = None
            messages = aiter(client.messages)
            while (message := await anext(messages)).topic.value != barrier:
                place = alert_place(message.topic.value, message.payload, alert_id) or place
            if place is None:
                return unknown_alert_reply(alert_id)
            ward, bed = place
            command_topic, body = ack_command(prefix, ward, bed, alert_id, user, name=name)
            await client.publish(command_topic, body, qos=1)
            reply_topic = topics.alert_ack_by_reply(prefix, ward, bed, alert_id, user)
            while (message := await anext(messages)).topic.value != reply_topic:
                pass
            return read_ack_reply(alert_id, ward, bed, message.payload)
    except TimeoutError:
        return ack_timeout_reply(alert_id, user, timeout_s)


def ack_refusal(alert_id: str, user: str, name: str | None) -> AckReply | None:
    """Why ``wardd ack`` must not send this acknowledgement at all, or ``None``.

    The daemon would refuse each of these too; saying so here needs no broker.
    """
    if not ids.is_user_id(user):
        return AckReply(
            False, alert_id, f"user {ids.shown(user)}: a user name is {ids.USER_ID_RULE}", "bad_user"
        )
    if name is not None and (problem := ids.name_problem(name)) is not None:
        return AckReply(False, alert_id, f"the name {problem}", "bad_by")
    if not is_alert_id(alert_id):
        return AckReply(False, alert_id, f"{alert_id!r} is not an alert id", "bad_id")
    return None


def ack_lookup_topics(prefix: str, alert_id: str, user: str, token: str) -> tuple[str, str, str]:
    """The three subscriptions of ``send_ack``, in order: the daemon's reply to ``user``
    about ``alert_id`` at any bed, the alert's retained state at any bed, and the barrier,
    a topic of ``user``'s own (``cli_scratch``) made unique by ``token``."""
    return (
        topics.alert_ack_by_reply(prefix, "+", "+", alert_id, user),
        topics.alert_state(prefix, "+", "+", alert_id),
        f"{topics.cli_scratch(prefix, user)}/{token}",
    )


def alert_place(topic: str, payload: object, alert_id: str) -> tuple[str, str] | None:
    """The ward and bed of open alert ``alert_id`` if ``topic`` and ``payload`` are its
    retained state (``<prefix>/<ward>/bed/<bed>/alerts/<id>``, not empty: an empty one
    is a closed alert's cleared state); ``None`` for any other message."""
    parts = topic.split("/")
    if len(parts) == 6 and parts[2] == "bed" and parts[4] == "alerts" and parts[5] == alert_id and payload:
        return parts[1], parts[3]
    return None


def ack_command(
    prefix: str, ward: str, bed: str, alert_id: str, user: str, *, name: str | None
) -> tuple[str, bytes]:
    """The acknowledgement to publish: ``user``'s own topic of the alert, and its body
    (``{"by": name}`` without surrounding spaces, or ``{}`` without a name)."""
    body = {} if name is None else {"by": name.strip()}
    return topics.alert_ack_by(prefix, ward, bed, alert_id, user), _encode(body)


def read_ack_reply(alert_id: str, ward: str, bed: str, payload: object) -> AckReply:
    """The daemon's reply (``{"ok": ..., "state": ...}`` or ``{"ok": false, "reason": ...,
    "error": ...}``) as an ``AckReply``; one that is not a JSON object is ``bad_reply``.

    Only ``true`` is a success: a reply that says anything else did not acknowledge.
    """
    raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8 (a ValueError too), or too deep
        body = None
    if not isinstance(body, dict):
        return AckReply(False, alert_id, "unreadable reply from the daemon", "bad_reply", ward=ward, bed=bed)
    return AckReply(
        ok=body.get("ok") is True,
        alert_id=alert_id,
        error=str(body.get("error", "")),
        reason=str(body.get("reason", "")),
        state=None if body.get("state") is None else str(body["state"]),
        ward=ward,
        bed=bed,
    )


def unknown_alert_reply(alert_id: str) -> AckReply:
    """No retained state of ``alert_id`` at any bed: no such alert is open."""
    return AckReply(False, alert_id, f"no open alert with id {alert_id!r}", "unknown_id")


def ack_timeout_reply(alert_id: str, user: str, timeout_s: float) -> AckReply:
    """Nothing came back within ``timeout_s``."""
    # On a locked-down broker a user who may not acknowledge sees no error, only
    # silence: the broker drops a publish its ACL forbids.
    return AckReply(
        False,
        alert_id,
        f"no answer from the daemon within {timeout_s:g} s (is the daemon running, and may "
        f"user {user!r} publish acknowledgements on this broker?)",
        "timeout",
    )
