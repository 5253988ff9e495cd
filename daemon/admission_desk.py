"""The admission desk: carries out admission changes in a running daemon (README, "Admissions").

A change (``daemon.admissions.Change``) comes from an HL7 ADT message over the MLLP
listener (``daemon.hl7.adt``) or from an admin command over MQTT, published by the broker's
authenticated user on ``<prefix>/_admin/admissions/by/<user>`` (``wardd admit``,
``transfer``, ``discharge``): the same proof of author as an acknowledgement, and the
same ACL pattern. Both arrive as logged inputs, in order with the data, so a change is
applied exactly where it fell among the readings and vitals.

Applying one: the ward's rows and a journal line are staged with a checkpoint of every
rule state (one transaction, ``Pipeline.checkpoint``), so that after a crash the stored
ward, the states and the log agree and the change is not replayed; the rules of the
beds it touches are set up, moved or dropped (``RuleEngine.set_bed``, ``move_bed``,
``drop_bed``), their topics routed, and their alerts moved (transfer) or closed with the
reason (discharge). Data for a bed with no patient on protocol is counted
(``admissions.unwatched_data``) and raises one ``UNWATCHED_BED_DATA`` notice per bed (low,
technical), which ends when a watch starts there.

Also the client side of the admin command (``send_admission``), for the command line.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import hl7

from daemon import ids, topics
from daemon.admissions import (
    MAX_COMMAND_BYTES,
    AdmissionError,
    Change,
    Outcome,
    Via,
    Ward,
    parse_command,
    row_data,
)
from daemon.alerts import AlertService
from daemon.capture import CaptureWriter
from daemon.clock import Clock
from daemon.config import BedConfig, Config
from daemon.errors import InputError
from daemon.events import AlertCandidate, Kind, Priority, Text
from daemon.hl7 import adt
from daemon.hl7.hl7in import Hl7Error
from daemon.links.store import StoreWriter, json_text
from daemon.metrics import Counters, reject
from daemon.payloads import load_json_object
from daemon.publish import Publisher
from daemon.rules import Rule, RuleEngine
from daemon.timefmt import iso

if TYPE_CHECKING:
    import aiomqtt  # the command-line clients' type only: the daemon never loads it

log = logging.getLogger(__name__)

UNWATCHED = "UNWATCHED_BED_DATA"
"""Technical condition: data arrives for a bed that has no patient on protocol."""
MAX_NOTICES = 100
"""Open ``UNWATCHED_BED_DATA`` notices at most: beyond, such data is only counted (a
device sending under many made-up beds must not flood the stations)."""
REJECTED = "admissions.rejected"
"""Counter of refused admission changes, by reason."""


def is_admin_topic(topic: str) -> bool:
    """Whether an inbound topic is an admin command."""
    if "/_admin/" not in topic:
        return False  # every data message: decided without splitting the topic
    parts = topic.split("/")
    return len(parts) == 5 and parts[1:4] == ["_admin", "admissions", "by"]


class Host(Protocol):
    """What the desk works on: the pipeline (``daemon.app.Pipeline``)."""

    @property
    def config(self) -> Config:
        """The config in force (the watched beds)."""
        ...

    @property
    def clock(self) -> Clock:
        """The daemon's clock."""
        ...

    @property
    def counters(self) -> Counters:
        """The daemon's counters."""
        ...

    @property
    def writer(self) -> StoreWriter:
        """The store's writer."""
        ...

    @property
    def publisher(self) -> Publisher:
        """The durable MQTT publisher."""
        ...

    @property
    def engine(self) -> RuleEngine:
        """The rules of every watched bed."""
        ...

    @property
    def alerts(self) -> AlertService:
        """The alert engine."""
        ...

    @property
    def capture(self) -> CaptureWriter | None:
        """Where input events are captured for ``wardd replay``, if anywhere."""
        ...

    def reconfigure(self, config: Config) -> None:
        """Run on ``config`` from now on."""
        ...

    def checkpoint(self) -> None:
        """Stage every changed rule state with the input position it stands for."""
        ...


def _answer(future: asyncio.Future[dict[str, Any]], body: dict[str, Any]) -> None:
    if not future.done():  # the page may have given up waiting
        future.set_result(body)


