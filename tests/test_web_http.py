"""The ward page over HTTP, without a browser: logins, sessions, CSRF, roles, the assets.

The page is the daemon's own (``build`` with ``[web]`` enabled), served on a loopback
port by aiohttp's test server, on a manual clock so that a session's end is driven,
not waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from daemon.app import Pipeline, build
from daemon.clock import ManualClock
from daemon.config import parse
from daemon.delivery.receivers import signature
from daemon.delivery.service import DeliveryService
from daemon.events import AlertCandidate, Priority
from daemon.web.passwords import hash_password
from daemon.web.server import MAX_RECEIPT_BYTES, STATIC_DIR, WARD_GAP_S, WARD_SLICE_BEDS, WardPage, _Client
from tests.helpers import committing
from tests.mqtt_watch import until
from tests.servers import WebhookServer

pytestmark = pytest.mark.integration  # a real HTTP server on a loopback port

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
TTL_S = 3600.0
PASSWORDS = {"nurse1": "nurse password", "viewer1": "viewer password", "admin1": "admin password"}


def _config(
    tmp_path: Path,
    *,
    second_bed: bool = False,
    web: dict[str, Any] | None = None,
    more: dict[str, Any] | None = None,
    bed_count: int | None = None,
) -> Any:
    ids: tuple[str, ...] = ("b1", "b2") if second_bed else ("b1",)
    if bed_count is not None:
        ids = tuple(f"b{n}" for n in range(1, bed_count + 1))
    beds = [
        {
            "ward": "w1",
            "id": bed_id,
            "patient": f"p-{bed_id[1:]}",
            "weight_kg": 63,
            "height_cm": 165,
            "protocol_start": (T0 - timedelta(days=1)).isoformat(),
        }
        for bed_id in ids
    ]
    return parse(
        {
            "daemon": {"state_dir": str(tmp_path / "state")},
            "influx": {"api": "none"},
            "web": {
                "enabled": True,
                "port": 0,
                "session_ttl_s": TTL_S,
                **(web or {}),
                "users": [
                    {
                        "name": name,
                        "role": name.removesuffix("1"),
                        "display_name": f"{name.title()} Person",
                        "language": "fr" if name == "admin1" else "en",
                        "password_hash": hash_password(password, log2_n=10),
                    }
                    for name, password in PASSWORDS.items()
                ],
            },
            "beds": beds,
            **(more or {}),
        }
    )


class Rig:
    """The daemon's pipeline (not running: no broker needed), its page and a browser-like client."""

    def __init__(self, pipeline: Pipeline, client: TestClient[Any, Any], clock: ManualClock) -> None:
        self.pipeline = pipeline
        self.client = client
        self.clock = clock
        page = pipeline.services[0]
        assert isinstance(page, WardPage)
        self.page = page

    async def login(self, user: str, password: str | None = None) -> str:
        """Log in through the form; the session's CSRF token (from the ward page)."""
        form = await self.client.get("/login")
        token = _field(await form.text(), "csrf")
        response = await self.client.post(
            "/login",
            data={"csrf": token, "user": user, "password": password or PASSWORDS[user]},
            allow_redirects=False,
        )
        assert response.status == 303, await response.text()
        ward = await self.client.get("/")
        assert ward.status == 200
        return _field(await ward.text(), "csrf")

    async def open_alert(self, bed: str = "b1", condition: str = "HYPOTENSION") -> str:
        """A high-priority alert on ``bed`` (b1); its id."""
        candidate = AlertCandidate(
            condition=condition, ward="w1", bed=bed, time=T0, present=True, priority=Priority.HIGH
        )
        [transition] = await self.pipeline.alerts.handle([candidate])
        return transition.alert.id


def _field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]+)"', html)
    assert found is not None, html[:500]
    return found[1]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with _rig(tmp_path) as found:
        yield found


@pytest.fixture
async def ward_of_two(tmp_path: Path) -> AsyncIterator[Rig]:
    """Beds b1 and b2 on ward w1."""
    async with _rig(tmp_path, second_bed=True) as found:
        yield found


