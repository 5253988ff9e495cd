"""Routing: which person is told of an alert, and when. Pure: time is passed in, nothing
is written; ``Router`` holds what it has told whom, as ``AlertBook`` holds the alerts.

Inputs are the alert engine's transitions, the daemon's clock (``tick``) and the
delivery queue's reports of failed deliveries (``failed``); the output is ``Notice``
values, each for one or more receivers::

    transition / tick / failure            notice         to
    start (after the grouping window)      alert          the route's level 0
    escalate (priority or grade up),       worse          the alert's current level
      reactivate (latched, back again)
    overdue (escalation level raised)      escalation     the new level
    a delivery failed past its retries     escalation     the next level, at once
    still unacknowledged after             repeat         the current level
      repeat_after_s
    ack, or end (resolved)                 closing        everyone told of the alert
    a quiet period ends                    digest         level 0, the alerts it held

- Routes: the first ``[[routes]]`` entry whose lists all match the alert (ward, bed,
  condition, kind, priority; an empty list matches anything) takes it. An alert no
  route takes is told to nobody (counted ``routing.unrouted``); it stays on the station
  and the page as every alert does.
- Grouping: the alerts of one bed and route that start within ``group_window_s`` of
  the first go out as one ``alert`` notice when the window ends. One that is
  acknowledged or resolved before then is left out (nobody needs to hear of it).
- Inhibition: while an alert of an inhibition's ``source`` is open at a bed, the
  ``targets`` of that bed send no notice of their own, unless the target's priority is
  above the source's (a high alert is never silenced by a medium one). When the source
  closes, a target still active and never told goes out then.
- Quiet periods: an alert of a quiet priority (low, optionally medium; never high) that
  starts in one is held; when the period ends, its alerts go out as one ``digest`` per
  route, those closed meanwhile included with their last state. No repeat is sent for a
  quiet priority during a quiet period.
- Medium alerts: a route's ``escalate_medium_after_s`` (0, the default: never) raises
  the level of an unacknowledged medium alert after that long, then after twice that,
  and so on (the alert engine escalates high alerts only), not during a quiet period
  for medium nor while inhibited.
- Levels: the level of an alert is the highest of the alert engine's escalation level,
  the medium escalation's and the level that failed deliveries moved it to; a level beyond the route's last
  names the last level's receivers (they are told again).
"""

from __future__ import annotations

import itertools
import json
import math
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence, ValuesView
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Any

from daemon.alerts import Alert, AlertState, Phase, Transition
from daemon.config import QuietConfig, RouteConfig, RoutingConfig
from daemon.errors import InputError
from daemon.events import AlertCandidate, Priority, Text, place
from daemon.frozen import replace
from daemon.ids import is_ward_subject
from daemon.links.store import json_text
from daemon.schedule import Schedule, floor_us
from daemon.timefmt import iso, parse_iso, parse_iso_or_none


class NoticeKind(StrEnum):
    """Why a notice goes out."""

    ALERT = "alert"  # the first notice of one alert, or of a group of one bed's alerts
    WORSE = "worse"  # priority or grade rose, or a latched alert's condition came back
    ESCALATION = "escalation"  # nobody acknowledged it, or a delivery failed: the next level
    REPEAT = "repeat"  # still not acknowledged
    CLOSING = "closing"  # acknowledged or resolved: to everyone who was told
    DIGEST = "digest"  # the alerts a quiet period held


class Held(StrEnum):
    """Why an alert's first notice has not gone out (yet)."""

    GROUP = "group"  # waiting for the end of its bed's grouping window
    QUIET = "quiet"  # started in a quiet period: goes out in the digest at its end
    INHIBITED = "inhibited"  # an open alert of an inhibition's source covers it