class AdmissionDesk:
    """Applies admission changes to a pipeline (made by ``daemon.app.build`` when
    ``daemon.workers`` is 1)."""

    def __init__(
        self,
        pipeline: Host,
        ward: Ward,
        *,
        rules_for: Callable[[Config, BedConfig], Sequence[Rule[Any]]],
        route: Callable[[BedConfig], None],
        unroute: Callable[[BedConfig], None],
    ) -> None:
        self._pipeline = pipeline
        self.ward = ward
        self._rules_for = rules_for
        self._route = route
        self._unroute = unroute
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        """Answers awaited by the ward page, by the logged input of their command."""
        self.checkpoint_due = False
        """Set when a change was applied or refused: the pipeline checkpoints after the
        input, so that a crash neither replays it nor journals it twice."""

    # --- ADT over MLLP ------------------------------------------------------------------------

    def check_adt(self, message: hl7.Message, where: str) -> Change:
        """An ADT message as a change the ward would accept now; ``Hl7Error`` (AE/AR) if not."""
        change = adt.decode(message, where=where, settings=self._pipeline.config.admissions)
        try:
            self.ward.apply(change, self._pipeline.clock.now())
        except AdmissionError as exc:
            raise Hl7Error("AE", exc.reason, exc.detail, where) from exc
        return change

    async def apply_adt(self, message: hl7.Message, where: str) -> None:
        """Carry out a logged ADT message (already answered AA); a refusal now (the ward
        changed since it was answered) is counted and journaled."""
        try:
            change = adt.decode(message, where=where, settings=self._pipeline.config.admissions)
        except Hl7Error as exc:
            reject(
                self._pipeline.counters, REJECTED, exc.reason, exc.detail, where=where, payload=str(message)
            )
            return
        try:
            await self.apply(change)
        except AdmissionError as exc:
            self._refused(change, exc, where)

    # --- admin commands (MQTT, the ward page) --------------------------------------------------

    async def handle_command(self, topic: str, payload: bytes) -> None:
        """One admin command from MQTT: carried out or refused, and answered on its reply topic."""
        user = topic.rsplit("/", maxsplit=1)[-1]
        allowed = user in self._pipeline.config.admissions.admin_users
        await self._reply(topic, await self._command(user, payload, topic, Via.ADMIN, allowed=allowed))

    async def handle_web(self, seq: int, topic: str, payload: bytes) -> None:
        """One admin command from the ward page (a user of role admin, ``web/<user>``),
        logged as input ``seq``: its answer goes to whoever waits for it (``waiting``)."""
        user = topic.removeprefix("web/")
        body = await self._command(user, payload, topic, Via.WEB, allowed=True)
        future = self.waiting.pop(seq, None)
        if future is not None:
            # Processed before its commit (``Pipeline._log``): answered once it is durable.
            self._pipeline.writer.after_commit(functools.partial(_answer, future, body))

    async def _command(
        self, user: str, payload: bytes, where: str, via: Via, *, allowed: bool
    ) -> dict[str, Any]:
        """Carry out or refuse one admin command of ``user``; the answer's body."""
        request = ""
        try:
            unreadable: InputError | None = None
            data: dict[str, Any] = {}
            try:
                data = load_json_object(payload, where, max_bytes=MAX_COMMAND_BYTES)
            except InputError as exc:
                unreadable = exc
            # The request id is echoed whatever the outcome: the sender matches its answer by it.
            raw_request = data.get("request")
            request = raw_request if isinstance(raw_request, str) and len(raw_request) <= 64 else ""
            if not ids.is_user_id(user):
                raise AdmissionError("bad_user", f"user {ids.shown(user)} is not a user name")
            if not allowed:
                raise AdmissionError(
                    "not_allowed", f"user {user!r} may not change admissions ([admissions] admin_users)"
                )
            if unreadable is not None:
                raise unreadable
            request, change = parse_command(data, user, via)
        except InputError as exc:
            reject(self._pipeline.counters, REJECTED, exc.reason, exc.detail, where=where, payload=payload)
            # Journaled too: an attempt by someone who may not, or a malformed command.
            self._journal(
                {
                    "at": iso(self._pipeline.clock.now()),
                    "who": user if ids.is_user_id(user) else "?",
                    "what": "admission_refused",
                    "via": str(via),
                    "reason": exc.reason,
                    "detail": exc.detail,
                }
            )
            self.checkpoint_due = True
            return {"ok": False, "request": request, "reason": exc.reason, "error": exc.detail}
        try:
            outcome = await self.apply(change)
        except AdmissionError as exc:
            self._refused(change, exc, where)
            return {"ok": False, "request": request, "reason": exc.reason, "error": exc.detail}
        return {
            "ok": True,
            "request": request,
            "action": str(outcome.action),
            "changed": not outcome.noop,
            "detail": outcome.detail,
        }

    async def _reply(self, topic: str, body: Mapping[str, Any]) -> None:
        await self._pipeline.publisher.publish(
            f"{topic}/reply", json.dumps(body, ensure_ascii=False).encode(), qos=1, retain=False
        )

    def _refused(self, change: Change, exc: AdmissionError, where: str) -> None:
        pipeline = self._pipeline
        reject(
            pipeline.counters,
            REJECTED,
            exc.reason,
            exc.detail,
            where=where,
            payload=json.dumps(change.summary()),
        )
        entry = {
            "at": iso(pipeline.clock.now()),
            "who": change.who,
            "what": "admission_refused",
            "via": str(change.via),
            "change": change.summary(),
            "reason": exc.reason,
            "detail": exc.detail,
            "bed": change.bed or change.from_bed,
        }
        self._journal(entry)
        self.checkpoint_due = True

    def _journal(self, entry: Mapping[str, Any]) -> None:
        self._pipeline.writer.stage().journal.append(
            (entry["at"], entry["who"], entry["what"], None, entry.get("bed"), json_text(entry))
        )

    # --- applying a change ----------------------------------------------------------------------

    async def apply(self, change: Change) -> Outcome:
        """Check and carry out one change; ``AdmissionError`` (nothing changed) when refused."""
        pipeline = self._pipeline
        now = pipeline.clock.now()
        outcome = self.ward.apply(change, now)
        if outcome.noop:
            pipeline.counters.inc("admissions.unchanged", str(change.via))
            log.info("admission %s by %s changes nothing: %s", change.action, change.who, outcome.detail)
            return outcome
        before = pipeline.config
        self.ward = self.ward.updated(outcome)
        after = self.ward.effective()
        # Everything up to the first await is one step: the writer cannot commit in between,
        # so the rows, the journal line and the dropped beds go into one unit, before the
        # checkpoint that writes the states as this change leaves them.
        changes = pipeline.writer.stage()
        for bed_id, row in outcome.rows.items():
            changes.admissions[bed_id] = None if row is None else (row.ward, json_text(row_data(row)))
        self._journal(outcome.journal(change, now))
        dropped = self._rewire(outcome, before, after)
        if dropped:
            gone = set(dropped)
            changes.dropped_beds += dropped
            # States staged before the change belong to the beds as they were.
            changes.rule_states = {k: v for k, v in changes.rule_states.items() if k[0] not in gone}
            changes.windows = [w for w in changes.windows if w.bed not in gone]
        pipeline.reconfigure(after)
        # The states as the change leaves them, in the same unit as its rows: a crash after
        # it replays the input (a no-op now), never a ward whose states are elsewhere. The
        # alerts' rows follow without a pause (the publisher only stages, never waits), and
        # the pipeline checkpoints again past the input once it is done.
        pipeline.checkpoint()
        self.checkpoint_due = True
        if outcome.moved is not None:
            old, new = outcome.moved
            await pipeline.alerts.move_bed(before.bed(old).ward, old, after.bed(new).ward, new)
        for bed_id in outcome.ended:
            reason = change.reason or f"{change.action} ({change.via})"
            await pipeline.alerts.close_bed(before.bed(bed_id).ward, bed_id, reason)
        for bed_id in (*outcome.started, *((outcome.moved[1],) if outcome.moved else ())):
            await self._end_notice(after.bed(bed_id).ward, bed_id)
        if pipeline.capture is not None:
            # A replay runs on its config's beds: the capture says they changed here.
            pipeline.capture.admission(now, str(change.action), str(change.via), outcome.detail)
        pipeline.counters.inc("admissions.applied", f"{change.action}.{change.via}")
        log.info("admission by %s (%s): %s", change.who, change.via, outcome.detail)
        return outcome

    def _rewire(self, outcome: Outcome, before: Config, after: Config) -> list[str]:
        """Set up, move and drop the rules and topics of the beds ``outcome`` touches; the
        beds whose stored states are to be deleted."""
        dropped: list[str] = []
        engine = self._pipeline.engine
        if outcome.moved is not None:
            old, new = outcome.moved
            old_bed, new_bed = before.bed(old), after.bed(new)
            engine.move_bed(old, new, new_bed.ward, self._rules_for(after, new_bed))
            self._unroute(old_bed)
            self._route(new_bed)
            dropped += [old, new]
        for bed_id in outcome.ended:
            engine.drop_bed(bed_id)
            self._unroute(before.bed(bed_id))
            dropped.append(bed_id)
        for bed_id in outcome.started:
            bed = after.bed(bed_id)
            engine.set_bed(bed_id, bed.ward, self._rules_for(after, bed), keep_states=False)
            self._route(bed)
            dropped.append(bed_id)
        for bed_id in outcome.changed:
            bed = after.bed(bed_id)
            engine.set_bed(bed_id, bed.ward, self._rules_for(after, bed), keep_states=True)
        return dropped

    # --- data for a bed that nobody watches -------------------------------------------------------

    async def unwatched(self, ward: str, bed: str, source: str) -> None:
        """Data came for ``ward``/``bed``, which has no patient on protocol: counted, and one
        notice per bed of a known ward (at most ``MAX_NOTICES`` open)."""
        pipeline = self._pipeline
        pipeline.counters.inc("admissions.unwatched_data", source)
        if not ids.is_config_id(ward) or not ids.is_config_id(bed) or pipeline.engine.watches(bed):
            return
        if ward not in self.ward.wards:
            return  # no station of this ward would hear it: counted only
        book = pipeline.alerts.book
        # Looked up, not searched for: such data may come for many beds, each message of it.
        if book.find_open(ward, bed, UNWATCHED) is not None or book.open_count(UNWATCHED) >= MAX_NOTICES:
            return
        occupant = self.ward.occupants().get(bed)
        if occupant is not None and occupant.ward == ward:
            why_en = (
                f"patient {occupant.patient} is admitted there with no protocol set (wardd admit --protocol)"
            )
            why_fr = f"le patient {occupant.patient} y est admis sans protocole (wardd admit --protocol)"
        else:
            why_en, why_fr = "no patient is admitted there", "aucun patient n'y est admis"
        candidate = AlertCandidate(
            condition=UNWATCHED,
            ward=ward,
            bed=bed,
            time=pipeline.clock.now(),
            present=True,
            kind=Kind.TECHNICAL,
            priority=Priority.LOW,
            message=Text(
                en=f"Data arrives for bed {bed} ({source}) but {why_en}: no rule judges it",
                fr=f"Des données arrivent pour le lit {bed} ({source}) mais {why_fr} : aucune règle ne les juge",
            ),
            details={"source": source},
        )
        await pipeline.alerts.handle([candidate])

    async def _end_notice(self, ward: str, bed: str) -> None:
        candidate = AlertCandidate(
            condition=UNWATCHED,
            ward=ward,
            bed=bed,
            time=self._pipeline.clock.now(),
            present=False,
            kind=Kind.TECHNICAL,
            priority=Priority.LOW,
        )
        await self._pipeline.alerts.handle([candidate])