@contextlib.asynccontextmanager
async def _rig(
    tmp_path: Path,
    *,
    second_bed: bool = False,
    web: dict[str, Any] | None = None,
    more: dict[str, Any] | None = None,
    bed_count: int | None = None,
) -> AsyncIterator[Rig]:
    clock = ManualClock(T0)
    config = _config(tmp_path, second_bed=second_bed, web=web, more=more, bed_count=bed_count)
    pipeline = build(config, clock=clock)
    page = pipeline.services[0]
    assert isinstance(page, WardPage)
    async with committing(pipeline.writer), TestClient(TestServer(page.app())) as client:
        yield Rig(pipeline, client, clock)
    pipeline.writer.close()


async def test_the_ward_needs_a_login(rig: Rig) -> None:
    response = await rig.client.get("/", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (303, "/login")
    assert (await rig.client.get("/api/ward")).status == 401
    assert (await rig.client.get("/events")).status == 401
    assert rig.pipeline.counters.get("web.refused", "no_session") == 2


async def test_a_wrong_password_or_user_is_refused_and_counted(rig: Rig) -> None:
    for user, password in (("nurse1", "not it"), ("nobody", "nurse password")):
        form = await rig.client.get("/login")
        response = await rig.client.post(
            "/login",
            data={"csrf": _field(await form.text(), "csrf"), "user": user, "password": password},
            allow_redirects=False,
        )
        assert response.status == 401
        assert "Wrong user or password." in await response.text()
    assert rig.pipeline.counters.get("web.logins", "refused") == 2
    assert (await rig.client.get("/api/ward")).status == 401


async def test_a_login_without_its_form_token_is_refused(rig: Rig) -> None:
    await rig.client.get("/login")  # the cookie is set, but the form's token is not sent
    response = await rig.client.post(
        "/login", data={"csrf": "forged", "user": "nurse1", "password": PASSWORDS["nurse1"]}
    )
    assert response.status == 403
    assert rig.pipeline.counters.get("web.refused", "csrf") == 1
    assert (await rig.client.get("/api/ward")).status == 401


async def test_the_session_cookie_is_httponly_and_samesite_strict(rig: Rig) -> None:
    form = await rig.client.get("/login")
    response = await rig.client.post(
        "/login",
        data={"csrf": _field(await form.text(), "csrf"), "user": "nurse1", "password": PASSWORDS["nurse1"]},
        allow_redirects=False,
    )
    [cookie] = [c for c in response.headers.getall("Set-Cookie") if c.startswith("wardd_session=")]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert f"Max-Age={int(TTL_S)}" in cookie


async def test_an_acknowledgement_without_the_csrf_token_is_refused(rig: Rig) -> None:
    csrf = await rig.login("nurse1")
    alert_id = await rig.open_alert()
    for headers in ({}, {"X-CSRF-Token": "not-the-token"}):
        response = await rig.client.post(f"/api/alerts/{alert_id}/ack", headers=headers)
        assert response.status == 403
    assert rig.pipeline.counters.get("web.refused", "csrf") == 2
    assert rig.pipeline.alerts.book.get(alert_id).state == "active"
    # Logging out needs it too.
    assert (await rig.client.post("/logout", data={"csrf": "nope"})).status == 403
    response = await rig.client.post("/logout", data={"csrf": csrf}, allow_redirects=False)
    assert response.status == 303
    assert (await rig.client.get("/api/ward")).status == 401


async def test_a_nurse_acknowledges_and_the_journal_says_who_and_via_web(rig: Rig) -> None:
    csrf = await rig.login("nurse1")
    alert_id = await rig.open_alert()
    response = await rig.client.post(f"/api/alerts/{alert_id}/ack", headers={"X-CSRF-Token": csrf})
    assert response.status == 200
    assert await response.json() == {"ok": True, "id": alert_id, "state": "acknowledged"}
    # Answered after the commit: the journal line is already in the store.
    last = rig.pipeline.store.journal()[-1]
    assert (last["what"], last["who"], last["name"], last["via"]) == ("ack", "nurse1", "Nurse1 Person", "web")
    assert rig.pipeline.counters.get("web.acks", "accepted") == 1
    unknown = await rig.client.post("/api/alerts/b1-NOPE-99/ack", headers={"X-CSRF-Token": csrf})
    assert unknown.status == 404


async def test_a_viewer_may_not_acknowledge(rig: Rig) -> None:
    csrf = await rig.login("viewer1")
    alert_id = await rig.open_alert()
    response = await rig.client.post(f"/api/alerts/{alert_id}/ack", headers={"X-CSRF-Token": csrf})
    assert response.status == 403
    assert (await response.json())["reason"] == "role"
    assert rig.pipeline.counters.get("web.refused", "role") == 1
    assert rig.pipeline.alerts.book.get(alert_id).state == "active"
    page = await (await rig.client.get("/")).text()
    assert '"can_ack": false' in page


async def test_a_session_expires_on_the_daemons_clock(rig: Rig) -> None:
    await rig.login("nurse1")
    assert (await rig.client.get("/api/ward")).status == 200
    await rig.clock.advance(TTL_S - 1)
    assert (await rig.client.get("/api/ward")).status == 200
    await rig.clock.advance(1)
    assert (await rig.client.get("/api/ward")).status == 401
    response = await rig.client.get("/", allow_redirects=False)
    assert response.status == 303


async def test_sessions_outlive_a_restart_of_the_daemon(rig: Rig, tmp_path: Path) -> None:
    await rig.login("nurse1")
    await rig.pipeline.writer.flush()
    again = build(_config(tmp_path), clock=rig.clock)
    page = again.services[0]
    assert isinstance(page, WardPage)
    assert len(page.sessions) == 1
    again.writer.close()


async def test_the_ward_as_json_in_the_users_language(rig: Rig) -> None:
    await rig.login("admin1")
    await rig.open_alert()
    ward = await (await rig.client.get("/api/ward")).json()
    [bed] = ward["beds"]
    assert (bed["bed"], bed["patient"], bed["day"], bed["level"]) == ("b1", "p-1", 2, "high")
    assert bed["alerts"][0]["message"] == "HYPOTENSION au lit b1"
    page = await (await rig.client.get("/")).text()
    assert '<html lang="fr">' in page
    assert "Se déconnecter" in page


async def test_the_ward_built_in_slices_is_the_ward(tmp_path: Path) -> None:
    """What the page pushes, built a slice of beds at a time, is what ``/api/ward`` answers:
    the same beds, in the same order of urgency, in each language."""
    beds = 3 * WARD_SLICE_BEDS + 5
    async with _rig(tmp_path, bed_count=beds) as rig:
        for bed, condition in (("b7", "HYPOTENSION"), ("b50", "HYPOXIA"), ("b3", "HYPOTENSION")):
            await rig.open_alert(bed, condition)
        candidate = AlertCandidate("FEVER", "w1", "b41", T0, present=True, priority=Priority.MEDIUM)
        await rig.pipeline.alerts.handle([candidate])
        built = await rig.page._ward_in_slices(["en", "fr"])
        assert built is not None
        assert built == {"en": rig.page.ward("en"), "fr": rig.page.ward("fr")}
        order = [bed["bed"] for bed in built["en"]["beds"]]
        assert order[:4] == ["b3", "b7", "b50", "b41"], "the most urgent first, then the config's order"
        assert len(order) == beds


async def test_a_ward_built_while_the_beds_change_is_dropped(tmp_path: Path) -> None:
    async with _rig(tmp_path, bed_count=2 * WARD_SLICE_BEDS) as rig:
        building = asyncio.create_task(rig.page._ward_in_slices(["en"]), name="test.ward")
        await asyncio.sleep(0)  # the first slice is built
        rig.page.use_config(_config(tmp_path, bed_count=3))
        assert await building is None


async def test_a_burst_of_alert_transitions_shares_one_ward_push(tmp_path: Path) -> None:
    """Every transition wakes the page; the whole ward goes out at once, then at most
    once per ``WARD_GAP_S`` while the burst lasts (each alert's own event is apart)."""
    async with _rig(tmp_path, bed_count=3) as rig:
        client = _Client("token", "en")
        rig.page._clients.add(client)
        pushing = asyncio.create_task(rig.page._push(), name="test.push")
        try:
            for _ in range(10):
                rig.page._wake.set()
                await asyncio.sleep(WARD_GAP_S / 10)
            await asyncio.sleep(WARD_GAP_S / 4)
            sent = [message.event for message in _drain(client)]
            assert sent.count("ward") in (1, 2), sent  # at once, then one more after the gap
            await asyncio.sleep(WARD_GAP_S * 2)
            assert [message.event for message in _drain(client)] in ([], ["ward"])
        finally:
            pushing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pushing


async def test_a_browser_that_connects_gets_the_ward_just_pushed_unless_something_happened_since(
    tmp_path: Path,
) -> None:
    async with _rig(tmp_path, bed_count=3) as rig:
        page = rig.page
        page._clients.add(_Client("token", "en"))
        pushing = asyncio.create_task(page._push(), name="test.push")
        try:
            page._wake.set()
            await until(lambda: page._pushed is not None, 5, "a push")
            assert page._pushed is not None
            pushed = page._pushed[2]["en"]
            assert await page.snapshot("en") is pushed, "as fresh as a push: reused"
            assert await page.snapshot("fr") == page.ward("fr"), "no push in French: built"
            await rig.open_alert("b2")  # a transition since: its wake is pending
            page._wake.set()
            fresh = await page.snapshot("en")
            assert fresh is not pushed
            assert fresh == page.ward("en")
            assert [a["condition"] for a in fresh["beds"][0]["alerts"]] == ["HYPOTENSION"]
        finally:
            pushing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pushing


def _drain(client: _Client) -> list[Any]:
    out = []
    while not client.queue.empty():
        out.append(client.queue.get_nowait())
    return out


async def test_every_asset_is_served_from_the_package(rig: Rig) -> None:
    for path in STATIC_DIR.iterdir():
        response = await rig.client.get(f"/static/{path.name}")
        assert response.status == 200, path.name
        assert await response.read() == path.read_bytes()
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    for outside in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/nothing.js"):
        assert (await rig.client.get(outside)).status in (403, 404), outside
    login = await (await rig.client.get("/login")).text()
    await rig.login("nurse1")
    ward = await (await rig.client.get("/")).text()
    for html in (login, ward):
        for url in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert url.startswith("/static/"), url
            assert (await rig.client.get(url)).status == 200


async def test_the_page_receives_its_sound_settings(rig: Rig) -> None:
    await rig.login("nurse1")
    page = await (await rig.client.get("/")).text()
    found = re.search(r'<script id="page-data" type="application/json">(.*?)</script>', page, re.DOTALL)
    assert found is not None
    sound = json.loads(found[1])["sound"]
    assert sound == rig.page.settings.sound.model_dump()
    assert (sound["audio_paused_s"], sound["low_sounds"], sound["tone_hz"]) == (120.0, False, 660.0)
    for control in ('id="sound-enable"', 'id="sound-state"', 'id="audio-pause"', "Enable sound", "Sound off"):
        assert control in page, control


# --- the bed page ---------------------------------------------------------------------------


def _page_data(page: str) -> dict[str, Any]:
    found = re.search(r'<script id="page-data" type="application/json">(.*?)</script>', page, re.DOTALL)
    assert found is not None, page[:500]
    data: dict[str, Any] = json.loads(found[1])
    return data


def _section(page: str, element_id: str) -> str:
    """The inside of the element with this id (an ``ol`` or a ``table``)."""
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:ol|table)>', page, re.DOTALL)
    assert found is not None, element_id
    return found[1]


