"""Admissions against a real `wardd run`: ADT messages built with hl7apy and sent over MLLP,
`wardd admit` / `wardd discharge` through a real mosquitto, restarts (SIGKILL and SIGTERM)
in between; the acknowledgements, `wardd status`, the alerts on the broker and the journal
in the store must tell the same story."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import hl7.mllp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hl7apy.core import Message
from hl7apy.parser import parse_message

from daemon.app import build
from daemon.config import Config, parse
from daemon.web.passwords import hash_password
from daemon.web.server import WardPage
from tests.helpers import QUICK_FEVER, wardd, write_ward_config
from tests.mqtt_watch import until, watch
from tests.servers import Mosquitto, free_port
from tests.ward_load import WarddProcess

pytestmark = pytest.mark.integration

TEMP = "150364^MDC_TEMP_BODY^MDC"
DEGC = "268192^MDC_DIM_DEGC^MDC"


def _config(path: Path, broker: Mosquitto, hl7_port: int) -> Path:
    return write_ward_config(
        path,
        mqtt_url=broker.url,
        prefix="h7",
        tables=f"""
[hl7]
port = {hl7_port}

[admissions]
admin_users = ["nurse-admin"]
pseudonym_type = "PN"
{QUICK_FEVER}""",
    )


def _hl7_time(when: datetime) -> str:
    return when.strftime("%Y%m%d%H%M%S") + "+0000"


def adt(
    event: str,
    patient: str,
    bed: str,
    *,
    prior: str | None = None,
    weight_kg: float | None = None,
    height_cm: float | None = None,
    control_id: str,
) -> bytes:
    """An ADT message built with hl7apy (A02, A03, A08 on the ADT_A01 structure they share
    for what is sent here): a record number first, the pseudonym second (PID-3 type PN)."""
    message = Message("ADT_A01", version="2.5")
    message.msh.msh_3 = "HIS"
    message.msh.msh_7 = _hl7_time(datetime.now(UTC))
    message.msh.msh_9 = f"ADT^{event}^ADT_A01"
    message.msh.msh_10 = control_id
    message.msh.msh_11 = "P"
    message.evn.evn_2 = _hl7_time(datetime.now(UTC))
    message.pid.pid_3 = "900123^^^HOSP^MR"
    message.pid.add_field("PID_3").value = f"{patient}^^^WARDD^PN"
    message.pv1.pv1_2 = "I"
    message.pv1.pv1_3 = f"w1^^{bed}"
    if prior is not None:
        message.pv1.pv1_6 = f"w1^^{prior}"
    for code, value, unit in (("29463-7", weight_kg, "kg"), ("8302-2", height_cm, "cm")):
        if value is not None:
            obx = message.add_segment("OBX")
            obx.obx_2 = "NM"
            obx.obx_3 = f"{code}^^LN"
            obx.obx_5 = str(value)
            obx.obx_6 = unit
    return str(message.to_er7()).encode()


def fever(patient: str, bed: str, at: datetime, control_id: str) -> bytes:
    """A PCD-01 temperature of 38.6 °C (as in tests/test_hl7_in.py)."""
    when = _hl7_time(at)
    return "\r".join(
        [
            f"MSH|^~\\&|GW|ICU|WARDD|H|{when}||ORU^R01^ORU_R01|{control_id}|P|2.6|||AL|NE",
            f"PID|||{patient}",
            f"PV1||I|w1^^{bed}",
            f"OBR|1|||182777000^monitoring of patient^SNOMED-CT|||{when}",
            f"OBX|2|NM|{TEMP}|1.1.1.1|38.6|{DEGC}|||||R|||{when}||||0012345678ABCDEF^^EUI-64^EUI-64",
        ]
    ).encode()


async def send(port: int, raw: bytes) -> tuple[str, str]:
    """One message over MLLP; the acknowledgement's MSA-1 and its ERR-3 reason (read with hl7apy)."""
    reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", port)
    try:
        writer.writeblock(raw)
        await writer.drain()
        ack = await asyncio.wait_for(reader.readblock(), 10)
    finally:
        writer.close()
    parsed = parse_message(ack.decode(), find_groups=False)
    reason = ""
    if "ERR" in ack.decode():
        reason = parsed.err.err_3.value.split("^")[1]
    return str(parsed.msa.msa_1.value), reason


