"""The ward page in a real browser: Debian's headless chromium driven through its chromedriver.

``wardd run`` runs as a real process beside a private mosquitto, with the page on a free
port; vital signs go in over MQTT as a monitor would send them. Nothing here downloads a
browser: the binaries are the ones ``scripts/setup`` installs with apt.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from daemon.web.passwords import hash_password
from tests.helpers import write_ward_config
from tests.servers import Mosquitto, free_port
from tests.ward_load import WarddProcess, poll_until

pytestmark = pytest.mark.integration  # a broker, the daemon and a browser as processes

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WARD = "haem"
USERS = {
    # login: (role, display name, language, password)
    "a.martin": ("nurse", "Anne Martin", "en", "nurse password"),
    "p.viewer": ("viewer", "Paul Viewer", "en", "viewer password"),
    "c.dupont": ("nurse", "Claire Dupont", "fr", "mot de passe"),
}
PAGE_WITHIN_S = 1.0  # issue 14: an alert on the page within 1 s of its transition on MQTT


@dataclass
class Ward:
    """The daemon, its broker, its page's address and a recorder of its alert transitions."""

    daemon: WarddProcess
    broker: Mosquitto
    prefix: str
    url: str
    store: Path
    transitions: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    retained: dict[str, dict[str, Any]] = field(default_factory=dict)


def _config(
    tmp_path: Path, broker: Mosquitto, prefix: str, port: int, web_tables: str = "", mqtt_lines: str = ""
) -> Path:
    """The daemon's config; ``web_tables`` adds tables under ``[web]`` (e.g. ``[web.sound]``),
    ``mqtt_lines`` settings under ``[mqtt]``."""
    users = "".join(
        f"""
[[web.users]]
name = "{name}"
role = "{role}"
display_name = "{display}"
language = "{language}"
password_hash = "{hash_password(password, log2_n=10)}"
"""
        for name, (role, display, language, password) in USERS.items()
    )
    return write_ward_config(
        tmp_path / "ward.toml",
        mqtt_url=broker.url,
        prefix=prefix,
        ward=WARD,
        beds=["12", "14"],
        start=(datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0),
        mqtt=mqtt_lines,
        tables=f"""
[web]
enabled = true
port = {port}
{web_tables}
{users}""",
    )


def _record(ward: Ward) -> paho.Client:
    """A station that records each alert transition (with its arrival time) and the retained states."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{ward.prefix}-station")
    subscribed = threading.Event()

    def on_connect(c: paho.Client, *_: Any) -> None:
        c.subscribe(f"{ward.prefix}/{WARD}/bed/+/alerts", qos=1)
        c.subscribe(f"{ward.prefix}/{WARD}/bed/+/alerts/+", qos=1)
        subscribed.set()

    def on_message(_: paho.Client, __: Any, message: paho.MQTTMessage) -> None:
        if message.topic.count("/") == 4:
            ward.transitions.append((time.time(), json.loads(message.payload)))
        elif message.payload:
            ward.retained[message.topic.rsplit("/", 1)[-1]] = json.loads(message.payload)

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(ward.broker.host, ward.broker.port)
    client.loop_start()
    assert subscribed.wait(10)
    return client


@contextmanager
def running_ward(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str, web_tables: str = "", mqtt_lines: str = ""
) -> Iterator[Ward]:
    """``wardd run`` with its page, and a station recording its alert transitions."""
    port = free_port()
    config = _config(tmp_path, mosquitto, prefix, port, web_tables, mqtt_lines)
    daemon = WarddProcess(config, tmp_path / "wardd.log")
    daemon.start()
    found = Ward(daemon, mosquitto, prefix, f"http://127.0.0.1:{port}/", tmp_path / "state" / "wardd.sqlite")
    station = _record(found)
    try:
        daemon.wait_connected()
        poll_until(lambda: "ward page on" in daemon.output(), 30, "the ward page")
        yield found
    finally:
        station.loop_stop()
        station.disconnect()
        daemon.terminate()
        daemon.close()


@pytest.fixture
def ward(tmp_path: Path, mosquitto: Mosquitto, prefix: str) -> Iterator[Ward]:
    with running_ward(tmp_path, mosquitto, prefix) as found:
        yield found


def _browser(language: str = "en") -> WebDriver:
    if shutil.which(CHROMEDRIVER) is None or shutil.which(CHROMIUM) is None:
        pytest.fail("chromium and chromium-driver are missing: run scripts/setup (it installs them with apt)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": language})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    driver = _browser()
    try:
        yield driver
    finally:
        driver.quit()


def _login(driver: WebDriver, ward: Ward, user: str) -> None:
    driver.get(ward.url)
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(USERS[user][3])
    driver.find_element(By.ID, "login").click()
    poll_until(lambda: _live(driver), 10, f"the ward page live for {user}")


def _live(driver: WebDriver) -> bool:
    return bool(driver.execute_script("return document.getElementById('status')?.classList.contains('live')"))


def _tiles(driver: WebDriver) -> list[str]:
    return [
        tile.get_attribute("data-bed") or "" for tile in driver.find_elements(By.CSS_SELECTOR, "article.tile")
    ]


def _publish_fever(ward: Ward, bed: str = "12", temp_c: float = 39.2, sbp_mmhg: float = 118) -> None:
    """Four samples 50 s apart ending now: two abnormal samples over the 120 s onset delay
    (a systolic pressure below 90 mmHg makes it HYPOTENSION, 60 s onset delay, as well)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{ward.prefix}-monitor")
    client.connect(ward.broker.host, ward.broker.port)
    client.loop_start()
    try:
        for i in range(4):
            ts = datetime.now(UTC) - timedelta(seconds=150 - 50 * i)
            payload = {
                "ts": ts.isoformat().replace("+00:00", "Z"),
                "device": f"monitor-{bed}",
                "obs": [
                    {"code": "MDC_TEMP_BODY", "value": temp_c, "unit": "Cel"},
                    {"code": "MDC_PRESS_BLD_NONINV_SYS", "value": sbp_mmhg, "unit": "mm[Hg]"},
                    {"code": "MDC_PRESS_BLD_NONINV_DIA", "value": 72, "unit": "mm[Hg]"},
                    {"code": "MDC_ECG_HEART_RATE", "value": 96, "unit": "/min"},
                    {"code": "MDC_PULS_OXIM_SAT_O2", "value": 97, "unit": "%"},
                    {"code": "MDC_RESP_RATE", "value": 18, "unit": "/min"},
                ],
            }
            info = client.publish(f"{ward.prefix}/{WARD}/bed/{bed}/vitals", json.dumps(payload), qos=1)
            info.wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


