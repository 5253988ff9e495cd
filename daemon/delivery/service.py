"""The delivery queue: the router's notices, durable, to each receiver in order.

::

    AlertService transition ──► Router ──► notices ──► store.delivery_outbox ──► worker per receiver
    (listener, same commit)    (pure)        (one row per receiver)               ──► webhook / Apprise
    clock (tick) ─────────────────┘                                                  │
    failed past retries ◄────────────────────────────────────────────────────────────┘
        ──► DELIVERY_FAILED (technical, high) at the alert's bed, and Router.failed: the next level

- Durable: a notice's rows are staged with the alert transition that caused it (one
  store transaction) and leave the store only once the receiver took them; after a
  restart every row not taken is sent again (a receiver may see a repeat, with the same
  ``X-Wardd-Delivery`` number).
- Ordered: each receiver takes its rows one at a time, oldest first; a later notice
  about an alert never overtakes an earlier one.
- Retries: ``retry_min_s``, doubled each time up to ``retry_max_s``, until taken. No
  jitter: one daemon, one client per receiver, no crowd of clients to spread out.
- No black hole: after ``failed_after_attempts`` failed attempts (or a refusal) the
  delivery counts as failed: ``DELIVERY_FAILED`` is raised at the bed of each alert it
  was about, and the router tells the next level at once. The alert ends once every
  receiver that failed for that bed has delivered something again (high priority:
  latched until acknowledged, as every high alert).
- Every attempt is a journal line (``what: "delivery"``: receiver, delivery number,
  attempt, outcome, what the receiver said, the attempt's duration and the notice's age)
  and is counted (``delivery.attempts`` by outcome; ``delivery.delivered``,
  ``delivery.failed``, ``delivery.latency_ms`` by receiver); ``gauges`` gives /metrics
  the attempts by receiver and outcome and each receiver's backlog.
- Receipts (``receipt``, the ward page's ``POST /api/receipts/<receiver>``): a webhook
  gateway's signed word that a person read or accepted a notification; journaled, and
  ``accepted`` acknowledges the delivery's alerts. The delivery is looked up in the
  store's journal by its number (never given twice), so a receipt for one made before
  a restart is answered as any other.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace as dc_replace
from datetime import datetime, timedelta
from typing import Any

from daemon import ids
from daemon.alerts import SYSTEM_ACTOR, AckVia, AlertService, Transition, UnknownAlertError
from daemon.clock import Clock, every
from daemon.config import Config, ReceiverConfig, WebhookReceiverConfig
from daemon.delivery.receivers import Attempt, Outcome, Receiver, make_receiver, signature
from daemon.delivery.routing import Notice, NoticeKind, Router
from daemon.delivery.told import told_lines
from daemon.events import AlertCandidate, Kind, Priority, Text
from daemon.health import Gauge
from daemon.links.store import DeliveryRow, SentNotice, StoreWriter, json_text
from daemon.metrics import Counters
from daemon.timefmt import iso, parse_iso

log = logging.getLogger(__name__)

DELIVERY_FAILED = "DELIVERY_FAILED"
__all__ = ["DELIVERY_FAILED", "DeliveryService", "retry_delay_s", "told_lines"]
FAILING_KEY = "delivery.failing"  # in the store's meta: {receiver: [[ward, bed], ...]}
RECEIPT_STATUSES = ("read", "accepted")
"""What a receiver's receipt may say a person did; ``accepted`` acknowledges the alerts."""
MAX_DELIVERY = 2**63 - 1
"""The largest delivery number: SQLite's largest integer."""


def _receipt_problem(delivery: object, status: object, by: object, name: object) -> str | None:
    """What is wrong with a receipt's fields, or ``None``."""
    if not isinstance(delivery, int) or isinstance(delivery, bool):
        return "delivery must be a number"
    if not 0 < delivery <= MAX_DELIVERY:
        # Beyond what the store's integers hold, it could name no delivery.
        return f"delivery must be from 1 to {MAX_DELIVERY}"
    if status not in RECEIPT_STATUSES:
        return f"status must be one of {', '.join(RECEIPT_STATUSES)}"
    if not ids.is_user_id(by):
        return f"by must be {ids.USER_ID_RULE}"
    if name is not None and ids.name_problem(name) is not None:
        return f"name {ids.name_problem(name)}"
    return None


