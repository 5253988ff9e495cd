"""The ward page's alarm sound in a real browser: what the page schedules, not what it sounds like.

The page logs every burst it schedules on its AudioContext in ``window.wardSound.played``
(``{priority, pulses, at, alerts}``, ``at`` on the browser's clock); these tests read that
log. ``[web.sound]`` is shortened so that repeats and "audio paused" take seconds. The
daemon, its broker and the browser are the ones of ``tests/test_web_browser.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.servers import Mosquitto
from tests.test_web_browser import (
    WATCH_ALERTS,
    Ward,
    _login,
    _publish_fever,
    browser,  # noqa: F401 (a fixture)
    running_ward,
)
from tests.ward_load import poll_until

pytestmark = pytest.mark.integration  # a broker, the daemon and a browser as processes

PAUSE_S = 4.0
MEDIUM_REPEAT_S = 2.0
HIGH_REPEAT_S = 1.5
SOUND = f"""
[web.sound]
pulse_s = 0.05
pulse_gap_s = 0.05
high_group_gap_s = 0.1
high_repeat_s = {HIGH_REPEAT_S}
medium_repeat_s = {MEDIUM_REPEAT_S}
audio_paused_s = {PAUSE_S}
"""
AT_ONCE_S = 0.3  # "heard at once": well under either repeat interval


@pytest.fixture
def ward(tmp_path: Path, mosquitto: Mosquitto, prefix: str) -> Iterator[Ward]:
    with running_ward(tmp_path, mosquitto, prefix, SOUND) as found:
        yield found


def _played(driver: WebDriver) -> list[dict[str, Any]]:
    played: list[dict[str, Any]] = driver.execute_script("return window.wardSound.played")
    return played


def _now_ms(driver: WebDriver) -> float:
    return float(driver.execute_script("return Date.now()"))


def _sound_state(driver: WebDriver) -> str:
    return driver.find_element(By.ID, "sound-state").text


def _enable_sound(driver: WebDriver) -> None:
    assert _sound_state(driver) == "Sound off"
    driver.find_element(By.ID, "sound-enable").click()
    poll_until(lambda: _sound_state(driver) == "Sound on", 5, "sound on in the header")
    assert driver.execute_script("return window.wardSound.enabled") is True
    assert not driver.find_element(By.ID, "sound-enable").is_displayed()


def _alert_ids(driver: WebDriver, priority: str) -> list[str]:
    """The ids of the open alerts of this priority on the page, once there is one."""
    selector = f"li.alert.p-{priority}"
    poll_until(lambda: bool(driver.find_elements(By.CSS_SELECTOR, selector)), 10, f"a {priority} alert")
    return sorted(
        item.get_attribute("data-alert-id") or "" for item in driver.find_elements(By.CSS_SELECTOR, selector)
    )


def _state(driver: WebDriver, alert_id: str) -> str | None:
    state: str | None = driver.execute_script(
        f"return document.querySelector(\"li.alert[data-alert-id='{alert_id}']\")?.dataset.state"
    )
    return state


def _acknowledge(driver: WebDriver, alert_id: str) -> float:
    """Acknowledges from the page; the browser's clock once the page shows it acknowledged."""
    driver.find_element(By.CSS_SELECTOR, f"li.alert[data-alert-id='{alert_id}'] button.ack").click()
    poll_until(
        lambda: _state(driver, alert_id) == "acknowledged", 5, f"{alert_id} acknowledged", every_s=0.02
    )
    return _now_ms(driver)


