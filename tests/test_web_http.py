"""The ward page over HTTP, without a browser: logins, sessions, CSRF, roles, the assets.

The page is the daemon's own (``build`` with ``[web]`` enabled), served on a loopback
port by aiohttp's test server, on a manual clock so that a session's end is driven,
not waited for.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from daemon.app import Pipeline, build
from daemon.clock import ManualClock
from daemon.config import parse
from daemon.events import AlertCandidate, Priority
from daemon.web.passwords import hash_password
from daemon.web.server import STATIC_DIR, WardPage
from tests.helpers import committing

pytestmark = pytest.mark.integration  # a real HTTP server on a loopback port

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
TTL_S = 3600.0
PASSWORDS = {"nurse1": "nurse password", "viewer1": "viewer password", "admin1": "admin password"}


def _config(tmp_path: Path) -> Any:
    return parse(
        {
            "daemon": {"state_dir": str(tmp_path / "state")},
            "influx": {"api": "none"},
            "web": {
                "enabled": True,
                "port": 0,
                "session_ttl_s": TTL_S,
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
            "beds": [
                {
                    "ward": "w1",
                    "id": "b1",
                    "patient": "p-1",
                    "weight_kg": 63,
                    "height_cm": 165,
                    "protocol_start": (T0 - timedelta(days=1)).isoformat(),
                }
            ],
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

    async def open_alert(self) -> str:
        """A high-priority alert on bed b1; its id."""
        candidate = AlertCandidate(
            condition="HYPOTENSION", ward="w1", bed="b1", time=T0, present=True, priority=Priority.HIGH
        )
        [transition] = await self.pipeline.alerts.handle([candidate])
        return transition.alert.id


def _field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]+)"', html)
    assert found is not None, html[:500]
    return found[1]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = ManualClock(T0)
    pipeline = build(_config(tmp_path), clock=clock)
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