def _where(ward: str, bed: str) -> Text:
    """Where in words, for a title: a bed and its ward, or the ward itself for a digest of
    several beds ("") or a ward's own alert (``daemon.ids.ward_subject``)."""
    words = place(ward, bed)
    if bed and not is_ward_subject(bed):
        return Text(f"{words.en} ({ward})", f"{words.fr} ({ward})")
    return words


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification to send: the same message to each of ``receivers``."""

    kind: NoticeKind
    route: str
    level: int
    receivers: tuple[str, ...]
    ward: str
    bed: str  # "" for a digest of several beds
    alerts: tuple[Alert, ...]
    at: datetime
    reason: Text | None = None  # what the receiver should know beyond the alerts (escalation)
    first_for: tuple[str, ...] = ()  # the receivers told of these alerts for the first time

    def title(self) -> Text:
        """One line: what happened, where."""
        first = self.alerts[0]
        where = _where(self.ward, self.bed)
        what = (
            Text(f"{first.priority.upper()} {first.condition}", f"{first.priority.upper()} {first.condition}")
            if len(self.alerts) == 1
            else Text(f"{len(self.alerts)} alerts", f"{len(self.alerts)} alertes")
        )
        lead = _LEADS[self.kind]
        return Text(f"{lead.en}{what.en}, {where.en}", f"{lead.fr}{what.fr}, {where.fr}")

    def text(self) -> Text:
        """The body: the reason, then one line per alert with its message and state."""
        lines_en = [] if self.reason is None else [self.reason.en]
        lines_fr = [] if self.reason is None else [self.reason.fr]
        for alert in self.alerts:
            state_en, state_fr = _STATES[alert.state]
            who = alert.acked_name or alert.acked_by
            by_en = f" by {who}" if who and alert.acked_by else ""
            by_fr = f" par {who}" if who and alert.acked_by else ""
            where = place(alert.ward, alert.bed)
            lines_en.append(
                f"[{alert.priority}] {alert.condition} {where.en}: {alert.message.en} ({state_en}{by_en}; id {alert.id})"
            )
            lines_fr.append(
                f"[{alert.priority}] {alert.condition} {where.fr} : {alert.message.fr} ({state_fr}{by_fr} ; id {alert.id})"
            )
        return Text("\n".join(lines_en), "\n".join(lines_fr))

    def body(self, language: str) -> dict[str, Any]:
        """The notice as JSON-compatible data in ``language``: the webhook's body."""
        return {
            "notice": str(self.kind),
            "route": self.route,
            "level": self.level,
            "ward": self.ward,
            "bed": self.bed,
            "at": iso(self.at),
            "title": self.title().get(language),
            "text": self.text().get(language),
            "alerts": [alert.to_payload(language) for alert in self.alerts],
        }


_LEADS = {
    NoticeKind.ALERT: Text("", ""),
    NoticeKind.WORSE: Text("Worse: ", "Aggravation : "),
    NoticeKind.ESCALATION: Text("Escalated: ", "Escalade : "),
    NoticeKind.REPEAT: Text("Reminder: ", "Rappel : "),
    NoticeKind.CLOSING: Text("Closed: ", "Close : "),
    NoticeKind.DIGEST: Text("Quiet-period digest: ", "Résumé de la période calme : "),
}
_STATES = {
    AlertState.ACTIVE: ("active, not acknowledged", "active, non acquittée"),
    AlertState.ACKNOWLEDGED: ("acknowledged", "acquittée"),
    AlertState.LATCHED: ("condition ended, not acknowledged", "condition terminée, non acquittée"),
    AlertState.RESOLVED: ("resolved", "terminée"),
}


@dataclass(frozen=True, slots=True)
class Track:
    """What the router knows of one alert: its latest form and whom it has told."""

    alert: Alert
    route: str | None  # the route that takes it; None: no route does
    level: int = 0  # the highest level told (or to tell, while held)
    told: tuple[str, ...] = ()  # every receiver told of it, for the closing notice
    last_at: datetime | None = None  # the last notice about it, for repeats
    held: Held | None = None
    closing_sent: bool = False

    def dump(self) -> dict[str, Any]:
        """JSON-compatible data."""
        return {
            "alert": self.alert.dump(),
            "route": self.route,
            "level": self.level,
            "told": list(self.told),
            "last_at": None if self.last_at is None else iso(self.last_at),
            "held": None if self.held is None else str(self.held),
            "closing_sent": self.closing_sent,
        }

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> Track:
        """From ``dump``; ``InputError`` (from ``Alert.load``), ``KeyError`` or ``ValueError`` if malformed."""
        held = data.get("held")
        return cls(
            alert=Alert.load(data["alert"]),
            route=data.get("route"),
            level=int(data.get("level", 0)),
            told=tuple(str(r) for r in data.get("told", ())),
            last_at=parse_iso_or_none(data.get("last_at")),
            held=None if held is None else Held(held),
            closing_sent=bool(data.get("closing_sent", False)),
        )


