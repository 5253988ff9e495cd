"""Screenshots of the ward page during the published case, for README.

The built-in ``published-case`` scenario runs fast (its simulated clock stepped by the
runner) up to hour 14, two hours into its fever of 38.2 °C: simulated NE-1000 pumps on
pseudo-terminals, a monitor over a private mosquitto, the real daemon storing its points
in a private influxd 1.x, and the ward page beside it. With the clock held there, Debian's
headless chromium logs in, checks what the ward view and the bed view show, and saves
both as PNG files: in ``tmp_path``, or in ``$WARDD_SCREENSHOTS`` when set
(``WARDD_SCREENSHOTS=docs/screenshots`` refreshes README's pictures).
"""

from __future__ import annotations

import asyncio
import io
import os
import time
import urllib.parse
from datetime import timedelta
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from daemon.app import Pipeline
from daemon.config import InfluxConfig
from daemon.demo import DemoPage
from simulators.scenario import ScenarioRun, load_scenario
from tests.servers import Influxd, Mosquitto
from tests.test_web_browser import _browser
from tests.ward_load import poll_until

pytestmark = pytest.mark.integration  # a broker, a database, ptys, the daemon and a browser

STOP_AT = timedelta(hours=14)
"""The published case's fever starts at 11 h 45 min (38.2 °C from hour 12): two hours in."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 400_000
"""Screenshots stay small enough to commit (the README shows them)."""


def _folder(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("WARDD_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _live(driver: WebDriver) -> bool:
    return bool(driver.execute_script("return document.getElementById('status')?.classList.contains('live')"))


def _shoot(driver: WebDriver, path: Path, width: int, max_height: int) -> None:
    # The page down to max_height: the window is made that tall (a shorter page, its height).
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(width, min(max(height, 400), max_height))
    time.sleep(0.3)  # let the browser lay the resized page out before the capture
    driver.save_screenshot(str(path))


def _browse(url: str, user: str, password: str, folder: Path) -> dict[str, str]:
    """Log in, check the ward and the bed views, save their screenshots; what the pages said."""
    driver = _browser()
    seen: dict[str, str] = {}
    try:
        driver.set_window_size(1200, 700)
        driver.get(url)
        driver.find_element(By.ID, "user").send_keys(user)
        driver.find_element(By.ID, "password").send_keys(password)
        driver.find_element(By.ID, "login").click()
        poll_until(lambda: _live(driver), 15, "the ward page live")
        poll_until(
            lambda: bool(driver.find_elements(By.CSS_SELECTOR, "article.tile svg.spark")), 10, "a trend"
        )
        tile = driver.find_element(By.CSS_SELECTOR, "article.tile")
        seen["tile"] = tile.text
        seen["tile_classes"] = tile.get_attribute("class") or ""
        seen["spark_points"] = str(
            driver.execute_script("return document.querySelector('.v-temp_c svg.spark')?.dataset.points")
        )
        _shoot(driver, folder / "ward.png", 1200, 700)

        driver.get(urllib.parse.urljoin(url, "/bed/01"))
        poll_until(lambda: _live(driver), 15, "the bed page live")
        seen["note"] = driver.find_element(By.CSS_SELECTOR, ".chart-note").get_attribute("data-source") or ""
        seen["temp_points"] = str(
            driver.execute_script(
                "return document.querySelector('#chart-temp path[data-series=temp_c]').dataset.points"
            )
        )
        seen["temp_top"] = str(
            driver.execute_script(
                "const t = document.querySelector('#chart-temp line[data-threshold=fever_c]');"
                "const p = document.querySelector('#chart-temp path[data-series=temp_c]');"
                "const box = p.getBBox();"
                "return [box.y, Number(t.getAttribute('y1'))].join(' ');"
            )
        )
        seen["delivered_points"] = str(
            driver.execute_script(
                "const p = document.querySelector('#chart-dose path[data-series=delivered]');"
                "return p.dataset.points + ' ' + p.getAttribute('d').split('M').length"
            )
        )
        seen["suggestions"] = driver.find_element(By.ID, "suggestions").text
        seen["tick"] = driver.find_element(By.CSS_SELECTOR, "#chart-temp text[data-tz]").text
        # The charts drawn again, as the page does every minute: in place, still whole.
        driver.execute_async_script("window.wardCharts.refresh().then(arguments[0])")
        seen["refreshed"] = str(
            driver.execute_script(
                "return window.wardCharts.refreshed + ' ' + document.querySelectorAll('#charts svg.chart').length"
            )
        )
        # The tile, the dose over the course and the first vital-sign charts.
        _shoot(driver, folder / "bed.png", 960, 1320)
    finally:
        driver.quit()
    return seen


async def test_screenshots_of_the_ward_and_a_bed_during_the_published_case(
    tmp_path: Path, mosquitto: Mosquitto, influx1: Influxd
) -> None:
    influx1.create_database("wardd")
    folder = _folder(tmp_path)
    scenario = load_scenario("published-case").model_copy(update={"duration": STOP_AT})
    web = DemoPage(log2_n=10)
    seen: dict[str, str] = {}

    async def at_end(pipeline: Pipeline) -> None:
        assert web.page is not None
        await web.page.started.wait()
        # The points the daemon has queued reach the database before the pictures are taken.
        await pipeline.writer.flush()
        seen.update(
            await asyncio.to_thread(_browse, web.page.url, "nurse-demo", web.passwords["nurse-demo"], folder)
        )

    run = ScenarioRun(
        scenario,
        workdir=tmp_path / "run",
        fast=True,
        speed=1.0,
        mqtt_url=mosquitto.url,
        influx=InfluxConfig(api="v1", url=influx1.url, database="wardd", flush_interval_s=1.0),
        out=io.StringIO(),
        capture=None,
        progress=False,
        on_pipeline=web.attach,
        at_end=at_end,
    )
    result = await run.run()

    # The published case up to hour 14: the fever and its CRS grade 1 suggestion are open.
    conditions = {alert["condition"] for alert in result.alerts}
    assert {"FEVER", "CRS_SUSPECTED"} <= conditions
    assert "FEVER" in seen["tile"]
    assert "level-" in seen["tile_classes"]
    assert int(seen["spark_points"]) >= 20  # six hours of quarter-hour means
    assert seen["note"] == "influx"  # the charts read the database the daemon wrote to
    assert int(seen["temp_points"]) >= 100  # 14 hours of the 24 h span
    top, threshold = (float(v) for v in seen["temp_top"].split())
    assert top < threshold  # the fever's line rises above the 38.0 °C threshold
    points, runs = (int(v) for v in seen["delivered_points"].split())
    assert points >= 12  # 14 hours of the course's 56-minute means
    assert runs == 2  # drawn as one line: the pump delivered without a gap
    assert "CRS_SUSPECTED" in seen["suggestions"]
    assert seen["tick"] != ""
    assert seen["refreshed"] == "1 6"  # the dose and five vital-sign charts, drawn once more
    for name in ("ward.png", "bed.png"):
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        assert 10_000 < len(data) < MAX_PNG_BYTES, (name, len(data))