# Records, in the page, when each alert first appears (browser wall clock, ms).
WATCH_ALERTS = """
window.seenAlerts = {};
const ward = document.getElementById('ward');
const mark = () => document.querySelectorAll('li.alert').forEach(li => {
  if (!(li.dataset.alertId in window.seenAlerts)) window.seenAlerts[li.dataset.alertId] = Date.now();
});
mark();
new MutationObserver(mark).observe(ward, {childList: true, subtree: true});
"""


def _journal(store: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(store) as db:
        return [json.loads(row[0]) for row in db.execute("SELECT entry FROM journal ORDER BY seq")]


def _fever(ward: Ward) -> tuple[float, dict[str, Any]] | None:
    return next(
        (
            (t, body)
            for t, body in ward.transitions
            if body["condition"] == "FEVER" and body["phase"] == "start"
        ),
        None,
    )


def test_the_ward_live_and_a_nurses_acknowledgement(ward: Ward, browser: WebDriver) -> None:
    _login(browser, ward, "a.martin")
    poll_until(lambda: sorted(_tiles(browser)) == ["12", "14"], 10, "a tile per bed")
    assert "Anne Martin" in browser.find_element(By.ID, "who-name").text

    browser.execute_script(WATCH_ALERTS)
    _publish_fever(ward)
    poll_until(lambda: _fever(ward) is not None, 10, "FEVER on MQTT")
    on_mqtt, fever = _fever(ward) or (0.0, {})
    alert_id = fever["id"]
    poll_until(
        lambda: browser.execute_script(f"return window.seenAlerts['{alert_id}'] !== undefined"),
        5,
        "FEVER on the page",
        every_s=0.02,
    )
    on_page = browser.execute_script(f"return window.seenAlerts['{alert_id}']") / 1000
    delay_s = on_page - on_mqtt
    print(f"\nFEVER on the page {delay_s * 1000:+.0f} ms after its transition on MQTT")
    assert delay_s < PAGE_WITHIN_S

    # The feverish bed is now the most urgent: first, and standing out.
    assert _tiles(browser)[0] == "12"
    first = browser.find_element(By.CSS_SELECTOR, "article.tile")
    assert "urgent" in (first.get_attribute("class") or "")
    assert "level-medium" in (first.get_attribute("class") or "")
    item = browser.find_element(By.CSS_SELECTOR, f"li.alert[data-alert-id='{alert_id}']")
    assert "p-medium" in (item.get_attribute("class") or "")
    assert "active" in item.text
    assert "39.2" in first.text  # the latest temperature

    # Acknowledge from the page: the page, the retained MQTT state and the journal change.
    item.find_element(By.CSS_SELECTOR, "button.ack").click()
    poll_until(
        lambda: (
            browser.execute_script(
                f"return document.querySelector(\"li.alert[data-alert-id='{alert_id}']\")?.dataset.state"
            )
            == "acknowledged"
        ),
        5,
        "the acknowledged state on the page",
    )
    poll_until(
        lambda: ward.retained.get(alert_id, {}).get("state") == "acknowledged", 5, "the retained MQTT state"
    )
    retained = ward.retained[alert_id]
    assert (retained["acked_by"], retained["acked_name"]) == ("a.martin", "Anne Martin")
    [ack] = [line for line in _journal(ward.store) if line.get("id") == alert_id and line["what"] == "ack"]
    assert (ack["who"], ack["name"], ack["via"]) == ("a.martin", "Anne Martin", "web")
    text = browser.find_element(By.CSS_SELECTOR, f"li.alert[data-alert-id='{alert_id}']").text
    assert "acknowledged by Anne Martin" in text

    # A viewer sees the same ward without a button, and its acknowledgement is refused.
    viewer = _browser()
    try:
        _login(viewer, ward, "p.viewer")
        poll_until(
            lambda: len(viewer.find_elements(By.CSS_SELECTOR, "li.alert")) >= 1, 5, "alerts for the viewer"
        )
        assert viewer.find_elements(By.CSS_SELECTOR, "button.ack") == []
        status = viewer.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            const page = JSON.parse(document.getElementById('page-data').textContent);
            fetch('/api/alerts/' + arguments[0] + '/ack', {method: 'POST', headers: {'X-CSRF-Token': page.csrf}})
              .then(r => done(r.status));
            """,
            alert_id,
        )
        assert status == 403
        poll_until(lambda: "refused (role)" in ward.daemon.output(), 5, "the refusal in the log")
    finally:
        viewer.quit()


def test_the_french_user_reads_french(ward: Ward) -> None:
    driver = _browser("fr-FR,fr")
    try:
        driver.get(ward.url)
        assert "Connexion à la page du service" in driver.find_element(By.TAG_NAME, "h1").text
        _login(driver, ward, "c.dupont")
        poll_until(lambda: len(_tiles(driver)) == 2, 10, "the tiles")
        _publish_fever(ward, bed="14")
        poll_until(lambda: "Fièvre" in driver.find_element(By.ID, "ward").text, 10, "the fever in French")
        text = driver.find_element(By.TAG_NAME, "body").text
        for french in (
            "Se déconnecter",
            "En direct",
            "jour 3",
            "µg/jour",
            "MOYENNE",
            "Acquitter",
            "depuis",
            "Son coupé",
            "Activer le son",
        ):
            assert french in text, french
        for english in ("Log out", "Acknowledge", "µg/day", "Sound off", "Enable sound"):
            assert english not in text, english
    finally:
        driver.quit()


def test_a_stopped_daemon_shows_at_once_and_the_page_recovers(ward: Ward, browser: WebDriver) -> None:
    _login(browser, ward, "a.martin")
    poll_until(lambda: len(_tiles(browser)) == 2, 10, "the tiles")
    banner = browser.find_element(By.ID, "banner")
    assert not banner.is_displayed()

    stopped = time.monotonic()
    assert ward.daemon.terminate() == 0
    poll_until(banner.is_displayed, 5, "the lost-connection banner", every_s=0.02)
    shown_s = time.monotonic() - stopped
    print(f"\nlost connection shown {shown_s * 1000:.0f} ms after SIGTERM (shutdown included)")
    assert "NOT up to date" in banner.text
    assert "stale" in (browser.find_element(By.TAG_NAME, "body").get_attribute("class") or "")
    assert "live" not in (browser.find_element(By.ID, "status").get_attribute("class") or "")

    ward.daemon.start()
    ward.daemon.wait_connected()
    back = time.monotonic()
    poll_until(lambda: _live(browser) and not banner.is_displayed(), 15, "the page back live")
    print(f"page live again {(time.monotonic() - back) * 1000:.0f} ms after the daemon reconnected")
    assert browser.current_url == ward.url, "the login outlives the restart"
    assert sorted(_tiles(browser)) == ["12", "14"]


def test_a_lost_broker_is_one_alert_above_the_beds_that_a_nurse_acknowledges(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str, browser: WebDriver
) -> None:
    """The broker serves every bed: its loss is the ward's own alert, shown once above the
    tiles (not on each), acknowledged there, and gone when the broker is back."""
    lines = "alert_after_s = 1.0\nreconnect_min_s = 0.1\nreconnect_max_s = 0.5"
    with running_ward(tmp_path, mosquitto, prefix, mqtt_lines=lines) as ward:
        _login(browser, ward, "a.martin")
        poll_until(lambda: len(_tiles(browser)) == 2, 10, "the tiles")
        own = browser.find_element(By.ID, "ward-own")
        assert not own.is_displayed()
        mosquitto.stop()
        poll_until(own.is_displayed, 30, "the ward's own alert")
        assert f"Every bed of ward {WARD}" in own.text
        assert "BROKER_UNAVAILABLE" in own.text
        assert "MQTT broker unreachable" in own.text
        tiles = browser.find_elements(By.CSS_SELECTOR, "article.tile")
        assert all("BROKER_UNAVAILABLE" not in tile.text for tile in tiles), "not repeated on each bed"
        recent = browser.find_element(By.ID, "recent")
        poll_until(lambda: f"{WARD} " in recent.text and "BROKER_UNAVAILABLE" in recent.text, 10, "the line")
        assert f"_{WARD}" not in recent.text
        own.find_element(By.CSS_SELECTOR, "button.ack").click()
        poll_until(lambda: not own.find_elements(By.CSS_SELECTOR, "button.ack"), 10, "the acknowledgement")
        assert "Anne Martin" in own.text
        mosquitto.start()
        poll_until(lambda: not own.is_displayed(), 30, "the alert ended with the broker back")


# Records, in the bed page, when each timeline line first appears (browser wall clock, ms).
WATCH_TIMELINE = """
window.seenLines = [];
const timeline = document.getElementById('timeline');
new MutationObserver(() => timeline.querySelectorAll('li.t').forEach(li => {
  const key = li.dataset.alertId + ' ' + li.dataset.phase;
  if (!window.seenLines.some(seen => seen.key === key)) window.seenLines.push({key: key, at: Date.now()});
})).observe(timeline, {childList: true});
"""


def test_a_bed_page_from_the_ward_live_timeline_and_acknowledgement(ward: Ward, browser: WebDriver) -> None:
    _login(browser, ward, "a.martin")
    poll_until(lambda: sorted(_tiles(browser)) == ["12", "14"], 10, "a tile per bed")
    browser.find_element(By.CSS_SELECTOR, "article.tile[data-bed='12'] a.bed-id").click()
    poll_until(lambda: browser.current_url.endswith("/bed/12") and _live(browser), 10, "bed 12's page live")
    assert _tiles(browser) == ["12"]  # only this bed's tile
    browser.execute_script(WATCH_TIMELINE)

    _publish_fever(ward)
    poll_until(lambda: _fever(ward) is not None, 10, "FEVER on MQTT")
    on_mqtt, fever = _fever(ward) or (0.0, {})
    alert_id = fever["id"]
    key = f"{alert_id} start"
    poll_until(
        lambda: browser.execute_script(f"return window.seenLines.some(s => s.key === '{key}')"),
        5,
        "FEVER's start in the bed's timeline",
        every_s=0.02,
    )
    on_page = browser.execute_script(f"return window.seenLines.find(s => s.key === '{key}').at") / 1000
    delay_s = on_page - on_mqtt
    print(f"\nFEVER in the bed's timeline {delay_s * 1000:+.0f} ms after its transition on MQTT")
    assert delay_s < PAGE_WITHIN_S
    line = browser.find_element(
        By.CSS_SELECTOR, f"#timeline li[data-alert-id='{alert_id}'][data-phase='start']"
    )
    assert "p-medium" in (line.get_attribute("class") or "")
    assert "FEVER" in line.text

    # Acknowledge on the bed page: its timeline says who, by name.
    poll_until(
        lambda: bool(
            browser.find_elements(By.CSS_SELECTOR, f"li.alert[data-alert-id='{alert_id}'] button.ack")
        ),
        5,
        "the alert with its button on the bed page",
    )
    browser.find_element(By.CSS_SELECTOR, f"li.alert[data-alert-id='{alert_id}'] button.ack").click()
    ack_line = f"#timeline li[data-alert-id='{alert_id}'][data-phase='ack']"
    poll_until(lambda: bool(browser.find_elements(By.CSS_SELECTOR, ack_line)), 5, "the ack in the timeline")
    assert "acknowledged by Anne Martin (a.martin)" in browser.find_element(By.CSS_SELECTOR, ack_line).text
    first = browser.find_element(By.CSS_SELECTOR, "#timeline li.t")
    assert first.get_attribute("data-phase") == "ack"  # newest first
    # Loaded again, the timeline comes from the journal, and says where it came from.
    browser.refresh()
    poll_until(lambda: _live(browser), 10, "the bed page live again")
    text = browser.find_element(By.CSS_SELECTOR, ack_line).text
    assert "acknowledged by Anne Martin (a.martin) via the ward page" in text
    assert "a.martin" in browser.find_element(By.ID, "journal").text

    # And on the ward page.
    browser.find_element(By.ID, "back").click()
    poll_until(lambda: _live(browser) and "12" in _tiles(browser), 10, "the ward page again")
    item = browser.find_element(By.CSS_SELECTOR, f"li.alert[data-alert-id='{alert_id}']")
    assert item.get_attribute("data-state") == "acknowledged"
    assert "acknowledged by Anne Martin" in item.text