@dataclass(frozen=True, slots=True)
class Group:
    """Alerts of one bed and route waiting for the end of the grouping window."""

    ward: str
    bed: str
    route: str
    opened: datetime
    ids: tuple[str, ...]


GROUPS_KEY = "groups"
ALERT_KEY_PREFIX = "alert:"


@dataclass
class Decision:
    """Something the router did besides sending: held, released, unrouted (for counters and logs)."""

    what: str  # "unrouted", "inhibited", "quiet", "grouped", "dropped"
    alert_id: str
    detail: str = ""


class Tracks(MutableMapping[str, Track]):
    """``Router.tracks``: the tracks by alert id, in the order they came, that also knows
    each bed's (``of_bed``) and, once given ``watch``, when each may next have something
    due (``due``). So what concerns one bed, or one moment, is found without walking
    every open alert: each alert sought its inhibitor among every track, at each check,
    which grew with the square of the open alerts (46 ms at 1,000), and each check asked
    every track whether a repeat or an escalation was due."""

    def __init__(self, tracks: Mapping[str, Track] | None = None) -> None:
        self._tracks: dict[str, Track] = {}
        self._place: dict[str, int] = {}  # each track's place in the order
        self._by_bed: dict[tuple[str, str], set[str]] = {}
        # The tracks a quiet period holds, by priority: a check asks once per priority
        # whether its period has ended, not once per held alert (a night's worth of them).
        self._quiet_held: dict[Priority, set[str]] = {}
        self._places = itertools.count()
        self._due_of: Callable[[Track], datetime | None] | None = None
        self._schedule: Schedule[str] = Schedule()  # by alert id
        for alert_id, track in (tracks or {}).items():
            self[alert_id] = track

    def __getitem__(self, alert_id: str) -> Track:
        return self._tracks[alert_id]

    def __setitem__(self, alert_id: str, track: Track) -> None:
        before = self._tracks.get(alert_id)
        if before is None:
            self._place[alert_id] = next(self._places)
        else:
            self._unindex(alert_id, before)  # it keeps its place, as a dict's key does
        self._tracks[alert_id] = track
        self._by_bed.setdefault((track.alert.ward, track.alert.bed), set()).add(alert_id)
        if track.held is Held.QUIET:
            self._quiet_held.setdefault(track.alert.priority, set()).add(alert_id)
        self._push(alert_id, track)

    def __delitem__(self, alert_id: str) -> None:
        self._unindex(alert_id, self._tracks.pop(alert_id))
        del self._place[alert_id]
        self._schedule.discard(alert_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tracks)

    def __len__(self) -> int:
        return len(self._tracks)

    def values(self) -> ValuesView[Track]:
        """The tracks, in order (the dict's own view)."""
        return self._tracks.values()

    def of_bed(self, ward: str, bed: str) -> list[Track]:
        """The tracks of one bed, in order."""
        ids = sorted(self._by_bed.get((ward, bed), ()), key=self._place.__getitem__)
        return [self._tracks[alert_id] for alert_id in ids]

    def quiet_priorities(self) -> list[Priority]:
        """The priorities of which a quiet period holds some track."""
        return list(self._quiet_held)

    def quiet_held(self, priority: Priority) -> list[Track]:
        """The tracks of ``priority`` a quiet period holds, in order."""
        ids = sorted(self._quiet_held.get(priority, ()), key=self._place.__getitem__)
        return [self._tracks[alert_id] for alert_id in ids]

    def watch(self, due_of: Callable[[Track], datetime | None]) -> None:
        """Keep a schedule of when each track may next have something due: ``due_of``
        says it of a track (never later than the time it is due; ``None``: nothing can
        come due without the track changing)."""
        self._due_of = due_of
        for alert_id, track in self._tracks.items():
            self._push(alert_id, track)

    def due(self, now: datetime) -> list[Track]:
        """The tracks that may have something due by ``now``, in order, taken off the
        schedule: each must be put again or handed to ``schedule``."""
        ids = sorted(self._schedule.pop_due(now), key=self._place.__getitem__)
        return [self._tracks[alert_id] for alert_id in ids]

    def schedule(self, alert_id: str) -> None:
        """Put a track taken by ``due`` back on the schedule at its next time."""
        track = self._tracks.get(alert_id)
        if track is not None:
            self._push(alert_id, track)

    def _push(self, alert_id: str, track: Track) -> None:
        at = None if self._due_of is None else self._due_of(track)
        if at is None:
            self._schedule.discard(alert_id)
        else:
            self._schedule.put(alert_id, at)

    def _unindex(self, alert_id: str, track: Track) -> None:
        bed = (track.alert.ward, track.alert.bed)
        ids = self._by_bed[bed]
        ids.discard(alert_id)
        if not ids:
            del self._by_bed[bed]
        if track.held is Held.QUIET:
            held = self._quiet_held[track.alert.priority]
            held.discard(alert_id)
            if not held:
                del self._quiet_held[track.alert.priority]