def test_the_most_urgent_alert_sounds_its_pattern_until_acknowledged(ward: Ward, browser: WebDriver) -> None:  # noqa: F811
    _login(browser, ward, "a.martin")
    _enable_sound(browser)
    assert _played(browser) == [], "nothing sounds without an alert"

    # MEDIUM: 3 pulses, repeated every medium_repeat_s while it lasts.
    _publish_fever(ward, bed="12")
    # FEVER, and CRS_SUSPECTED from the same fever: both medium, one signal.
    poll_until(lambda: len(_played(browser)) >= 2, 10, "a medium burst and its repeat")
    mediums = _alert_ids(browser, "medium")
    assert any("FEVER" in alert_id for alert_id in mediums)
    first, second = _played(browser)[:2]
    assert (first["priority"], first["pulses"]) == ("medium", 3)
    assert set(first["alerts"]) <= set(mediums)
    assert (second["priority"], second["pulses"]) == ("medium", 3)
    assert MEDIUM_REPEAT_S - 0.1 <= (second["at"] - first["at"]) / 1000 < MEDIUM_REPEAT_S + 0.5

    # HIGH on another bed: 10 pulses, heard at once, and it alone sounds while it lasts.
    browser.execute_script(WATCH_ALERTS)
    _publish_fever(ward, bed="14", temp_c=36.8, sbp_mmhg=80)
    [hypotension] = _alert_ids(browser, "high")
    poll_until(lambda: any(e["priority"] == "high" for e in _played(browser)), 5, "a high burst")
    seen_ms = browser.execute_script(f"return window.seenAlerts['{hypotension}']")
    played = _played(browser)
    start = next(i for i, e in enumerate(played) if e["priority"] == "high")
    assert (played[start]["pulses"], played[start]["alerts"]) == (10, [hypotension])
    assert abs(played[start]["at"] - seen_ms) / 1000 < AT_ONCE_S, "not at once: it waited for a repeat"
    poll_until(lambda: len(_played(browser)) >= start + 4, 10, "three repeats of the high burst")
    since_high = _played(browser)[start:]
    assert [e["priority"] for e in since_high] == ["high"] * len(since_high), "the medium one sounded too"
    # Three repeats span 4.5 s: the medium one (every 2 s) would have come in between.
    assert (since_high[3]["at"] - since_high[0]["at"]) / 1000 >= 3 * HIGH_REPEAT_S - 0.1

    # Acknowledging the high alert stops it: the medium one sounds again, at once.
    acked_ms = _acknowledge(browser, hypotension)
    poll_until(
        lambda: len([e for e in _played(browser) if e["at"] > acked_ms]) >= 2, 10, "two bursts after the ack"
    )
    played = _played(browser)
    last_high = max(i for i, e in enumerate(played) if e["priority"] == "high")
    assert played[last_high]["at"] <= acked_ms, "the high burst went on after its acknowledgement"
    after = played[last_high + 1 :]
    assert [e["priority"] for e in after] == ["medium"] * len(after), after
    assert (after[0]["at"] - acked_ms) / 1000 < AT_ONCE_S, "the medium one did not come back at once"
    assert _state(browser, hypotension) == "acknowledged"

    # Acknowledging the last ones silences the page.
    for alert_id in _alert_ids(browser, "medium"):
        acked_ms = _acknowledge(browser, alert_id)
    time.sleep(MEDIUM_REPEAT_S * 1.5)  # an absence: wait past the repeat that would have come
    assert [e for e in _played(browser) if e["at"] > acked_ms] == []


def test_audio_paused_silences_for_its_time_and_the_alert_stays_unacknowledged(
    ward: Ward,
    browser: WebDriver,  # noqa: F811
) -> None:
    _login(browser, ward, "a.martin")
    _enable_sound(browser)
    _publish_fever(ward, bed="12")
    poll_until(lambda: len(_played(browser)) >= 1, 10, "the medium burst")
    mediums = _alert_ids(browser, "medium")

    browser.find_element(By.ID, "audio-pause").click()
    paused_ms = _now_ms(browser)
    before = len(_played(browser))
    assert _sound_state(browser) in {"Audio paused 0:04", "Audio paused 0:03"}
    assert browser.find_element(By.ID, "audio-pause").text == "Resume audio"
    poll_until(lambda: _sound_state(browser) == "Audio paused 0:02", 4, "the countdown going down")

    # A new HIGH alert during the pause: the pause holds (documented), the alerts stay as they were.
    _publish_fever(ward, bed="14", temp_c=36.8, sbp_mmhg=80)
    [hypotension] = _alert_ids(browser, "high")
    poll_until(
        lambda: not browser.execute_script("return window.wardSound.paused"),
        PAUSE_S + 2,
        "the end of the pause",
    )
    resumed_ms = _now_ms(browser)
    assert PAUSE_S - 0.1 <= (resumed_ms - paused_ms) / 1000 < PAUSE_S + 1.0
    during = [e for e in _played(browser)[before:] if e["at"] < paused_ms + (PAUSE_S - 0.1) * 1000]
    assert during == [], "something sounded during the pause"
    assert [_state(browser, alert_id) for alert_id in [*mediums, hypotension]] == ["active"] * (
        len(mediums) + 1
    )

    # Then sound resumes by itself, with the most urgent alert, at once.
    poll_until(lambda: len(_played(browser)) > before, 2, "sound after the pause")
    resumed = _played(browser)[before]
    assert (resumed["priority"], resumed["pulses"]) == ("high", 10)
    assert PAUSE_S - 0.1 <= (resumed["at"] - paused_ms) / 1000 < PAUSE_S + AT_ONCE_S + 0.2
    assert _sound_state(browser) == "Sound on"


def test_nothing_sounds_until_the_user_enables_sound(ward: Ward, browser: WebDriver) -> None:  # noqa: F811
    _login(browser, ward, "a.martin")
    assert _sound_state(browser) == "Sound off"
    assert browser.find_element(By.ID, "sound-enable").is_displayed()
    assert not browser.find_element(By.ID, "audio-pause").is_displayed()
    _publish_fever(ward, bed="14", temp_c=36.8, sbp_mmhg=80)
    _alert_ids(browser, "high")
    time.sleep(HIGH_REPEAT_S * 1.5)  # an absence: wait past the first repeat that would have come
    assert _played(browser) == []
    assert browser.execute_script("return window.wardSound.enabled") is False