def _lines(section: str) -> list[str]:
    """The items or rows of a section that are journal lines (they carry their seq)."""
    return [m[0] for m in re.finditer(r'<(li|tr) [^>]*data-seq="\d+".*?</\1>', section, re.DOTALL)]


async def test_the_bed_page_needs_a_session(rig: Rig) -> None:
    response = await rig.client.get("/bed/b1", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (303, "/login")
    await rig.login("viewer1")
    response = await rig.client.get("/bed/b1")
    assert response.status == 200
    page = await response.text()
    # A viewer sees the bed, and the page says it may not acknowledge.
    data = _page_data(page)
    assert (data["can_ack"], data["bed"]["bed"], data["bed"]["tile"]["patient"]) == (False, "b1", "p-1")
    assert "w1/b1" in page


async def test_an_unknown_or_malformed_bed_is_a_404_in_the_users_language(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[Any] = []
    real_call = rig.pipeline.writer.call

    async def counted(function: Any, *args: Any) -> Any:
        reads.append(args)
        return await real_call(function, *args)

    monkeypatch.setattr(rig.pipeline.writer, "call", counted)
    await rig.login("nurse1")
    for path in ("/bed/b9", "/bed/-b1", "/bed/b1%0A", "/bed/b1%27%20OR%201=1", "/bed/" + "b" * 65):
        response = await rig.client.get(path)
        assert response.status == 404, path
        text = await response.text()
        assert "There is no bed with this id on this ward." in text, path
        assert '<html lang="en">' in text
    assert reads == []  # refused before any query
    assert rig.pipeline.counters.get("web.refused", "unknown_bed") == 1
    assert rig.pipeline.counters.get("web.refused", "bad_bed") == 4
    for before in ("x", "-1", "0", "1" * 19):
        assert (await rig.client.get(f"/bed/b1?before={before}")).status == 400, before
    assert reads == []
    assert (await rig.client.get("/bed/b1")).status == 200
    assert len(reads) == 1  # and the one read of a valid bed is on the store's thread
    await rig.login("admin1")  # a French user
    text = await (await rig.client.get("/bed/b9")).text()
    assert '<html lang="fr">' in text
    assert "Il n&#x27;y a pas de lit avec cet identifiant dans ce service." in text


async def test_the_timeline_and_journal_show_this_beds_transitions_only(ward_of_two: Rig) -> None:
    rig = ward_of_two
    csrf = await rig.login("nurse1")
    ours = await rig.open_alert("b1", "HYPOTENSION")
    theirs = await rig.open_alert("b2", "FEVER")
    response = await rig.client.post(f"/api/alerts/{ours}/ack", headers={"X-CSRF-Token": csrf})
    assert response.status == 200
    page = await (await rig.client.get("/bed/b1")).text()

    timeline = _lines(_section(page, "timeline"))
    assert [re.search(r'data-phase="(\w+)"', line)[1] for line in timeline] == ["ack", "start"]  # type: ignore[index]
    assert all(f'data-alert-id="{ours}"' in line and "p-high" in line for line in timeline)
    newest = unescape(re.sub(r"<[^>]+>", "", timeline[0]))
    assert "HYPOTENSION" in newest
    assert "acknowledged by Nurse1 Person (nurse1) via the ward page" in newest
    journal = _lines(_section(page, "journal"))
    assert len(journal) == 2
    assert "Nurse1 Person (nurse1)" in unescape(journal[0])
    assert "active → acknowledged" in unescape(journal[0])
    for other in (theirs, "FEVER", "b2-"):
        assert other not in page, other
    # The open alert, with what the tile shows, for the page's script.
    tile = _page_data(page)["bed"]["tile"]
    assert [(a["id"], a["state"]) for a in tile["alerts"]] == [(ours, "acknowledged")]
    assert _page_data(page)["can_ack"] is True

    other_page = await (await rig.client.get("/bed/b2")).text()
    assert theirs in other_page
    assert ours not in other_page


async def test_the_crs_suggestion_history_shows_each_grade_and_its_basis(rig: Rig) -> None:
    await rig.login("nurse1")
    for grade, temp_c in ((1, 38.4), (2, 38.9)):
        basis = [{"domain": "fever", "grade": 1, "value": temp_c, "by": "monitor-1", "time": T0.isoformat()}]
        if grade == 2:
            basis.append({"domain": "hypotension", "grade": 2, "value": 84, "by": "monitor-1"})
        candidate = AlertCandidate(
            condition="CRS_SUSPECTED",
            ward="w1",
            bed="b1",
            time=T0,
            present=True,
            priority=Priority.MEDIUM if grade == 1 else Priority.HIGH,
            details={"grade": grade, "basis": basis},
        )
        await rig.pipeline.alerts.handle([candidate])
        await rig.clock.advance(60)
    await rig.open_alert("b1", "HYPOTENSION")  # not a suggestion
    await rig.pipeline.writer.flush()  # the page shows what the store has committed
    page = await (await rig.client.get("/bed/b1")).text()
    rows = _lines(_section(page, "suggestions"))
    assert len(rows) == 2
    newest, oldest = (unescape(re.sub(r"<[^>]+>", " ", row)) for row in rows)
    assert "CRS_SUSPECTED" in newest
    assert re.search(r'class="grade">2<', rows[0])
    assert re.search(r'class="grade">1<', rows[1])
    assert "hypotension grade 2 (84)" in newest
    assert "fever grade 1 (38.9)" in newest
    assert "fever grade 1 (38.4)" in oldest
    assert "hypotension" not in oldest
    assert "HYPOTENSION" not in _section(page, "suggestions")


async def test_the_journal_is_paged_newest_first_and_bounded(rig: Rig) -> None:
    await rig.login("nurse1")
    for _ in range(230):  # 460 lines: a start and an end each
        for present in (True, False):
            candidate = AlertCandidate(condition="FEVER", ward="w1", bed="b1", time=T0, present=present)
            await rig.pipeline.alerts.handle([candidate])
    await rig.pipeline.writer.flush()
    seqs: list[int] = []
    path: str | None = "/bed/b1"
    pages = 0
    while path is not None:
        page = await (await rig.client.get(path)).text()
        pages += 1
        rows = _lines(_section(page, "journal"))
        assert len(rows) <= 200
        seqs += [int(re.search(r'data-seq="(\d+)"', row)[1]) for row in rows]  # type: ignore[index]
        older = re.search(r'href="(/bed/b1\?before=\d+)" id="older"', page)
        path = older[1] if older else None
        assert len(_lines(_section(page, "timeline"))) == 200  # the newest transitions, every page
    assert pages == 3
    assert len(seqs) == 460
    assert seqs == sorted(seqs, reverse=True)  # newest first, none twice, none missed
    assert len(set(seqs)) == 460


# --- login throttling ---------------------------------------------------------------------------


async def _attempt(rig: Rig, user: str, password: str) -> tuple[int, str, str | None]:
    """One login through the form: the status, the page and its Retry-After."""
    form = await rig.client.get("/login")
    token = _field(await form.text(), "csrf")
    response = await rig.client.post(
        "/login", data={"csrf": token, "user": user, "password": password}, allow_redirects=False
    )
    return response.status, await response.text(), response.headers.get("Retry-After")


async def test_wrong_passwords_hold_that_login_back_for_a_while_and_are_counted(rig: Rig) -> None:
    for _ in range(5):
        assert (await _attempt(rig, "nurse1", "wrong password"))[0] == 401
    # Now even the right password is refused, unchecked, and the form says for how long.
    status, page, retry_after = await _attempt(rig, "nurse1", PASSWORDS["nurse1"])
    assert (status, retry_after) == (429, "60")
    assert "Too many failed logins: try again in 60 s." in page
    assert rig.pipeline.counters.get("web.refused", "login_throttled") == 1
    assert rig.pipeline.counters.get("web.logins", "refused") == 5
    # Another login from the same place is not held back by this one.
    await rig.login("viewer1")
    await rig.clock.advance(30)
    status, _, retry_after = await _attempt(rig, "nurse1", PASSWORDS["nurse1"])
    assert (status, retry_after) == (429, "30")
    await rig.clock.advance(30)
    await rig.login("nurse1")
    # A success starts the count again: four more mistakes do not lock it.
    for _ in range(4):
        assert (await _attempt(rig, "nurse1", "wrong password"))[0] == 401
    await rig.login("nurse1")


async def test_many_failures_from_one_address_hold_back_every_login_from_it(tmp_path: Path) -> None:
    async with _rig(tmp_path, web={"login_failures_per_address": 3}) as rig:
        for name in ("nobody1", "nobody2", "nurse1"):  # a spray of names, known or not
            assert (await _attempt(rig, name, "guess"))[0] == 401
        status, page, _ = await _attempt(rig, "admin1", PASSWORDS["admin1"])
        assert status == 429
        assert "try again in 60 s" in page
        assert rig.pipeline.counters.get("web.refused", "login_throttled") == 1
        await rig.clock.advance(60)
        await rig.login("admin1")


async def test_the_bed_page_shows_what_was_sent_to_whom(tmp_path: Path) -> None:
    """With routes: each notice about the bed's alerts, its receiver, and where it stands;
    waiting while the receiver is away, delivered (with its answer) once it took it."""
    hook = WebhookServer(b"k")
    more = {
        "routing": {"group_window_s": 0},
        "receivers": [
            {"name": "nurse", "type": "webhook", "url": f"{hook.url}/n", "secret": {"value": "k"}},
        ],
        "routes": [{"name": "all", "levels": [["nurse"]], "repeat_after_s": 0}],
    }
    async with _rig(tmp_path, more=more) as rig:
        await rig.login("nurse1")
        alert_id = await rig.open_alert("b1", "HYPOTENSION")
        await rig.pipeline.writer.flush()
        page = await (await rig.client.get("/bed/b1")).text()
        [row] = re.findall(r"<tr data-delivery=.*?</tr>", _section(page, "sent"), re.DOTALL)
        shown = unescape(re.sub(r"<[^>]+>", " ", row))
        assert "nurse" in shown
        assert "alert · level 0" in shown
        assert alert_id in shown
        assert "waiting · attempts: 0" in shown

        delivery = next(s for s in rig.pipeline.services if isinstance(s, DeliveryService))
        await hook.start()
        task = asyncio.create_task(delivery.run(), name="test.delivery")
        try:
            await until(lambda: delivery.pending() == 0, 20, "the notice delivered")
            await rig.pipeline.writer.flush()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await hook.stop()
        page = await (await rig.client.get("/bed/b1")).text()
        shown = unescape(re.sub(r"<[^>]+>", " ", _section(page, "sent")))
        assert "delivered · attempts: 1 · last answer: HTTP 200: ok" in shown


async def test_without_routes_the_bed_page_has_no_sent_section(rig: Rig) -> None:
    await rig.login("nurse1")
    page = await (await rig.client.get("/bed/b1")).text()
    assert 'id="sent"' not in page


def _receipt(key: bytes, **fields: Any) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(fields).encode()
    return body, {"X-Wardd-Signature": signature(key, body), "Content-Type": "application/json"}


async def test_a_receipt_that_a_person_accepted_acknowledges_the_alert_and_is_shown(tmp_path: Path) -> None:
    """A webhook gateway's signed receipt: ``read`` is journaled, ``accepted`` acknowledges
    the delivery's alerts via ``receipt``; forgeries and strangers are refused, counted."""
    more = {
        "routing": {"group_window_s": 0},
        "receivers": [
            {"name": "nurse", "type": "webhook", "url": "http://127.0.0.1:9/n", "secret": {"value": "k"}},
            {"name": "phone", "type": "webhook", "url": "http://127.0.0.1:9/p", "secret": {"value": "p"}},
        ],
        "routes": [{"name": "all", "levels": [["nurse", "phone"]], "repeat_after_s": 0}],
    }
    async with _rig(tmp_path, more=more) as rig:
        await rig.login("nurse1")
        alert_id = await rig.open_alert("b1", "HYPOTENSION")
        await rig.pipeline.writer.flush()
        notices = [e for e in rig.pipeline.store.journal() if e.get("what") == "notice"]
        delivery = next(e["delivery"] for e in notices if e["receiver"] == "nurse")
        other = next(e["delivery"] for e in notices if e["receiver"] == "phone")

        async def post(receiver: str, key: bytes, **fields: Any) -> tuple[int, dict[str, Any]]:
            body, headers = _receipt(key, **fields)
            response = await rig.client.post(f"/api/receipts/{receiver}", data=body, headers=headers)
            return response.status, await response.json()

        refusals = [
            (
                await post("nurse", b"wrong", delivery=delivery, status="accepted", by="nurse-a"),
                401,
                "bad_signature",
            ),
            (
                await post("pager", b"k", delivery=delivery, status="accepted", by="nurse-a"),
                404,
                "unknown_receiver",
            ),
            (
                await post("nurse", b"k", delivery=other, status="accepted", by="nurse-a"),
                404,
                "unknown_delivery",
            ),
            (
                await post("nurse", b"k", delivery=delivery, status="declined", by="nurse-a"),
                400,
                "bad_receipt",
            ),
            (await post("nurse", b"k", delivery=delivery, status="read", by="a b"), 400, "bad_receipt"),
            (
                await post("nurse", b"k", delivery=str(delivery), status="read", by="nurse-a"),
                400,
                "bad_receipt",
            ),
        ]
        for (status, answer), expected_status, reason in refusals:
            assert (status, answer["reason"]) == (expected_status, reason), answer
        counters = rig.pipeline.counters
        assert counters.total("delivery.receipts_refused") == len(refusals)
        assert [a.state.value for a in rig.pipeline.alerts.book.open_alerts()] == ["active"]

        assert await post("nurse", b"k", delivery=delivery, status="read", by="nurse-a") == (
            200,
            {"ok": True, "delivery": delivery, "status": "read", "acknowledged": []},
        )
        assert [a.state.value for a in rig.pipeline.alerts.book.open_alerts()] == ["active"]
        status, answer = await post(
            "nurse", b"k", delivery=delivery, status="accepted", by="nurse-a", name="A. Nurse"
        )
        assert (status, answer["acknowledged"]) == (200, [alert_id])
        [alert] = rig.pipeline.alerts.book.open_alerts()
        assert (alert.state.value, alert.acked_by, alert.acked_name) == (
            "acknowledged",
            "nurse-a",
            "A. Nurse",
        )
        journal = rig.pipeline.store.journal()
        assert [e["status"] for e in journal if e.get("what") == "receipt"] == ["read", "accepted"]
        ack = next(e for e in journal if e.get("via") == "receipt")
        assert ack["who"] == "nurse-a"
        # Accepted again (a repeat of the gateway's): nothing more to acknowledge.
        status, answer = await post("nurse", b"k", delivery=delivery, status="accepted", by="nurse-a")
        assert (status, answer["acknowledged"]) == (200, [])

        page = await (await rig.client.get("/bed/b1")).text()
        shown = unescape(re.sub(r"<[^>]+>", " ", _section(page, "sent")))
        assert "waiting · attempts: 0 · accepted by nurse-a" in shown  # the last receipt, the repeat


async def test_a_receipt_for_a_delivery_made_before_a_restart_is_answered(tmp_path: Path) -> None:
    """The daemon restarted between a notification and the person's receipt for it: the
    delivery is found in the store by its number, and ``accepted`` acknowledges its alert.
    A number no delivery had, or beyond what the store holds, is refused as before."""
    more = {
        "routing": {"group_window_s": 0},
        "receivers": [
            {"name": "nurse", "type": "webhook", "url": "http://127.0.0.1:9/n", "secret": {"value": "k"}},
        ],
        "routes": [{"name": "all", "levels": [["nurse"]], "repeat_after_s": 0}],
    }
    async with _rig(tmp_path, more=more) as rig:
        alert_id = await rig.open_alert("b1", "HYPOTENSION")
        await rig.pipeline.writer.flush()
        [delivery] = [e["delivery"] for e in rig.pipeline.store.journal() if e.get("what") == "notice"]

    async with _rig(tmp_path, more=more) as rig:

        async def post(**fields: Any) -> tuple[int, dict[str, Any]]:
            body, headers = _receipt(b"k", **fields)
            response = await rig.client.post("/api/receipts/nurse", data=body, headers=headers)
            return response.status, await response.json()

        for number, status, reason in (
            (delivery + 1, 404, "unknown_delivery"),
            (0, 400, "bad_receipt"),
            (2**63, 400, "bad_receipt"),
        ):
            answer = await post(delivery=number, status="accepted", by="nurse-a")
            assert (answer[0], answer[1]["reason"]) == (status, reason), answer
        assert [a.state.value for a in rig.pipeline.alerts.book.open_alerts()] == ["active"]
        assert await post(delivery=delivery, status="accepted", by="nurse-a") == (
            200,
            {"ok": True, "delivery": delivery, "status": "accepted", "acknowledged": [alert_id]},
        )
        [alert] = rig.pipeline.alerts.book.open_alerts()
        assert (alert.id, alert.state.value, alert.acked_by) == (alert_id, "acknowledged", "nurse-a")


async def test_without_routes_receipts_are_refused(rig: Rig) -> None:
    body, headers = _receipt(b"k", delivery=1, status="accepted", by="nurse-a")
    response = await rig.client.post("/api/receipts/nurse", data=body, headers=headers)
    assert response.status == 404
    assert rig.pipeline.counters.get("web.refused", "no_receipts") == 1


async def test_a_receipt_over_the_size_limit_is_refused_whether_declared_or_streamed(tmp_path: Path) -> None:
    """A receipt of 4,096 bytes is read; one byte more is refused with 413 and the limit,
    before any signature check: by its declared length, or, sent in chunks without one,
    once one byte past the limit has been read."""
    more = {
        "receivers": [
            {"name": "nurse", "type": "webhook", "url": "http://127.0.0.1:9/n", "secret": {"value": "k"}}
        ],
        "routes": [{"name": "all", "levels": [["nurse"]], "repeat_after_s": 0}],
    }

    async def chunks(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    async with _rig(tmp_path, more=more) as rig:
        at_limit = b" " * (MAX_RECEIPT_BYTES - 2) + b"{}"
        answer = await rig.client.post("/api/receipts/nurse", data=at_limit)
        assert answer.status != 413, "at the limit: read, and refused for what it says"
        for body in (at_limit + b" ", b" " * 10 * MAX_RECEIPT_BYTES):
            for data in (body, chunks(body)):
                response = await rig.client.post("/api/receipts/nurse", data=data)
                assert response.status == 413
                assert (await response.json())["error"] == f"a receipt is at most {MAX_RECEIPT_BYTES} bytes"
        assert rig.pipeline.counters.get("web.refused", "too_large") == 4