def command(config: Path, *args: str) -> tuple[int, str]:
    result = wardd(*args, "--config", str(config), "--user", "nurse-admin")
    return result.returncode, result.stdout + result.stderr


async def admit_on_ssc(config: Path, bed: str, start: str, *more: str) -> tuple[int, str]:
    """``wardd admit`` of ``bed`` of w1 on the SSc protocol from ``start``, as the admin nurse."""
    args = ("admit", "--ward", "w1", "--bed", bed, "--protocol", "ssc-14d", "--start", start, *more)
    return await asyncio.to_thread(command, config, *args)


def status(config: Path) -> str:
    result = wardd("status", "--config", str(config))
    assert result.returncode == 0, result.stderr
    return result.stdout


def journal(config: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(config.parent / "state" / "wardd.sqlite")
    try:
        return [json.loads(entry) for (entry,) in db.execute("SELECT entry FROM journal ORDER BY seq")]
    finally:
        db.close()


def of(alerts: list[dict[str, Any]], bed: str, condition: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a.get("bed") == bed and a.get("condition") == condition]


async def test_admit_transfer_discharge_over_adt_and_the_admin_command_survive_restarts(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    port = free_port()
    config = _config(tmp_path / "ward.toml", mosquitto, port)
    daemon = WarddProcess(config, tmp_path / "wardd.log")
    listening: Callable[[], bool] = lambda: "HL7 v2 (MLLP) listener" in daemon.output()  # noqa: E731
    start_past = (datetime.now(UTC) - timedelta(hours=12)).isoformat()
    start_future = (datetime.now(UTC) + timedelta(hours=2)).isoformat()

    async def restart(*, kill: bool) -> None:
        if kill:
            daemon.kill()
        else:
            assert daemon.terminate() == 0
        daemon.start()
        daemon.wait_connected()
        await until(
            lambda: daemon.output().count("HL7 v2 (MLLP) listener") >= daemon.starts, 20, "the listener"
        )

    async with watch(mosquitto.url, "h7/w1/bed/+/alerts") as alerts:
        daemon.start()
        try:
            daemon.wait_connected()
            await until(listening, 20, "the MLLP listener")
            # ADT admits two patients: beds with a patient and no protocol watch.
            assert await send(
                port, adt("A01", "P-2", "b2", weight_kg=70, height_cm=172, control_id="A1")
            ) == ("AA", "")
            assert await send(
                port, adt("A01", "P-3", "b3", weight_kg=40, height_cm=150, control_id="A2")
            ) == ("AA", "")
            assert await send(port, adt("A01", "P-4", "b2", control_id="A3")) == ("AE", "bed_occupied")
            assert await send(port, adt("A04", "P-4", "b5", control_id="A4")) == ("AR", "unsupported_message")
            # Vitals for b2, unwatched: refused, counted, and one notice for the bed.
            now = datetime.now(UTC).replace(microsecond=0)
            assert await send(port, fever("P-2", "b2", now, "V1")) == ("AE", "unknown_bed")
            assert await send(port, fever("P-2", "b2", now, "V2")) == ("AE", "unknown_bed")
            await until(lambda: bool(of(alerts, "b2", "UNWATCHED_BED_DATA")), 10, "the unwatched-bed notice")
            assert "w1/b2: patient P-2 admitted, no protocol watch" in status(config)
            # The same over MQTT: a monitor of b3 publishes, b3 gets its one notice.
            host, mqtt_port = mosquitto.url.removeprefix("mqtt://").split(":")
            async with aiomqtt.Client(host, int(mqtt_port)) as client:
                await client.publish("h7/w1/bed/b3/vitals", b"{}", qos=1)
            await until(lambda: bool(of(alerts, "b3", "UNWATCHED_BED_DATA")), 10, "the notice of b3")
            assert (
                "admitted there with no protocol set" in of(alerts, "b3", "UNWATCHED_BED_DATA")[0]["message"]
            )
            # Only the users of [admissions] admin_users may change admissions.
            result = await asyncio.to_thread(
                wardd, "admit", "--config", str(config), "--user", "intruder", "--ward", "w1", "--bed", "b2",
                "--protocol", "ssc-14d", "--start", start_future,
            )  # fmt: skip
            assert result.returncode == 1
            assert "not_allowed" in result.stderr

            # Staff set the protocols: under 45 kg on a flat dose is refused with the reason.
            code, out = await admit_on_ssc(config, "b3", start_future)
            assert code == 1
            assert "45 kg" in out
            assert "ssc-14d-bsa" in out
            code, out = await admit_on_ssc(config, "b2", start_past)
            assert code == 1
            assert "delivered_before_missing" in out
            code, out = await admit_on_ssc(config, "b2", start_past, "--delivered-before", "unknown")
            assert code == 0, out
            assert "P-2 admitted to w1/b2 on ssc-14d" in out
            await until(
                lambda: any(a["state"] == "resolved" for a in of(alerts, "b2", "UNWATCHED_BED_DATA")),
                10,
                "the notice ending",
            )
            notices = of(alerts, "b2", "UNWATCHED_BED_DATA")
            assert [a["phase"] for a in notices] == ["start", "end"]  # once, for two refused messages
            # A08: P-3 now weighs 50 kg, and the flat-dose protocol is accepted.
            assert await send(port, adt("A08", "P-3", "b3", weight_kg=50, control_id="A5")) == ("AA", "")
            code, out = await admit_on_ssc(config, "b3", start_future)
            assert code == 0, out
            await until(
                lambda: [a["phase"] for a in of(alerts, "b3", "UNWATCHED_BED_DATA")] == ["start", "end"],
                10,
                "the notice of b3 ending",
            )

            # The watch at b2 judges its vitals: fever.
            now = datetime.now(UTC).replace(microsecond=0)
            assert await send(port, fever("P-2", "b2", now - timedelta(seconds=4), "F1")) == ("AA", "")
            assert await send(port, fever("P-2", "b2", now - timedelta(seconds=1), "F2")) == ("AA", "")
            await until(lambda: bool(of(alerts, "b2", "FEVER")), 20, "the FEVER alert at b2")
            fever_id = of(alerts, "b2", "FEVER")[0]["id"]

            await restart(kill=True)
            shown = status(config)
            assert "w1/b2: protocol ssc-14d" in shown
            assert "before the watch (began" in shown
            assert "unknown; the dose checks judge only the watched span" in shown
            assert fever_id in shown

            # A02: P-2 moves to b4 with their watch and the open fever alert.
            assert await send(port, adt("A02", "P-2", "b4", prior="b2", control_id="A6")) == ("AA", "")
            # Killed as soon as the AA is in: the transfer is logged, and carried out by this
            # run or, replayed, by the next.
            await restart(kill=True)
            await until(lambda: bool(of(alerts, "b4", "FEVER")), 20, "the FEVER alert at b4")
            moved = of(alerts, "b4", "FEVER")[0]
            assert moved["id"] == fever_id
            assert moved["details"]["moved_from"] == "w1/b2"
            # Vitals for the bed left behind are refused now.
            assert await send(port, fever("P-2", "b2", datetime.now(UTC), "V3")) == ("AE", "unknown_bed")

            await restart(kill=False)
            shown = status(config)
            assert "w1/b4: protocol ssc-14d" in shown
            assert "w1/b2" not in shown
            assert fever_id in shown

            # A03 discharges P-2: the alert closes with the reason.
            assert await send(port, adt("A03", "P-2", "b4", control_id="A7")) == ("AA", "")
            await until(
                lambda: any(a["state"] == "resolved" for a in of(alerts, "b4", "FEVER")),
                20,
                "the alert closing",
            )
            closed = next(a for a in of(alerts, "b4", "FEVER") if a["state"] == "resolved")
            assert closed["details"]["closed_because"] == "ADT A03"
            # The admin command discharges the file's bed.
            code, out = await asyncio.to_thread(
                command, config, "discharge", "--bed", "b1", "--reason", "went home"
            )
            assert code == 0, out
            assert "P-1 discharged from w1/b1 (went home)" in out
            code, out = await asyncio.to_thread(
                command, config, "discharge", "--bed", "b1", "--reason", "again"
            )
            assert code == 1
            assert "not_admitted" in out
            # And moves P-3 to b5.
            code, out = await asyncio.to_thread(
                command, config, "transfer", "--patient", "P-3", "--ward", "w1", "--bed", "b5"
            )
            assert code == 0, out
            assert "P-3 moved from w1/b3 to w1/b5" in out

            await restart(kill=True)
            shown = status(config)
            assert "w1/b1" not in shown
            assert "w1/b4" not in shown
            assert "w1/b3" not in shown
            assert "w1/b5: protocol ssc-14d" in shown
        finally:
            daemon.close()

    # The admission lines, not the alerts'.
    entries = [e for e in journal(config) if e["what"] == "admission_refused" or "change" in e]
    story = [(e["what"], e["who"], e.get("via"), e.get("bed")) for e in entries]
    assert story == [
        ("admit", "adt:HIS", "adt", "b2"),
        ("admit", "adt:HIS", "adt", "b3"),
        ("admission_refused", "intruder", "admin", None),
        ("admission_refused", "nurse-admin", "admin", "b3"),
        ("admission_refused", "nurse-admin", "admin", "b2"),
        ("admit", "nurse-admin", "admin", "b2"),
        ("update", "adt:HIS", "adt", "b3"),
        ("admit", "nurse-admin", "admin", "b3"),
        ("transfer", "adt:HIS", "adt", "b4"),
        ("discharge", "adt:HIS", "adt", "b4"),
        ("discharge", "nurse-admin", "admin", "b1"),
        ("admission_refused", "nurse-admin", "admin", "b1"),
        ("transfer", "nurse-admin", "admin", "b5"),
    ]


# --------------------------------------------------------------------------- the ward page's admin role

WEB_PASSWORDS = {"admin1": "admin password", "nurse1": "nurse password"}


def _web_config(tmp_path: Path, broker: Mosquitto) -> Config:
    return parse(
        {
            "daemon": {"state_dir": str(tmp_path / "state")},
            "mqtt": {"url": broker.url, "client_id": "wardd-web-adm", "topic_prefix": "wa"},
            "influx": {"api": "none"},
            "web": {
                "enabled": True,
                "port": 0,
                "users": [
                    {
                        "name": name,
                        "role": name.removesuffix("1"),
                        "display_name": f"{name.title()} Person",
                        "password_hash": hash_password(password, log2_n=10),
                    }
                    for name, password in WEB_PASSWORDS.items()
                ],
            },
        }
    )


async def _login(client: TestClient[Any, Any], user: str) -> str:
    """Log in through the form; the session's CSRF token."""
    form = await client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', await form.text())
    assert token is not None
    response = await client.post(
        "/login",
        data={"csrf": token[1], "user": user, "password": WEB_PASSWORDS[user]},
        allow_redirects=False,
    )
    assert response.status == 303
    page = re.search(r'name="csrf" value="([^"]+)"', await (await client.get("/")).text())
    assert page is not None
    return page[1]


async def test_a_user_of_role_admin_admits_from_the_ward_page_through_the_logged_inputs(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    pipeline = build(_web_config(tmp_path, mosquitto))
    page = pipeline.services[0]
    assert isinstance(page, WardPage)
    running = asyncio.create_task(pipeline.run(), name="test.pipeline")
    try:
        await asyncio.wait_for(pipeline.ready.wait(), 20)
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        command = {"action": "admit", "ward": "w1", "bed": "b2", "patient": "p-2", "weight_kg": 70,
                   "height_cm": 170, "protocol": "ssc-14d", "protocol_start": future}  # fmt: skip
        async with TestClient(TestServer(page.app())) as client:
            csrf = await _login(client, "nurse1")
            refused = await client.post("/api/admissions", json=command, headers={"X-CSRF-Token": csrf})
            assert refused.status == 403  # a nurse acknowledges, but does not admit
            await client.post("/logout", data={"csrf": csrf})
            csrf = await _login(client, "admin1")
            assert (await client.post("/api/admissions", json=command)).status == 403  # no CSRF token
            light = await client.post(
                "/api/admissions", json={**command, "weight_kg": 40}, headers={"X-CSRF-Token": csrf}
            )
            assert light.status == 422
            assert (await light.json())["reason"] == "refused"
            done = await client.post("/api/admissions", json=command, headers={"X-CSRF-Token": csrf})
            assert done.status == 200, await done.text()
            assert (await done.json())["detail"].startswith("p-2 admitted to w1/b2 on ssc-14d")
        assert [bed.id for bed in pipeline.config.beds] == ["b2"]
        # The ward's own subject (its links: daemon.tech_rules) came with its first bed.
        assert pipeline.engine.beds == ["b2", "_w1"]
        # Answered once durable: the command is processed before its commit, not answered.
        last = pipeline.store.journal()[-1]
        assert (last["what"], last["who"], last["via"]) == ("admit", "admin1", "web")
    finally:
        pipeline.stop.set()
        await asyncio.wait_for(running, 30)