def retry_delay_s(config: ReceiverConfig, attempts: int) -> float:
    """The wait after the ``attempts``-th failed attempt (1-based)."""
    return float(min(config.retry_max_s, config.retry_min_s * 2 ** (attempts - 1)))


class DeliveryService:
    """Routes the alert engine's transitions and delivers the notices (an ``app.Service``).

    Guarantees: the rows of a notice are committed with the transition that caused it;
    a row is deleted only after its receiver took it or refused it for good; rows of one
    receiver are attempted one at a time in the order they were queued; the router is
    only ever called from the event loop's thread, one call at a time.
    """

    name = "delivery"

    def __init__(
        self,
        config: Config,
        *,
        alerts: AlertService,
        writer: StoreWriter,
        clock: Clock,
        counters: Counters,
        receivers: Mapping[str, Receiver] | None = None,
    ) -> None:
        self._config = config
        self._alerts = alerts
        self._writer = writer
        self._clock = clock
        self._counters = counters
        self._settings = {r.name: r for r in config.receivers}
        patients = {(b.ward, b.id): b.patient for b in config.beds}
        self.receivers: dict[str, Receiver] = (
            dict(receivers)
            if receivers is not None
            else {r.name: make_receiver(r, patients) for r in config.receivers}
        )
        self.router = Router(config.routing, config.routes)
        store = writer.store
        for problem in self.router.restore(store.route_states()):
            counters.inc("routing.state_errors", "unreadable")
            log.error("routing state row unreadable, skipped: %s", problem)
        self._queues: dict[str, collections.deque[DeliveryRow]] = {
            name: collections.deque() for name in self._settings
        }
        self._wakes = {name: asyncio.Event() for name in self._settings}
        for row in store.deliveries_pending():
            if row.receiver in self._queues:
                self._queues[row.receiver].append(row)
            else:
                # The receiver was removed from the config: nobody can take it.
                counters.inc("delivery.orphaned", row.receiver)
                log.error("delivery %d for receiver %r, no longer configured: dropped", row.id, row.receiver)
                writer.stage().deliveries_done.append(row.id)
        saved = store.meta(FAILING_KEY, {}) or {}
        self._failing: dict[str, set[tuple[str, str]]] = {
            name: {(str(w), str(b)) for w, b in beds}
            for name, beds in saved.items()
            if name in self._settings
        }
        self._raise_soon: set[tuple[str, str]] = set()  # beds whose DELIVERY_FAILED must be raised
        # Attempts by (receiver, outcome) since the start, for /metrics.
        self._outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
        alerts.listeners.append(self._on_transition)

    # --- from the alert engine and the clock --------------------------------------------

    def _on_transition(self, transition: Transition) -> None:
        # Runs under the alert engine's lock, right after the transition was staged: the
        # notices' rows join the same commit.
        now = self._clock.now()
        try:
            notices = self.router.transition(transition, now)
        except Exception:
            # A routing bug must not stop the alert engine: the alert still reaches the
            # station and the page; the failure is counted and logged with its traceback.
            self._counters.inc("routing.errors", "transition")
            log.exception("routing failed for alert %s (%s)", transition.alert.id, transition.phase)
            return
        self._queue(notices, now)

    def tick(self, now: datetime) -> None:
        """Grouping windows, quiet periods and repeats due at ``now``."""
        self._queue(self.router.tick(now), now)

    def _queue(self, notices: Sequence[Notice], now: datetime) -> None:
        changes = self._writer.stage()
        for decision in self.router.decisions:
            self._counters.inc(
                f"routing.{decision.what}", decision.detail if decision.what == "unrouted" else ""
            )
            log.info("routing: alert %s %s (%s)", decision.alert_id, decision.what, decision.detail)
        self.router.decisions.clear()
        behind_a_failure: list[tuple[Notice, str]] = []
        for notice in notices:
            self._counters.inc("routing.notices", str(notice.kind))
            for receiver in notice.receivers:
                settings = self._settings.get(receiver)
                if settings is None:
                    continue  # validated away; a restored track may name an old receiver
                row_id = self._writer.store.next_id("delivery_outbox")
                language = settings.language or self._config.daemon.language
                # "first": this receiver hears of the alerts for the first time (an alert
                # manager then gets a start, even from an escalation).
                body = {"delivery": row_id, **notice.body(language), "first": receiver in notice.first_for}
                row = DeliveryRow(row_id, receiver, json_text(body), 0, iso(now), False)
                changes.deliveries.append(row)
                failing = receiver in self._failing
                self._journal(
                    now,
                    "notice",
                    notice.alerts[0].id,
                    notice.bed or None,
                    {
                        "notice": str(notice.kind),
                        "receiver": receiver,
                        "delivery": row_id,
                        "level": notice.level,
                        "route": notice.route,
                        "alerts": [a.id for a in notice.alerts],
                        "receiver_failing": failing,
                    },
                )
                self._writer.after_commit(self._enqueuer(row))
                if failing and notice.kind is not NoticeKind.CLOSING:
                    behind_a_failure.append((notice, receiver))
        changes.route_state.update(self.router.take_changed())
        for notice, receiver in behind_a_failure:
            # This receiver's earlier delivery failed past its retries: this one waits
            # behind it (order per receiver), so the next level is told at once.
            beds = {(a.ward, a.bed) for a in notice.alerts}
            new = beds - self._failing[receiver]
            if new:
                self._failing[receiver] |= new
                self._save_failing()
                self._raise_soon |= new
            ids = [a.id for a in notice.alerts]
            self._queue(self.router.failed(ids, notice.level, receiver, now), now)

    def _enqueuer(self, row: DeliveryRow) -> Callable[[], None]:
        def enqueue() -> None:
            self._queues[row.receiver].append(row)
            self._wakes[row.receiver].set()

        return enqueue

    # --- running --------------------------------------------------------------------------

    async def run(self) -> None:
        """One worker per receiver and the router's clock, until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                for name in self.receivers:
                    group.create_task(self._worker(name), name=f"delivery[{name}]")
                group.create_task(self._ticks(), name="delivery.tick")
        finally:
            for receiver in self.receivers.values():
                await receiver.close()

    async def _ticks(self) -> None:
        async for _ in every(self._clock, self._config.routing.check_interval_s):
            now = self._clock.now()
            if self._raise_soon:
                # Found while the alert engine's lock was held: raised here.
                beds, self._raise_soon = self._raise_soon, set()
                await self._alerts.handle(self._candidates(beds, now))
            try:
                self.tick(now)
            except Exception:
                # As for a transition: a routing bug must not stop the daemon; the alerts
                # still reach the station and the page.
                self._counters.inc("routing.errors", "tick")
                log.exception("routing failed on the clock's tick")

    async def _worker(self, name: str) -> None:
        queue, wake, receiver = self._queues[name], self._wakes[name], self.receivers[name]
        while True:
            if not queue:
                wake.clear()
                await wake.wait()
                continue
            row = queue[0]
            wait_s = (parse_iso(row.next_at) - self._clock.now()).total_seconds()
            if wait_s > 0:
                await self._clock.sleep(wait_s)
            notice = json.loads(row.notice)
            started = time.perf_counter()
            attempt = await receiver.send(row.id, row.notice.encode("utf-8"), notice["title"], notice["text"])
            await self._record(name, row, notice, attempt, time.perf_counter() - started)

    async def _record(
        self, name: str, row: DeliveryRow, notice: dict[str, Any], attempt: Attempt, took_s: float
    ) -> None:
        now = self._clock.now()
        settings = self._settings[name]
        number = row.attempts + 1
        age_s = max(0.0, (now - parse_iso(notice["at"])).total_seconds())
        self._counters.inc("delivery.attempts", str(attempt.outcome))
        self._outcomes[(name, str(attempt.outcome))] += 1
        entry: dict[str, Any] = {
            "receiver": name,
            "delivery": row.id,
            "notice": notice["notice"],
            "alerts": [a["id"] for a in notice["alerts"]],
            "attempt": number,
            "outcome": str(attempt.outcome),
            "detail": attempt.detail,
            "attempt_ms": round(took_s * 1000, 1),
            "age_s": round(age_s, 3),
        }
        changes = self._writer.stage()
        queue = self._queues[name]
        failed_now = False
        if attempt.outcome is Outcome.RETRY:
            failed_now = number == settings.failed_after_attempts
            next_at = now + timedelta(seconds=retry_delay_s(settings, number))
            entry["next_at"] = iso(next_at)
            queue[0] = dc_replace(row, attempts=number, next_at=iso(next_at), failed=row.failed or failed_now)
            changes.deliveries.append(queue[0])
        else:
            queue.popleft()
            changes.deliveries_done.append(row.id)
            failed_now = attempt.outcome is Outcome.REFUSED
        self._journal(now, "delivery", entry["alerts"][0], notice["bed"] or None, entry)
        if attempt.outcome is Outcome.DELIVERED:
            self._counters.inc("delivery.delivered", name)
            self._counters.inc("delivery.latency_ms", name, round(age_s * 1000))
            log.info(
                "delivery %d to %s: delivered (attempt %d, %.3f s after the notice)",
                row.id,
                name,
                number,
                age_s,
            )
            if name in self._failing:
                await self._recovered(name, now)
            return
        log.warning(
            "delivery %d to %s: %s (attempt %d): %s", row.id, name, attempt.outcome, number, attempt.detail
        )
        if failed_now:
            self._counters.inc("delivery.failed", name)
            await self._failed(name, notice, now)

    async def _failed(self, name: str, notice: dict[str, Any], now: datetime) -> None:
        beds = {(str(a["ward"]), str(a["bed"])) for a in notice["alerts"]}
        self._failing.setdefault(name, set()).update(beds)
        self._save_failing()
        if notice["notice"] != str(NoticeKind.CLOSING):
            # The alert itself first: its next level matters more than news of the failure.
            ids = [str(a["id"]) for a in notice["alerts"]]
            self._queue(self.router.failed(ids, int(notice["level"]), name, now), now)
        await self._alerts.handle(self._candidates(beds, now))

    async def _recovered(self, name: str, now: datetime) -> None:
        beds = self._failing.pop(name, set())
        self._save_failing()
        await self._alerts.handle(self._candidates(beds, now))

    def _candidates(self, beds: set[tuple[str, str]], now: datetime) -> list[AlertCandidate]:
        out: list[AlertCandidate] = []
        for ward, bed in sorted(beds):
            failing = sorted(name for name, where in self._failing.items() if (ward, bed) in where)
            message = (
                Text(
                    f"Alert notifications for bed {bed} could not be delivered to: {', '.join(failing)}. "
                    "Watch the station; the notifications are retried.",
                    f"Les notifications d'alerte du lit {bed} n'ont pas pu être remises à : "
                    f"{', '.join(failing)}. Surveiller le poste ; les envois sont retentés.",
                )
                if failing
                else Text(
                    f"Alert notifications for bed {bed} are delivered again.",
                    f"Les notifications d'alerte du lit {bed} sont de nouveau remises.",
                )
            )
            out.append(
                AlertCandidate(
                    DELIVERY_FAILED,
                    ward,
                    bed,
                    now,
                    present=bool(failing),
                    kind=Kind.TECHNICAL,
                    # A person who should have been told was not: the alarm reaches nobody
                    # but the station, as when no one answers (domain.md section 4, ACM).
                    priority=Priority.HIGH,
                    message=message,
                    details={"receivers": failing} if failing else {},
                )
            )
        return out

    def _save_failing(self) -> None:
        self._writer.stage().meta[FAILING_KEY] = {
            name: sorted([w, b] for w, b in beds) for name, beds in self._failing.items() if beds
        }

    def _journal(
        self, now: datetime, what: str, alert_id: str, bed: str | None, entry: dict[str, Any]
    ) -> None:
        line = {"at": iso(now), "who": SYSTEM_ACTOR, "what": what, "id": alert_id, **entry}
        self._writer.stage().journal.append((line["at"], SYSTEM_ACTOR, what, alert_id, bed, json_text(line)))

    async def receipt(self, receiver: str, body: bytes, signed: str) -> tuple[int, dict[str, Any]]:
        """A webhook receiver's receipt for one of its deliveries: ``{"delivery": n,
        "status": "read" | "accepted", "by": "<user id>", "name": "<display name>"}``,
        signed as the notifications are (``X-Wardd-Signature`` of the body with the
        receiver's key). Journaled; ``accepted`` acknowledges each alert of the delivery
        still open, by ``by``, ``via: receipt``. The HTTP status and JSON answer."""
        settings = self._settings.get(receiver)
        if not isinstance(settings, WebhookReceiverConfig):
            return self._refused("unknown_receiver", 404, f"no webhook receiver named {ids.shown(receiver)}")
        key = (settings.secret.resolve() or "").encode("utf-8")
        if not key or not hmac.compare_digest(signed.encode("utf-8"), signature(key, body).encode("utf-8")):
            return self._refused("bad_signature", 401, "X-Wardd-Signature does not match the body")
        try:
            data = json.loads(body)
            delivery, status, by = data["delivery"], data["status"], data["by"]
            name = data.get("name")
        except (ValueError, TypeError, KeyError) as exc:
            return self._refused("bad_receipt", 400, f"not a receipt: {exc}")
        problem = _receipt_problem(delivery, status, by, name)
        if problem is not None:
            return self._refused("bad_receipt", 400, problem)
        # Read on the store's thread, behind the commits: a notice is sent only once the
        # commit that holds its journal line is done, so a receipt always finds it there.
        sent: SentNotice | None = await self._writer.call(self._writer.store.sent_notice, delivery)
        if sent is None or sent.receiver != receiver:
            return self._refused("unknown_delivery", 404, f"no delivery {delivery} to {receiver}")
        alert_ids, bed = sent.alert_ids, sent.bed
        now = self._clock.now()
        entry = {
            "receiver": receiver,
            "delivery": delivery,
            "status": status,
            "by": by,
            "alerts": list(alert_ids),
        }
        if name is not None:
            entry["name"] = name.strip()
        self._journal(now, "receipt", alert_ids[0], bed or None, entry)
        self._counters.inc("delivery.receipts", status)
        acknowledged: list[str] = []
        if status == "accepted":
            for alert_id in alert_ids:
                try:
                    done = await self._alerts.acknowledge(
                        alert_id, by, name=entry.get("name"), via=AckVia.RECEIPT
                    )
                except UnknownAlertError:
                    continue  # closed meanwhile: nothing left to acknowledge
                if done:
                    acknowledged.append(alert_id)
        # Answered once the journal line is on disk, as the page's acknowledgement is.
        await self._writer.flush()
        log.info("receipt from %s: delivery %d %s by %s", receiver, delivery, status, by)
        return 200, {"ok": True, "delivery": delivery, "status": status, "acknowledged": acknowledged}

    def _refused(self, reason: str, status: int, detail: str) -> tuple[int, dict[str, Any]]:
        self._counters.inc("delivery.receipts_refused", reason)
        log.warning("receipt refused (%s): %s", reason, detail)
        return status, {"ok": False, "reason": reason, "error": detail}

    def pending(self) -> int:
        """Notices waiting for a receiver (in memory: committed ones)."""
        return sum(len(q) for q in self._queues.values())

    def gauges(self) -> list[Gauge]:
        """Attempts by receiver and outcome, each receiver's backlog and whether it is
        failing, and the oldest waiting notice's age, for /metrics."""
        outcomes: dict[tuple[str, ...], float] = {
            (name, str(o)): float(self._outcomes[(name, str(o))]) for name in self._settings for o in Outcome
        }
        now = self._clock.now()
        oldest: dict[tuple[str, ...], float] = {
            (name,): max(0.0, (now - parse_iso(json.loads(queue[0].notice)["at"])).total_seconds())
            for name, queue in self._queues.items()
            if queue
        }
        return [
            Gauge(
                "wardd_delivery_attempts_by_receiver",
                "Delivery attempts by receiver and outcome (delivered, retry, refused)",
                outcomes,
                ("receiver", "outcome"),
                counter=True,
            ),
            Gauge(
                "wardd_delivery_outbox_notices",
                "Notices waiting for their receiver (committed, not yet taken)",
                {(name,): float(len(queue)) for name, queue in self._queues.items()},
                ("receiver",),
            ),
            Gauge(
                "wardd_delivery_oldest_waiting_seconds",
                "Age of the oldest notice waiting for its receiver (daemon clock)",
                oldest,
                ("receiver",),
            ),
            Gauge(
                "wardd_delivery_failing",
                "1 while deliveries to this receiver count as failed (DELIVERY_FAILED raised)",
                {(name,): float(bool(self._failing.get(name))) for name in self._settings},
                ("receiver",),
            ),
        ]
