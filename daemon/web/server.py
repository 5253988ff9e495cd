"""The ward page's HTTP server: login, the ward view, live updates, acknowledgement.

::

    pipeline observers ──► LatestVitals ─┐
    AlertService.listeners ──(after the  ├──► ward_view ──► "ward" / "alert" events ──► each browser
       store's commit)───────────────────┘    (daemon.wardview)   (server-sent events)
    browser ── POST /api/alerts/<id>/ack ──► AlertService.acknowledge(via="web") ──► store, MQTT, page

Routes: ``GET /`` the ward (or a redirect to ``/login``), ``GET|POST /login``,
``POST /logout``, ``GET /events`` (server-sent events: a ``snapshot`` on connect,
then ``ward`` updates, ``alert`` transitions and a ``ping`` every ``PING_S``),
``GET /api/ward`` (the same snapshot as JSON), ``POST /api/alerts/<id>/ack``,
``GET /bed/<bed id>`` (one bed: its tile, alert timeline, CRS/ICANS suggestions and
audit journal, ``?before=<seq>`` for older journal lines, ``?span=`` for the vital-sign
charts; 404 for a bed that is not configured), ``GET /bed/<bed id>/charts`` (its charts
alone, which the page draws again every minute) and ``/static/`` (the package's own
files, nothing else).

Every POST needs the session's CSRF token (a form field, or the ``X-CSRF-Token``
header), the login form a token bound to its own cookie. Refusals answer 401 (no
session), 403 (CSRF, or a viewer's acknowledgement) and are counted under
``web.refused``. An alert transition reaches the browsers once its alert row and
journal line are committed, so the page never shows what the store does not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import json
import logging
import math
import string
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from daemon import ids
from daemon.alerts import AckVia, Alert, AlertService, AlertState, Transition, UnknownAlertError
from daemon.clinical.dose import bed_state, delivered_rate_ug_per_day
from daemon.clock import Clock
from daemon.config import BedConfig, Config, WebConfig, WebUserConfig
from daemon.delivery.receivers import SIGNATURE_HEADER
from daemon.delivery.told import Told
from daemon.errors import InputError, ListenError
from daemon.events import Event, Metric, PumpReading, VitalSample
from daemon.links.store import StoreWriter
from daemon.metrics import Counters
from daemon.rules import RuleEngine
from daemon.timefmt import iso, iso_or_none
from daemon.wardview import (
    BedView,
    LatestVitals,
    bed_view,
    bed_views,
    book_ward_alerts,
    by_urgency,
    urgency_sorted,
    ward_view,
)
from daemon.web import bedcharts, bedpage, i18n
from daemon.web.history import (
    DELIVERED,
    RECENT_S,
    TREND_S,
    HistoryUnavailableError,
    InfluxHistory,
    RecentHistory,
    influxql,
    trend,
)
from daemon.web.passwords import PasswordHash, hash_password, parse_hash, verify_password
from daemon.web.sessions import Session, Sessions, new_token, same
from daemon.web.throttle import LoginThrottle

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATES_DIR = HERE / "templates"
SESSION_COOKIE = "wardd_session"
LOGIN_COOKIE = "wardd_login"  # binds the login form's CSRF token to this browser
SESSIONS_KEY = "web.sessions"  # in the store's meta
CSRF_HEADER = "X-CSRF-Token"
PING_S = 2.0
"""A ping this often tells the page its stream is alive: the page calls itself stale after
three missed pings, so that a silent network loss shows within seconds too."""
REFRESH_S = 1.0
"""Vital signs and pump readings reach the page at most this often (real time: it is
the display's refresh rate, as the console's redraw); alert transitions at once."""
IDLE_REFRESH_S = 10.0
"""With nothing new, the ward is sent again this often (scores and rates age on the clock)."""
WARD_GAP_S = 0.25
"""The ward is sent at most this often: the alert transitions of a burst share one."""
WARD_SLICE_BEDS = 20
"""Beds of the ward built between two turns of the event loop (about 1.6 ms at 1,000 beds)."""
CLIENT_QUEUE = 64
"""Messages waiting for one browser; beyond that it gets a fresh snapshot instead of the backlog."""
MAX_FORM_BYTES = 8192
MAX_RECEIPT_BYTES = 4096  # a receipt is a small JSON object
Receipts = Callable[[str, bytes, str], Awaitable[tuple[int, dict[str, Any]]]]
"""``(receiver, body, X-Wardd-Signature)`` -> HTTP status and JSON answer (the delivery service's)."""
CONCURRENT_PASSWORD_CHECKS = 1
"""scrypt takes 128 MiB per check at the default cost: one at a time, so that a burst of
logins cannot exhaust the memory of the machine that watches the patients."""
SECURITY_HEADERS: Mapping[str, str] = {
    # Only the package's own script and style: no inline script, nothing from outside.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
ROLES_THAT_ACK = frozenset({"nurse", "admin"})
MAX_ADMISSION_BYTES = 4096  # an admin command's JSON (daemon.admissions.MAX_COMMAND_BYTES)


def _template(name: str) -> string.Template:
    return string.Template((TEMPLATES_DIR / name).read_text(encoding="utf-8"))


@functools.cache
def _escaped_texts(language: str) -> Mapping[str, str]:
    """The page's texts in ``language``, escaped for HTML: the same for every page and request."""
    return {key: html.escape(value) for key, value in i18n.texts(language).items()}


def _sent_section(rows: Sequence[Told], words: Mapping[str, str], escaped: Mapping[str, str]) -> str:
    """The bed page's "sent to whom" table (with routes configured)."""
    head = "".join(f"<th>{escaped[key]}</th>" for key in ("when", "receiver", "notice", "alerts", "outcome"))
    return (
        f'<section class="history">\n<h2>{escaped["sent"]}</h2>\n<table id="sent" class="journal">\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n{bedpage.sent_html(rows, words)}\n</tbody>\n</table>\n"
        "</section>"
    )


def _json_for_html(data: Any) -> str:
    # Inside <script type="application/json">: "<" escaped, so no "</script>" can end it.
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")


async def _body_within(request: web.Request, limit_bytes: int) -> bytes | None:
    """The request's body, or ``None`` when it is longer than ``limit_bytes`` (a declared
    length over it is refused before anything is read; a chunked body read to one byte past)."""
    if (request.content_length or 0) > limit_bytes:
        return None
    body = await request.content.read(limit_bytes + 1)
    return None if len(body) > limit_bytes else body


def alert_json(alert: Alert, language: str) -> dict[str, Any]:
    """One open alert as the page shows it."""
    return {
        "id": alert.id,
        "condition": alert.condition,
        "priority": str(alert.priority),
        "state": str(alert.state),
        "since": iso(alert.since),
        "escalation_level": alert.escalation_level,
        "message": alert.message.get(language),
        "value": alert.value,
        "unit": alert.unit,
        "acked_by": alert.acked_by,
        "acked_name": alert.acked_name,
    }


TREND_METRICS = tuple(str(metric) for metric in Metric if metric is not Metric.DBP_MMHG)
"""The vital signs a tile shows, each with its trend."""


def bed_json(view: BedView, language: str, recent: RecentHistory | None = None) -> dict[str, Any]:
    """One bed's tile as data; with ``recent``, the trend of each vital sign it shows."""
    bed = view.bed
    urgency = view.urgency
    waiting = [a for a in view.alerts if a.state is not AlertState.ACKNOWLEDGED]
    level = max(waiting, key=lambda a: a.priority.rank).priority if waiting else None
    return {
        "ward": bed.ward,
        "bed": bed.id,
        "patient": bed.patient,
        "protocol": bed.protocol,
        "protocol_start": iso(bed.protocol_start),
        "day": view.protocol_day,
        "expected_ug_per_day": view.expected_ug_per_day,
        "delivered_ug_per_day": view.delivered_ug_per_day,
        "next_step": None
        if view.next_step is None
        else {"at": iso(view.next_step[0]), "ug_per_day": view.next_step[1]},
        "vitals": {str(metric): value for metric, value in view.vitals.items()},
        "vitals_at": iso_or_none(view.vitals_time),
        "news2": None if view.news2 is None else {"score": view.news2, "partial": view.news2_partial},
        "level": None if level is None else str(level),
        "urgency": list(urgency.key()),
        "alerts": [alert_json(alert, language) for alert in view.alerts],
        "trend": {}
        if recent is None
        else {metric: trend(recent, bed.id, metric, view.now) for metric in TREND_METRICS},
        "trend_s": TREND_S,
    }


def _prebuilt(
    wards: Mapping[str, Mapping[str, Any]], build: Callable[[str], Mapping[str, Any]], language: str
) -> Mapping[str, Any]:
    """The ward built in ``language`` ahead of time, or now for a language none was built in
    (a browser that connected meanwhile)."""
    ward = wards.get(language)
    return build(language) if ward is None else ward


@dataclass
class _Outgoing:
    """One event for every browser, built once per language on first use."""

    event: str
    build: Callable[[str], Mapping[str, Any]]
    _text: dict[str, str] = field(default_factory=dict)

    def text(self, language: str) -> str:
        if language not in self._text:
            self._text[language] = json.dumps(self.build(language), ensure_ascii=False)
        return self._text[language]


@dataclass(eq=False)
class _Client:
    """One open event stream."""

    token: str
    language: str
    queue: asyncio.Queue[_Outgoing | None] = field(default_factory=lambda: asyncio.Queue(CLIENT_QUEUE))


class WardPage:
    """The ward page: an aiohttp server run as one named task of the pipeline (``run``).

    Guarantees: it reads the pipeline's state and changes it only through
    ``AlertService.acknowledge``; an acknowledgement is answered once its journal
    line is committed; ``run`` returns (or is cancelled) with every stream closed.
    """

    name = "web.serve"

    def __init__(
        self,
        settings: WebConfig,
        *,
        config: Config,
        engine: RuleEngine,
        alerts: AlertService,
        clock: Clock,
        counters: Counters,
        writer: StoreWriter,
    ) -> None:
        self.settings = settings
        self.receipts: Receipts | None = None  # set when routes are configured (app.build)
        self._config = config
        self.admin_command: Callable[[str, bytes], Awaitable[dict[str, Any]]] | None = None
        """Carries out an admin command of a user of role admin (``Pipeline.admin_command``);
        unset: admissions are not taken here (several workers)."""
        self._engine = engine
        self._alerts = alerts
        self._clock = clock
        self._counters = counters
        self._writer = writer
        self._users: dict[str, WebUserConfig] = {user.name: user for user in settings.users}
        self._hashes: dict[str, PasswordHash] = {
            user.name: parse_hash(user.password_hash) for user in settings.users
        }
        # An unknown user name costs the same check as a known one (against another user's
        # hash, and refused whatever the outcome): no timing tells them apart.
        self._decoy = next(iter(self._hashes.values()), None) or parse_hash(
            hash_password(new_token(), log2_n=10)
        )
        self._checks = asyncio.Semaphore(CONCURRENT_PASSWORD_CHECKS)
        self._throttle = LoginThrottle(
            clock,
            failures=settings.login_failures,
            per_address=settings.login_failures_per_address,
            window_s=settings.login_window_s,
            lockout_s=settings.login_lockout_s,
        )
        self.sessions = Sessions(settings.session_ttl_s, clock)
        saved = writer.store.meta(SESSIONS_KEY)
        if isinstance(saved, Mapping):
            self.sessions.load(saved, self._users)
        self.latest = LatestVitals()
        self.recent = RecentHistory()
        """Each bed's last hours of vital signs and delivered dose: the tiles' trends, and the
        charts' data when InfluxDB is not configured or does not answer."""
        self._influx = (
            InfluxHistory(config.influx, config.influx.password.resolve())
            if config.influx.api == "v1"
            else None
        )
        self._clients: set[_Client] = set()
        self._wake = asyncio.Event()  # an alert transition is committed: push at once
        self._dirty = False  # new vital signs or readings since the last push
        # The last ward pushed: when (time.monotonic), for which config, in which languages.
        self._pushed: tuple[float, Config, dict[str, dict[str, Any]]] | None = None
        self.started = asyncio.Event()
        self.seeded = asyncio.Event()
        """Set once the memory has been filled from InfluxDB at start (or that was not possible)."""
        self.url = ""
        """``http://host:port/`` once ``started`` is set."""
        self._login_page = _template("login.html")
        self._ward_page = _template("ward.html")
        # The header of the ward and bed pages (status, sound, user, logout): one copy.
        self._header = _template("header.html")
        self._bed_page = _template("bed.html")
        self._not_found_page = _template("notfound.html")
        alerts.listeners.append(self._on_transition)

    # -- hooks into the pipeline

    def use_config(self, config: Config) -> None:
        """Show the beds of ``config`` from now on (admissions changed them at run time)."""
        self._config = config
        self._dirty = True  # the ward shows other beds: send it again

    def observe(self, event: Event) -> None:
        """A pipeline observer: keeps the latest vital signs, marks the ward as changed."""
        self.latest.observe(event)
        if isinstance(event, VitalSample):
            for metric, value in event.values.items():
                self.recent.add(event.bed, str(metric), event.time, value)
        elif isinstance(event, PumpReading):
            self._remember_dose(event)
        if getattr(event, "bed", None) is not None:
            self._dirty = True

    def _remember_dose(self, reading: PumpReading) -> None:
        # The rate the dose point gives at the reading's time: the dose rule has just taken it.
        try:
            bed = self._config.bed(reading.bed)
            state = bed_state(self._engine, bed)
        except (KeyError, TypeError):  # a bed not configured, or an engine without dose rules
            return
        stale_s = self._config.thresholds_for(bed.id).dose.reading_stale_s
        delivered = delivered_rate_ug_per_day(state, reading.time, stale_s)
        if delivered is not None:
            self.recent.add(bed.id, DELIVERED, reading.time, delivered)

    def _on_transition(self, transition: Transition) -> None:
        # Shown once the store has it: the page never shows what a crash would undo.
        alert = transition.alert

        def committed() -> None:
            self._broadcast(
                _Outgoing(
                    "alert",
                    lambda language: {
                        "at": iso(alert.updated),
                        "phase": str(alert.phase),
                        **alert_json(alert, language),
                        "ward": alert.ward,
                        "bed": alert.bed,
                    },
                )
            )
            self._wake.set()

        self._writer.after_commit(committed)

    # -- running

    def app(self) -> web.Application:
        """The aiohttp application (tests serve it on their own)."""
        app = web.Application(client_max_size=MAX_FORM_BYTES)
        app.router.add_get("/", self._index)
        app.router.add_get("/login", self._login_form)
        app.router.add_post("/login", self._login)
        app.router.add_post("/logout", self._logout)
        app.router.add_get("/events", self._events)
        app.router.add_get("/api/ward", self._api_ward)
        app.router.add_get("/bed/{bed_id}", self._bed)
        app.router.add_get("/bed/{bed_id}/charts", self._bed_charts)
        app.router.add_post("/api/alerts/{alert_id}/ack", self._ack)
        app.router.add_post("/api/receipts/{receiver}", self._receipt)
        app.router.add_post("/api/admissions", self._admission)
        app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
        app.on_response_prepare.append(self._headers)
        return app

    async def run(self) -> None:
        """Serve until cancelled, then close every stream and the listener."""
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.settings.host, self.settings.port)
            try:
                await site.start()
            except OSError as exc:
                host, port = self.settings.host, self.settings.port
                raise ListenError("the ward page", "web.host, web.port", host, port, exc) from exc
            host, port = _bound(runner, self.settings)
            self.url = f"http://{host}:{port}/"
            log.info("ward page on %s (%d user(s))", self.url, len(self._users))
            self.started.set()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._seed(), name="web.seed")
                await self._push()
        finally:
            self.close_streams()
            await runner.cleanup()
            await self.close_history()

    async def _seed(self) -> None:
        """Fill the empty memory of a fresh start with the last hours InfluxDB holds, bed by bed."""
        try:
            if self._influx is None:
                return
            end = self._clock.now().timestamp()
            begin = end - RECENT_S
            step = int(self.recent.bucket_s)
            metrics = [str(metric) for metric in Metric]
            for bed in self._config.beds:
                try:
                    vitals, dose = await self._influx.read(
                        [
                            influxql("vitals", metrics, bed.ward, bed.id, begin, end, step),
                            influxql("dose", [DELIVERED], bed.ward, bed.id, begin, end, step),
                        ]
                    )
                except HistoryUnavailableError as exc:
                    # The memory fills from live data instead; the charts say so while it is short.
                    self._counters.inc("web.history", f"seed_{exc.reason}")
                    log.warning("ward page: no history from InfluxDB at start (%s)", exc.detail)
                    return
                kept = sum(
                    self.recent.seed(bed.id, name, samples)
                    for name, samples in (*vitals.items(), *dose.items())
                )
                self._counters.inc("web.history", "seeded", kept)
            self._dirty = True
        finally:
            self.seeded.set()

    async def close_history(self) -> None:
        """Close the connection that reads the charts' history (``run`` does it on its way out)."""
        if self._influx is not None:
            await self._influx.close()

    def close_streams(self) -> None:
        """End every open event stream (the browsers then show the lost connection)."""
        for client in list(self._clients):
            with contextlib.suppress(asyncio.QueueFull):
                client.queue.put_nowait(None)

    async def _push(self) -> None:
        waited_s = 0.0
        pushed_s = -math.inf  # when the ward was last sent (time.monotonic)
        while True:
            woke = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_S):
                    await self._wake.wait()
                    woke = True
            waited_s += REFRESH_S if not woke else 0.0
            if self._clients and (woke or self._dirty or waited_s >= IDLE_REFRESH_S):
                # A burst of alert transitions shares one ward: at once after a quiet
                # spell, then at most one every WARD_GAP_S (each alert's own event
                # still goes out at once).
                gap_s = pushed_s + WARD_GAP_S - time.monotonic()
                if gap_s > 0:
                    await asyncio.sleep(gap_s)
                self._wake.clear()
                self._dirty = False
                waited_s = 0.0
                wards = await self._ward_in_slices({client.language for client in self._clients})
                if wards is None:
                    self._dirty = True  # other beds now: shown at the next turn
                    continue
                pushed_s = time.monotonic()
                self._pushed = (pushed_s, self._config, wards)
                self._broadcast(_Outgoing("ward", functools.partial(_prebuilt, wards, self.ward)))
            elif woke:
                self._wake.clear()

    def _broadcast(self, message: _Outgoing) -> None:
        for client in list(self._clients):
            try:
                client.queue.put_nowait(message)
            except asyncio.QueueFull:
                # A slow browser: it gets the whole ward afresh instead of the backlog.
                self._counters.inc("web.resync", "slow_client")
                while not client.queue.empty():
                    client.queue.get_nowait()
                client.queue.put_nowait(_Outgoing("snapshot", self.ward))

    def ward(self, language: str) -> dict[str, Any]:
        """The whole ward, most urgent bed first, with alert messages in ``language``."""
        now = self._clock.now()
        views = by_urgency(ward_view(self._config, self._engine, self._alerts.book, self.latest, now))
        beds = [bed_json(view, language, self.recent) for view in views]
        return self._ward_json(self._config, now, beds, language)

    def _ward_json(
        self, config: Config, now: datetime, beds: list[dict[str, Any]], language: str
    ) -> dict[str, Any]:
        own = book_ward_alerts(config, self._alerts.book)
        return {
            "now": iso(now),
            "beds": beds,
            "wards": [
                {"ward": ward, "alerts": [alert_json(alert, language) for alert in alerts]}
                for ward, alerts in own.items()
            ],
        }

    async def snapshot(self, language: str) -> dict[str, Any]:
        """The whole ward for a browser that connects or asks ``/api/ward``: the one last
        pushed while it is as fresh as a push would be (less than ``REFRESH_S`` old, no
        alert transition since, the same beds), else built in slices. Every browser
        reconnecting at once (after a restart of the daemon) then costs one build, not
        one each that held the event loop (78 ms at 1,000 beds)."""
        pushed = self._pushed
        if pushed is not None:
            pushed_s, config, wards = pushed
            fresh = time.monotonic() - pushed_s < REFRESH_S and not self._wake.is_set()
            if fresh and config is self._config and language in wards:
                return wards[language]
        built = await self._ward_in_slices([language])
        return self.ward(language) if built is None else built[language]

    async def _ward_in_slices(self, languages: Iterable[str]) -> dict[str, dict[str, Any]] | None:
        """``ward`` in each of ``languages``, ``WARD_SLICE_BEDS`` beds at a time with the
        event loop let run in between (a whole ward of 1,000 beds held it 78 ms, and the
        inputs arriving meanwhile with it). Each bed is shown as it is when its turn
        comes; ``None`` if the beds changed meanwhile (admissions: the next push shows them)."""
        config, now = self._config, self._clock.now()
        keyed: list[tuple[tuple[int, int, int], BedView]] = []
        views = bed_views(config, self._engine, self._alerts.book, self.latest, now)
        for n, view in enumerate(views, 1):
            keyed.append((view.urgency.key(), view))  # here, not in the sort: 4 ms at 1,000 beds
            if n % WARD_SLICE_BEDS == 0:
                await asyncio.sleep(0)
                if self._config is not config:
                    return None
        out: dict[str, dict[str, Any]] = {}
        ordered = urgency_sorted(keyed)
        for language in languages:
            beds = []
            for n, view in enumerate(ordered, 1):
                beds.append(bed_json(view, language, self.recent))
                if n % WARD_SLICE_BEDS == 0:
                    await asyncio.sleep(0)
            out[language] = self._ward_json(config, now, beds, language)
        return out

    # -- requests

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers["Server"] = "wardd"  # not the versions of Python and aiohttp
        # Static files are revalidated (they change with the daemon); nothing else is cached.
        response.headers.setdefault(
            "Cache-Control", "no-cache" if request.path.startswith("/static/") else "no-store"
        )

    def _session(self, request: web.Request) -> tuple[Session, WebUserConfig] | None:
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return None
        user = self._users.get(session.user)
        return None if user is None else (session, user)

    def _refuse(self, request: web.Request, status: int, reason: str, **body: Any) -> web.Response:
        self._counters.inc("web.refused", reason)
        log.warning("ward page: %s %s refused (%s)", request.method, request.path, reason)
        return web.json_response({"ok": False, "reason": reason, **body}, status=status)

    def _csrf_ok(self, session: Session, given: str | None) -> bool:
        return given is not None and same(given, session.csrf)

    async def _index(self, request: web.Request) -> web.StreamResponse:
        found = self._session(request)
        if found is None:
            raise web.HTTPSeeOther("/login")
        session, user = found
        words = _escaped_texts(user.language)
        text = self._ward_page.substitute(
            words,
            lang=user.language,
            header=self._header_html(session, user, heading=words["title"]),
            page_data=self._page_data(session, user),
        )
        return web.Response(text=text, content_type="text/html", charset="utf-8")

    def _header_html(self, session: Session, user: WebUserConfig, *, heading: str) -> str:
        """The pages' shared header, with ``heading`` (HTML) as its title."""
        words = _escaped_texts(user.language)
        return self._header.substitute(
            words,
            heading=heading,
            display_name=html.escape(user.display_name),
            role_text=words[f"role_{user.role}"],
            csrf=html.escape(session.csrf),
        )

    def _page_data(self, session: Session, user: WebUserConfig, **more: Any) -> str:
        return _json_for_html(
            {
                "lang": user.language,
                "role": user.role,
                "can_ack": user.role in ROLES_THAT_ACK,
                "csrf": session.csrf,
                "ping_s": PING_S,
                # The alarm sound's patterns and timings ([web.sound]): the page plays them.
                "sound": self.settings.sound.model_dump(),
                "strings": dict(i18n.texts(user.language)),
                **more,
            }
        )

    def _not_found(self, language: str, notice: str = "not_found_text", status: int = 404) -> web.Response:
        words = _escaped_texts(language)
        text = self._not_found_page.substitute(words, lang=language, not_found_text=words[notice])
        return web.Response(text=text, content_type="text/html", charset="utf-8", status=status)

    def _bed_asked(self, request: web.Request, language: str) -> BedConfig | web.Response:
        """The configured bed of the path, or the refusal (counted) to answer."""
        bed_id = request.match_info["bed_id"]
        # Validated before anything reads the store: an id is plain data, or it is refused.
        if not ids.is_config_id(bed_id):
            self._counters.inc("web.refused", "bad_bed")
            return self._not_found(language)
        try:
            return self._config.bed(bed_id)
        except KeyError:
            self._counters.inc("web.refused", "unknown_bed")
            return self._not_found(language)

    def _span_asked(self, request: web.Request, language: str) -> str | web.Response:
        span = request.query.get("span", bedcharts.DEFAULT_SPAN)
        if span not in bedcharts.SPANS:
            self._counters.inc("web.refused", "bad_span")
            return self._not_found(language, "bad_span", status=400)
        return span

    async def _charts_html(
        self, bed: BedConfig, span: str, language: str, dose_events: Sequence[bedpage.Line], now: datetime
    ) -> str:
        begin, end, _ = bedcharts.course(self._engine, self._config, bed, now)
        series = await bedcharts.read_series(
            bed=bed,
            api=self._config.influx.api,
            influx=self._influx,
            recent=self.recent,
            counters=self._counters,
            vitals_window=bedcharts.vitals_window(span, now, begin),
            dose_window=(begin.timestamp(), end.timestamp()),
        )
        return bedcharts.charts_html(
            config=self._config,
            engine=self._engine,
            bed=bed,
            series=series,
            journal=dose_events,
            now=now,
            span=span,
            language=language,
        )

    async def _bed_charts(self, request: web.Request) -> web.Response:
        """The bed view's charts alone: the page's script draws them again every minute."""
        found = self._session(request)
        if found is None:
            return self._refuse(request, 401, "no_session")
        user = found[1]
        bed = self._bed_asked(request, user.language)
        if isinstance(bed, web.Response):
            return bed
        span = self._span_asked(request, user.language)
        if isinstance(span, web.Response):
            return span
        read = functools.partial(
            self._writer.store.journal_lines,
            bed.id,
            limit=bedcharts.DOSE_EVENT_LINES,
            conditions=bedcharts.DOSE_EVENTS,
        )
        dose_events: list[bedpage.Line] = await self._writer.call(read)
        text = await self._charts_html(bed, span, user.language, dose_events, self._clock.now())
        return web.Response(text=text, content_type="text/html", charset="utf-8")

    async def _bed(self, request: web.Request) -> web.StreamResponse:
        found = self._session(request)
        if found is None:
            raise web.HTTPSeeOther("/login")
        session, user = found
        bed = self._bed_asked(request, user.language)
        if isinstance(bed, web.Response):
            return bed
        before: int | None = None
        if "before" in request.query:
            raw = request.query["before"]
            # A journal seq: a positive integer that SQLite's 64-bit integers hold.
            if not (raw.isascii() and raw.isdigit() and len(raw) <= 18 and int(raw) > 0):
                self._counters.inc("web.refused", "bad_page")
                return self._not_found(user.language, "bad_page", status=400)
            before = int(raw)
        span = self._span_asked(request, user.language)
        if isinstance(span, web.Response):
            return span
        # On the store's thread, serialised with its commits: never on the event loop.
        history: bedpage.BedHistory = await self._writer.call(
            functools.partial(bedpage.read_history, sent=bool(self._config.routes)),
            self._writer.store,
            bed.id,
            before,
            bedcharts.DOSE_EVENTS,
            bedcharts.DOSE_EVENT_LINES,
        )
        now = self._clock.now()
        charts_section = await self._charts_html(bed, span, user.language, history.dose_events, now)
        view = bed_view(
            self._config,
            bed,
            engine=self._engine,
            book=self._alerts.book,
            latest=self.latest,
            now=now,
        )
        words = i18n.texts(user.language)
        escaped = _escaped_texts(user.language)
        bed_label = html.escape(f"{bed.ward}/{bed.id}")
        pager = []
        # The journal's pages keep the charts' span (a known name: nothing to escape).
        keep = "" if span == bedcharts.DEFAULT_SPAN else f"span={span}"
        if before is not None:
            newest = f"/bed/{bed.id}" + (f"?{keep}" if keep else "")
            pager.append(f'<a href="{newest}" id="newest">{html.escape(words["newest"])}</a>')
        if history.older is not None:
            older = f"/bed/{bed.id}?before={history.older}" + (f"&amp;{keep}" if keep else "")
            pager.append(f'<a href="{older}" id="older">{html.escape(words["older"])}</a>')
        heading = f'<a href="/" id="back" class="back">{escaped["back_to_ward"]}</a> · {escaped["bed_title"]} {bed_label}'
        text = self._bed_page.substitute(
            escaped,
            lang=user.language,
            bed_label=bed_label,
            header=self._header_html(session, user, heading=heading),
            charts=charts_section,
            timeline_items=bedpage.timeline_html(history.timeline, words),
            suggestion_rows=bedpage.suggestions_html(history.suggestions, words),
            journal_rows=bedpage.journal_html(history.journal, words),
            sent_section=_sent_section(history.sent, words, escaped) if self._config.routes else "",
            pager=" · ".join(pager),
            page_data=self._page_data(
                session,
                user,
                bed={"ward": bed.ward, "bed": bed.id, "tile": bed_json(view, user.language, self.recent)},
                now=iso(now),
            ),
        )
        return web.Response(text=text, content_type="text/html", charset="utf-8")

    def _login_response(
        self, request: web.Request, notice: str | None, status: int = 200, **values: str
    ) -> web.Response:
        """The login form, with ``notice`` (a text key; ``values`` fill its ``{names}``)."""
        language = i18n.from_accept_language(request.headers.get("Accept-Language"))
        words = _escaped_texts(language)
        token = new_token()
        text = self._login_page.substitute(
            words,
            lang=language,
            csrf=token,
            notice=words[notice].format(**{k: html.escape(v) for k, v in values.items()}) if notice else "",
            notice_hidden="" if notice else " hidden",
        )
        response = web.Response(text=text, content_type="text/html", charset="utf-8", status=status)
        self._cookie(request, response, LOGIN_COOKIE, token, max_age_s=3600)
        return response

    async def _login_form(self, request: web.Request) -> web.Response:
        return self._login_response(request, "login_expired" if "expired" in request.query else None)

    async def _login(self, request: web.Request) -> web.Response:
        form = await request.post()
        given = form.get("csrf")
        bound = request.cookies.get(LOGIN_COOKIE)
        if not isinstance(given, str) or bound is None or not same(given, bound):
            self._counters.inc("web.refused", "csrf")
            log.warning("ward page: login refused (no valid form token)")
            return self._login_response(request, "form_expired", status=403)
        name, password = form.get("user"), form.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            return self._login_response(request, "login_failed", status=401)
        address = request.remote or ""
        wait_s = self._throttle.wait_s(name, address)
        if wait_s > 0:
            # Refused before the check: a guesser gets a few tries a minute, and no scrypt runs.
            self._counters.inc("web.refused", "login_throttled")
            log.warning("ward page: login throttled for user %s from %s", ids.shown(name), address)
            seconds = str(math.ceil(wait_s))
            response = self._login_response(request, "login_throttled", status=429, seconds=seconds)
            response.headers["Retry-After"] = seconds
            return response
        user = self._users.get(name)
        async with self._checks:
            ok = await asyncio.to_thread(verify_password, password, self._hashes.get(name, self._decoy))
        if user is None or not ok:
            self._throttle.failed(name, address)
            self._counters.inc("web.logins", "refused")
            log.warning("ward page: login refused for user %s", ids.shown(name))
            return self._login_response(request, "login_failed", status=401)
        self._throttle.succeeded(name)
        token, _ = self.sessions.create(user.name)
        self._save_sessions()
        self._counters.inc("web.logins", "accepted")
        log.info("ward page: %s (%s) logged in", user.name, user.role)
        response = web.HTTPSeeOther("/")
        self._cookie(request, response, SESSION_COOKIE, token, max_age_s=self.settings.session_ttl_s)
        response.del_cookie(LOGIN_COOKIE, path="/")
        raise response

    async def _logout(self, request: web.Request) -> web.Response:
        found = self._session(request)
        form = await request.post()
        given = form.get("csrf")
        if found is not None and not self._csrf_ok(found[0], given if isinstance(given, str) else None):
            return self._refuse(request, 403, "csrf")
        if self.sessions.drop(request.cookies.get(SESSION_COOKIE)):
            self._save_sessions()
        response = web.HTTPSeeOther("/login")
        response.del_cookie(SESSION_COOKIE, path="/")
        raise response

    async def _api_ward(self, request: web.Request) -> web.Response:
        found = self._session(request)
        if found is None:
            return self._refuse(request, 401, "no_session")
        return web.json_response(await self.snapshot(found[1].language))

    async def _ack(self, request: web.Request) -> web.Response:
        found = self._session(request)
        if found is None:
            return self._refuse(request, 401, "no_session")
        session, user = found
        if not self._csrf_ok(session, request.headers.get(CSRF_HEADER)):
            return self._refuse(request, 403, "csrf")
        alert_id = request.match_info["alert_id"]
        if user.role not in ROLES_THAT_ACK:
            return self._refuse(request, 403, "role", error=f"{user.role} may not acknowledge")
        try:
            transitions = await self._alerts.acknowledge(
                alert_id, user.name, name=user.display_name, via=AckVia.WEB
            )
        except UnknownAlertError as exc:
            return self._refuse(request, 404, "unknown_id", error=str(exc))
        except InputError as exc:
            return self._refuse(request, 400, exc.reason, error=exc.detail)
        # Answered once the journal line is on disk: "acknowledged" then means it.
        await self._writer.flush()
        self._counters.inc("web.acks", "accepted" if transitions else "already_acknowledged")
        log.info("ward page: %s acknowledged %s", user.name, alert_id)
        state = str(transitions[-1].alert.state) if transitions else "acknowledged"
        return web.json_response({"ok": True, "id": alert_id, "state": state})

    async def _receipt(self, request: web.Request) -> web.Response:
        # No session: a receiver's gateway proves itself with the receiver's key (the
        # signature over the body), checked by the delivery service that holds the keys.
        if self.receipts is None:
            return self._refuse(request, 404, "no_receipts", error="no routes: nothing takes receipts")
        body = await _body_within(request, MAX_RECEIPT_BYTES)
        if body is None:
            return self._refuse(
                request, 413, "too_large", error=f"a receipt is at most {MAX_RECEIPT_BYTES} bytes"
            )
        status, answer = await self.receipts(
            request.match_info["receiver"], body, request.headers.get(SIGNATURE_HEADER, "")
        )
        return web.json_response(answer, status=status)

    async def _admission(self, request: web.Request) -> web.Response:
        """An admin command (README, "Admissions") from a user of role admin, as JSON: the
        same fields as ``wardd admit`` sends; answered once carried out or refused."""
        found = self._session(request)
        if found is None:
            return self._refuse(request, 401, "no_session")
        session, user = found
        if not self._csrf_ok(session, request.headers.get(CSRF_HEADER)):
            return self._refuse(request, 403, "csrf")
        if user.role != "admin":
            return self._refuse(request, 403, "role", error=f"{user.role} may not change admissions")
        if self.admin_command is None:
            return self._refuse(request, 503, "unavailable", error="admissions need daemon.workers = 1")
        body = await _body_within(request, MAX_ADMISSION_BYTES)
        if body is None:
            return self._refuse(request, 413, "too_large")
        answer = await self.admin_command(user.name, body)
        self._counters.inc("web.admissions", "accepted" if answer.get("ok") else "refused")
        return web.json_response(answer, status=200 if answer.get("ok") else 422)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        found = self._session(request)
        if found is None:
            return self._refuse(request, 401, "no_session")
        token = request.cookies.get(SESSION_COOKIE, "")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        client = _Client(token, found[1].language)
        self._clients.add(client)
        self._counters.inc("web.streams", "opened")
        try:
            ward = await self.snapshot(client.language)
            await _send(response, _Outgoing("snapshot", lambda _: ward), client.language)
            while True:
                try:
                    async with asyncio.timeout(PING_S):
                        message = await client.queue.get()
                except TimeoutError:
                    message = _Outgoing("ping", lambda _: {"now": iso(self._clock.now())})
                if message is None:
                    break  # the daemon stops
                if self.sessions.get(token) is None:
                    await _send(response, _Outgoing("logout", lambda _: {}), client.language)
                    break
                await _send(response, message, client.language)
        except ConnectionError:
            pass  # the browser went away
        finally:
            self._clients.discard(client)
        return response

    # -- helpers

    def _cookie(
        self, request: web.Request, response: web.StreamResponse, name: str, value: str, *, max_age_s: float
    ) -> None:
        # Secure once the page is reached over HTTPS (the hospital's reverse proxy says so).
        secure = request.secure or request.headers.get("X-Forwarded-Proto") == "https"
        response.set_cookie(
            name,
            value,
            path="/",
            max_age=int(max_age_s),
            httponly=True,
            samesite="Strict",
            secure=secure,
        )

    def _save_sessions(self) -> None:
        self._writer.stage().meta[SESSIONS_KEY] = self.sessions.dump()


async def _send(response: web.StreamResponse, message: _Outgoing, language: str) -> None:
    await response.write(f"event: {message.event}\ndata: {message.text(language)}\n\n".encode())


def _bound(runner: web.AppRunner, settings: WebConfig) -> tuple[str, int]:
    """The address actually listened on (the port the system chose for ``port = 0``)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return str(address[0]), int(address[1])
    return settings.host, settings.port