# --- the client side (``wardd admit``, ``transfer``, ``discharge``) ------------------------------


@dataclass(frozen=True, slots=True)
class AdmissionReply:
    """The daemon's answer to an admin command, or why there was none."""

    ok: bool
    reason: str = ""
    error: str = ""
    detail: str = ""
    changed: bool = False


async def send_admission(
    client: aiomqtt.Client, *, prefix: str, user: str, command: Mapping[str, Any], timeout_s: float = 10.0
) -> AdmissionReply:
    """Send one admin command as the broker's user ``user`` and wait for its answer."""
    if not ids.is_user_id(user):
        return AdmissionReply(False, "bad_user", f"user {ids.shown(user)}: a user name is {ids.USER_ID_RULE}")
    request = uuid.uuid4().hex
    reply_topic = topics.admissions_by_reply(prefix, user)
    try:
        async with asyncio.timeout(timeout_s):
            await client.subscribe(reply_topic, qos=1)
            body = {**command, "request": request}
            await client.publish(topics.admissions_by(prefix, user), json.dumps(body).encode(), qos=1)
            async for message in client.messages:
                if str(message.topic) != reply_topic:
                    continue
                raw = (
                    message.payload
                    if isinstance(message.payload, bytes | bytearray)
                    else str(message.payload).encode()
                )
                try:
                    answer = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if not isinstance(answer, dict) or answer.get("request") != request:
                    continue  # the answer to another command of the same user
                return AdmissionReply(
                    ok=answer.get("ok") is True,
                    reason=str(answer.get("reason", "")),
                    error=str(answer.get("error", "")),
                    detail=str(answer.get("detail", "")),
                    changed=answer.get("changed") is True,
                )
    except TimeoutError:
        pass
    return AdmissionReply(
        False,
        "timeout",
        f"no answer from the daemon within {timeout_s:g} s (is the daemon running, and may user "
        f"{user!r} publish admin commands on this broker?)",
    )