_TOLD_AGAIN = (AlertState.ACTIVE, AlertState.LATCHED)  # the states a repeat is told in


@dataclass
class Router:
    """The routing state and its transitions; pure (no I/O, no clock reads).

    Guarantees: a notice names at least one receiver and one alert; an alert's closing
    notice goes to every receiver told of it, once per episode of activity; nothing is
    told of an alert that was acknowledged or resolved before its first notice went out
    (except in a digest, which reports it with its state); ``changed`` names every
    persisted row that changed since the last ``take_changed``.
    """

    settings: RoutingConfig
    routes: Sequence[RouteConfig]
    tracks: Tracks = field(default_factory=Tracks)
    groups: dict[tuple[str, str, str], Group] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not isinstance(self.tracks, Tracks):
            self.tracks = Tracks(self.tracks)
        self._zone = zoneinfo.ZoneInfo(self.settings.timezone)
        self._routes = {route.name: route for route in self.routes}
        self._window = timedelta(seconds=self.settings.group_window_s)
        self.tracks.watch(self._next_due)

    # --- inputs ------------------------------------------------------------------------

    def transition(self, transition: Transition, now: datetime) -> list[Notice]:
        """One transition of the alert engine, at daemon time ``now``."""
        out = self._flush_groups(now)
        alert = transition.alert
        track = self.tracks.get(alert.id)
        if track is None or alert.phase is Phase.START:
            track = Track(alert, self.match_route(alert))
            if track.route is None:
                self.decisions.append(Decision("unrouted", alert.id, alert.condition))
            self._put(track)
            out += self._first(track, now)
        else:
            out += self._follow(replace(track, alert=alert), now)
        if alert.closed or alert.phase in (Phase.DEESCALATE, Phase.ACK):
            # This alert may have been the source of an inhibition: its targets may be free.
            out += self._release_inhibited(alert.ward, alert.bed, now)
        return out

    def tick(self, now: datetime) -> list[Notice]:
        """Time passing: grouping windows that end, quiet periods that end, repeats due."""
        out = self._flush_groups(now)
        out += self._digests(now)
        for track in self.tracks.due(now):
            # An escalation is told at the new level: no repeat at the old one as well.
            out += self._escalate_medium(track, now) or self._repeat(track, now)
            # Its next time (the same one while a quiet period or an inhibitor holds it back).
            self.tracks.schedule(track.alert.id)
        return out

    def _next_due(self, track: Track) -> datetime | None:
        """The earliest time ``_repeat`` or ``_escalate_medium`` may tell ``track`` again
        (rounded down to the microsecond: never after it); ``None`` while neither can."""
        route = self._routes.get(track.route or "")
        alert = track.alert
        if route is None or track.held is not None or not track.told:
            return None
        times = []
        if route.repeat_after_s > 0 and track.last_at is not None and alert.state in _TOLD_AGAIN:
            times.append(track.last_at + floor_us(route.repeat_after_s))
        medium = alert.priority is Priority.MEDIUM and alert.state is AlertState.ACTIVE
        if route.escalate_medium_after_s > 0 and medium:
            next_level_s = (track.level + 1) * route.escalate_medium_after_s
            times.append(alert.active_since + floor_us(next_level_s))
        return min(times, default=None)

    def failed(self, alert_ids: Iterable[str], level: int, receiver: str, now: datetime) -> list[Notice]:
        """A notice about ``alert_ids`` sent at ``level`` could not be delivered to
        ``receiver``: tell the next level of each alert still open, at once."""
        out: list[Notice] = []
        reason = Text(
            f"Delivery to {receiver} failed; told to the next level.",
            f"Échec de l'envoi à {receiver} ; transmis au niveau suivant.",
        )
        for alert_id in alert_ids:
            track = self.tracks.get(alert_id)
            if track is None or track.alert.closed or track.route is None or track.level != level:
                continue  # closed, or already moved on past that level
            route = self._routes.get(track.route)
            if route is None or level + 1 >= len(route.levels):
                continue  # the last level failed: DELIVERY_FAILED on the station is what is left
            out += self._send(replace(track, level=level + 1), NoticeKind.ESCALATION, now, reason=reason)
        return out

    # --- persistence --------------------------------------------------------------------

    def take_changed(self) -> dict[str, str | None]:
        """The rows to write since the last call: JSON text, or ``None`` to delete."""
        out: dict[str, str | None] = {}
        for key in self.changed:
            if key == GROUPS_KEY:
                out[key] = json_text([_dump_group(g) for g in self.groups.values()])
            else:
                track = self.tracks.get(key.removeprefix(ALERT_KEY_PREFIX))
                out[key] = None if track is None else json_text(track.dump())
        self.changed.clear()
        return out

    def restore(self, rows: Mapping[str, str]) -> list[str]:
        """Put back the rows of an earlier run; the keys of unreadable ones are returned."""
        bad: list[str] = []
        for key, text in rows.items():
            try:
                data = json.loads(text)
                if key == GROUPS_KEY:
                    for group in (_load_group(item) for item in data):
                        self.groups[(group.ward, group.bed, group.route)] = group
                else:
                    track = _load_track(data)
                    if track.route is not None and track.route not in self._routes:
                        # The route was removed from the config: the alert goes where it now would.
                        track = replace(track, route=self.match_route(track.alert))
                    self.tracks[track.alert.id] = track
            except (ValueError, KeyError, TypeError, InputError) as exc:
                bad.append(f"{key}: {exc}")
        return bad

    # --- what happens ---------------------------------------------------------------------

    def _first(self, track: Track, now: datetime) -> list[Notice]:
        """An alert not told yet, active now: hold it, or tell level 0."""
        alert = track.alert
        if track.route is None or alert.state not in (AlertState.ACTIVE, AlertState.LATCHED):
            return []
        source = self._inhibitor(alert)
        if source is not None:
            self.decisions.append(Decision("inhibited", alert.id, source.id))
            self._put(replace(track, held=Held.INHIBITED))
            return []
        if self._quiet(alert.priority, now):
            self.decisions.append(Decision("quiet", alert.id, alert.condition))
            self._put(replace(track, held=Held.QUIET))
            return []
        if self._window > timedelta(0):
            key = (alert.ward, alert.bed, track.route)
            group = self.groups.get(key)
            self.groups[key] = (
                Group(alert.ward, alert.bed, track.route, now, (alert.id,))
                if group is None
                else replace(group, ids=(*group.ids, alert.id))
            )
            self.changed.add(GROUPS_KEY)
            self._put(replace(track, held=Held.GROUP))
            self.decisions.append(Decision("grouped", alert.id, track.route))
            return []
        return self._send(track, NoticeKind.ALERT, now)

    def _follow(self, track: Track, now: datetime) -> list[Notice]:
        """A later transition of an alert the router knows."""
        alert = track.alert
        phase = alert.phase
        if alert.closed or phase is Phase.ACK:
            return self._close(track, now)
        if track.route is None:
            track = replace(track, route=self.match_route(alert))
            if track.route is None:
                # No route takes it (or no longer: its route was removed at a restart).
                self._put(track)
                return []
        if track.held is Held.GROUP:
            self._put(track)  # goes out with its group, in its latest form
            return []
        if phase in (Phase.ESCALATE, Phase.REACTIVATE):
            if track.held is not None or not track.told:
                # Never told: decide again with what it is now (a priority that rose may
                # no longer be quiet or inhibited).
                self._unhold(track)
                return self._first(replace(track, held=None, closing_sent=False), now)
            return self._send(replace(track, closing_sent=False), NoticeKind.WORSE, now)
        if phase is Phase.OVERDUE:
            level = max(track.level, alert.escalation_level)
            if level > track.level and track.told and track.held is None:
                return self._send(replace(track, level=level), NoticeKind.ESCALATION, now)
            self._put(replace(track, level=level))
            return []
        self._put(track)  # update, deescalate, latch: the station shows it; nobody is paged
        return []

    def _close(self, track: Track, now: datetime) -> list[Notice]:
        """Acknowledged or resolved: the closing notice to everyone told, once."""
        alert = track.alert
        if track.held is Held.QUIET:
            self._put(track)  # the digest reports it with its state
            return []
        if track.held is not None:
            self._unhold(track)
            self.decisions.append(Decision("dropped", alert.id, str(track.held)))
            track = replace(track, held=None)
        out: list[Notice] = []
        if track.told and not track.closing_sent and track.route is not None:
            out.append(self._notice(track, NoticeKind.CLOSING, track.told, now))
            track = replace(track, closing_sent=True, last_at=now)
        if alert.closed:
            self._drop(alert.id)
        else:
            self._put(track)
        return out

    def _send(
        self, track: Track, kind: NoticeKind, now: datetime, *, reason: Text | None = None
    ) -> list[Notice]:
        receivers = self._receivers(track)
        first = tuple(r for r in receivers if r not in track.told)
        told = tuple(dict.fromkeys((*track.told, *receivers)))
        track = replace(track, told=told, last_at=now, held=None)
        self._put(track)
        return [self._notice(track, kind, receivers, now, reason=reason, first_for=first)]

    def _notice(
        self,
        track: Track,
        kind: NoticeKind,
        receivers: Sequence[str],
        now: datetime,
        *,
        reason: Text | None = None,
        first_for: tuple[str, ...] = (),
    ) -> Notice:
        alert = track.alert
        if reason is None and kind is NoticeKind.ESCALATION:
            minutes = (now - alert.active_since).total_seconds() / 60
            reason = Text(
                f"Not acknowledged for {minutes:.0f} min: escalation level {track.level}.",
                f"Non acquittée depuis {minutes:.0f} min : niveau d'escalade {track.level}.",
            )
        if reason is None and kind is NoticeKind.CLOSING:
            who = alert.acked_name or alert.acked_by
            reason = (
                Text(f"Acknowledged by {who}.", f"Acquittée par {who}.")
                if alert.phase is Phase.ACK and who
                else Text("Resolved.", "Terminée.")
            )
        return Notice(
            kind,
            track.route or "",
            track.level,
            tuple(receivers),
            alert.ward,
            alert.bed,
            (alert,),
            now,
            reason,
            first_for,
        )

    def _repeat(self, track: Track, now: datetime) -> list[Notice]:
        route = None if track.route is None else self._routes.get(track.route)
        alert = track.alert
        if (
            route is None
            or route.repeat_after_s <= 0
            or track.held is not None
            or not track.told
            or track.last_at is None
            or alert.state not in _TOLD_AGAIN
            or (now - track.last_at).total_seconds() < route.repeat_after_s
            or self._quiet(alert.priority, now)
            or self._inhibitor(alert) is not None
        ):
            return []
        return self._send(track, NoticeKind.REPEAT, now)

    def _escalate_medium(self, track: Track, now: datetime) -> list[Notice]:
        """A medium alert unacknowledged for ``escalate_medium_after_s`` (times the level):
        the next level (the alert engine escalates only high alerts)."""
        route = self._routes.get(track.route or "")
        alert = track.alert
        if (
            route is None
            or route.escalate_medium_after_s <= 0
            or alert.priority is not Priority.MEDIUM
            or alert.state is not AlertState.ACTIVE
            or track.held is not None
            or not track.told
        ):
            return []
        waited_s = (now - alert.active_since).total_seconds()
        # A wait of 0 s or less (a clock set back) makes level 0 or less: nothing is due.
        level = math.floor(waited_s / route.escalate_medium_after_s)
        # Quiet periods and inhibitors last, only for what is due: each check asks this of
        # every open alert.
        if level <= track.level or self._quiet(alert.priority, now) or self._inhibitor(alert) is not None:
            return []
        return self._send(replace(track, level=level), NoticeKind.ESCALATION, now)

    def _flush_groups(self, now: datetime) -> list[Notice]:
        out: list[Notice] = []
        for key, group in sorted(self.groups.items(), key=lambda item: (item[1].opened, item[0])):
            if now - group.opened < self._window:
                continue
            del self.groups[key]
            self.changed.add(GROUPS_KEY)
            members: list[Track] = []
            for alert_id in group.ids:
                track = self.tracks.get(alert_id)
                if track is None or track.held is not Held.GROUP:
                    continue
                track = replace(track, held=None)
                source = self._inhibitor(track.alert)
                if source is not None:
                    # Its source opened during the window.
                    self.decisions.append(Decision("inhibited", alert_id, source.id))
                    self._put(replace(track, held=Held.INHIBITED))
                    continue
                members.append(track)
            if not members:
                continue
            route = self._routes.get(group.route)
            if route is None:
                # The group's route was removed at a restart (its alerts were given the
                # route that takes them now, if any): each is decided again.
                for track in members:
                    self._put(track)
                    out += self._first(track, now)
                continue
            receivers = tuple(route.levels[0])
            for track in members:
                told = tuple(dict.fromkeys((*track.told, *receivers)))
                self._put(replace(track, told=told, last_at=now))
            alerts = tuple(t.alert for t in members)
            out.append(
                Notice(
                    NoticeKind.ALERT,
                    group.route,
                    0,
                    receivers,
                    group.ward,
                    group.bed,
                    alerts,
                    now,
                    first_for=receivers,  # a group's alerts were never told
                )
            )
        return out

    def _quiet_ended(self, now: datetime) -> list[Track]:
        """The tracks held by a quiet period that has ended by ``now``."""
        return [
            track
            for priority in self.tracks.quiet_priorities()
            if not self._quiet(priority, now)
            for track in self.tracks.quiet_held(priority)
        ]

    def _digests(self, now: datetime) -> list[Notice]:
        due: dict[tuple[str | None, str], list[Track]] = {}
        for track in self._quiet_ended(now):
            due.setdefault((track.route, track.alert.ward), []).append(track)
        out: list[Notice] = []
        # Held alerts without a route (theirs was removed at a restart and none takes them
        # now) are let go with nobody told; where they come in the order changes nothing.
        for (route_name, ward), tracks in sorted(
            due.items(), key=lambda item: (item[0][0] or "", item[0][1])
        ):
            route = None if route_name is None else self._routes.get(route_name)
            receivers = tuple(route.levels[0]) if route is not None else ()
            tracks.sort(key=lambda t: (t.alert.since, t.alert.id))
            for track in tracks:
                if track.alert.closed:
                    self._drop(track.alert.id)
                else:
                    told = tuple(dict.fromkeys((*track.told, *receivers)))
                    # Acknowledged meanwhile: told, and nothing more to close.
                    closing = track.alert.state is AlertState.ACKNOWLEDGED
                    self._put(replace(track, held=None, told=told, last_at=now, closing_sent=closing))
            if route is not None:
                beds = {t.alert.bed for t in tracks}
                bed = beds.pop() if len(beds) == 1 else ""
                alerts = tuple(t.alert for t in tracks)
                out.append(
                    # A quiet period's alerts were never told.
                    Notice(
                        NoticeKind.DIGEST,
                        route.name,
                        0,
                        receivers,
                        ward,
                        bed,
                        alerts,
                        now,
                        first_for=receivers,
                    )
                )
        return out

    def _release_inhibited(self, ward: str, bed: str, now: datetime) -> list[Notice]:
        out: list[Notice] = []
        for track in self.tracks.of_bed(ward, bed):
            alert = track.alert
            if track.held is not Held.INHIBITED or (alert.ward, alert.bed) != (ward, bed):
                continue
            if self._inhibitor(alert) is not None:
                continue
            free = replace(track, held=None)
            self._put(free)
            if alert.state in (AlertState.ACTIVE, AlertState.LATCHED):
                out += self._first(free, now)
        return out

    # --- helpers ------------------------------------------------------------------------

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The zone of the quiet periods' local times."""
        return self._zone

    def match_route(self, alert: Alert | AlertCandidate) -> str | None:
        """The name of the first route that takes ``alert``; ``None`` if none does."""
        for route in self.routes:
            if (
                (not route.wards or alert.ward in route.wards)
                and (not route.beds or alert.bed in route.beds)
                and (not route.conditions or alert.condition in route.conditions)
                and (not route.kinds or str(alert.kind) in route.kinds)
                and (not route.priorities or str(alert.priority) in route.priorities)
            ):
                return route.name
        return None

    def _receivers(self, track: Track) -> tuple[str, ...]:
        route = self._routes[track.route or ""]
        return tuple(route.levels[min(track.level, len(route.levels) - 1)])

    def _inhibitor(self, alert: Alert) -> Alert | None:
        """The open alert that inhibits ``alert``'s notices, if any."""
        for rule in self.settings.inhibit:
            if alert.condition not in rule.targets:
                continue
            for other in self.tracks.of_bed(alert.ward, alert.bed):
                source = other.alert
                if (
                    source.condition == rule.source
                    and (source.ward, source.bed) == (alert.ward, alert.bed)
                    and not source.closed
                    and source.id != alert.id
                    and source.priority.rank >= alert.priority.rank
                ):
                    return source
        return None

    def _quiet(self, priority: Priority, now: datetime) -> bool:
        if priority is Priority.HIGH or not self.settings.quiet:
            return False
        local = now.astimezone(self._zone).time()
        return any(str(priority) in q.priorities and in_period(q, local) for q in self.settings.quiet)

    def _unhold(self, track: Track) -> None:
        if track.held is Held.GROUP and track.route is not None:
            key = (track.alert.ward, track.alert.bed, track.route)
            group = self.groups.get(key)
            if group is not None:
                ids = tuple(i for i in group.ids if i != track.alert.id)
                if ids:
                    self.groups[key] = replace(group, ids=ids)
                else:
                    del self.groups[key]
                self.changed.add(GROUPS_KEY)

    def _put(self, track: Track) -> None:
        self.tracks[track.alert.id] = track
        self.changed.add(ALERT_KEY_PREFIX + track.alert.id)

    def _drop(self, alert_id: str) -> None:
        self.tracks.pop(alert_id, None)
        self.changed.add(ALERT_KEY_PREFIX + alert_id)


def in_period(quiet: QuietConfig, local: time) -> bool:
    """Whether local time ``local`` is in the quiet period (start included, end excluded)."""
    start = time.fromisoformat(quiet.start)
    end = time.fromisoformat(quiet.end)
    if start < end:
        return start <= local < end
    return local >= start or local < end  # over midnight


def _load_track(data: object) -> Track:
    if not isinstance(data, dict):
        raise TypeError(f"a track is a JSON object, not {type(data).__name__}")
    return Track.load(data)


def _dump_group(group: Group) -> dict[str, Any]:
    return {
        "ward": group.ward,
        "bed": group.bed,
        "route": group.route,
        "opened": iso(group.opened),
        "ids": list(group.ids),
    }


def _load_group(data: Mapping[str, Any]) -> Group:
    return Group(
        str(data["ward"]),
        str(data["bed"]),
        str(data["route"]),
        parse_iso(data["opened"]),
        tuple(str(i) for i in data["ids"]),
    )
