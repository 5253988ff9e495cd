"""Node-RED 4 as a baseline: installed once into a cache folder, run headless with a generated flow.

``npm install node-red@4`` goes to ``~/.cache/wardd-bench/node-red-4`` (``WARDD_BENCH_CACHE``
moves it), reused by later runs and never committed. The flow is three nodes:

    mqtt in (QoS 1, persistent session) → function (temperature >= 38: an alert) → mqtt out (QoS 1)

The editor and the admin API are off (``httpAdminRoot: false``), the HTTP server binds
to loopback on a free port, and the broker node does not unsubscribe when it stops
(``autoUnsubscribe: false``), so the session keeps the subscription while Node-RED is
down, as wardd's does. MQTT.js acknowledges a QoS 1 message when it arrives, before
the flow has run: the baseline promises less than wardd, which acknowledges after a
durable commit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from bench.load import Ward
from tests.servers import free_port

VERSION = "4"

FUNCTION = """\
const obs = (msg.payload && msg.payload.obs) || [];
const temp = obs.find((o) => o.code === "MDC_TEMP_BODY" || o.code === 150364);
if (!temp || temp.value < 38) { return null; }
const parts = msg.topic.split("/");
const alert = {condition: "FEVER", phase: "start", ward: parts[1], bed: parts[3],
               since: msg.payload.ts, value: temp.value};
return {topic: parts.slice(0, -1).join("/") + "/alerts", payload: JSON.stringify(alert)};
"""


def cache_dir() -> Path:
    """Where node-red@4 is installed."""
    root = Path(os.environ.get("WARDD_BENCH_CACHE", Path.home() / ".cache" / "wardd-bench"))
    return root / f"node-red-{VERSION}"


def red_js() -> Path:
    """Node-RED's entry point, installing it first if needed (npm, once)."""
    folder = cache_dir()
    entry = folder / "node_modules" / "node-red" / "red.js"
    if entry.exists():
        return entry
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed (Node.js 18+ with npm is needed for the Node-RED baseline)")
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "package.json").exists():
        (folder / "package.json").write_text('{"name": "wardd-bench-node-red", "private": true}\n')
    subprocess.run([npm, "install", "--no-audit", "--no-fund", f"node-red@{VERSION}"], cwd=folder, check=True)
    return entry


def version() -> str:
    """The installed Node-RED version."""
    package = red_js().parent / "package.json"
    return str(json.loads(package.read_text())["version"])


def flow(*, host: str, port: int, client_id: str, ward: Ward) -> list[dict[str, object]]:
    """The three-node flow and its broker configuration."""
    return [
        {"id": "bench-tab", "type": "tab", "label": "bench"},
        {
            "id": "bench-broker",
            "type": "mqtt-broker",
            "name": "bench",
            "broker": host,
            "port": str(port),
            "clientid": client_id,
            "autoConnect": True,
            "usetls": False,
            "protocolVersion": "4",
            "keepalive": "60",
            "cleansession": False,
            "autoUnsubscribe": False,
            "birthTopic": "",
            "closeTopic": "",
            "willTopic": "",
        },
        {
            "id": "bench-in",
            "type": "mqtt in",
            "z": "bench-tab",
            "name": "vitals",
            "topic": ward.vitals_filter,
            "qos": "1",
            "datatype": "json",
            "broker": "bench-broker",
            "nl": False,
            "rap": True,
            "rh": 0,
            "inputs": 0,
            "wires": [["bench-fever"]],
        },
        {
            "id": "bench-fever",
            "type": "function",
            "z": "bench-tab",
            "name": "fever",
            "func": FUNCTION,
            "outputs": 1,
            "wires": [["bench-out"]],
        },
        {
            "id": "bench-out",
            "type": "mqtt out",
            "z": "bench-tab",
            "name": "alerts",
            "topic": "",
            "qos": "1",
            "retain": "false",
            "broker": "bench-broker",
            "wires": [],
        },
    ]


SETTINGS = """\
module.exports = {{
    uiHost: "127.0.0.1",
    uiPort: {port},
    httpAdminRoot: false,
    httpNodeRoot: false,
    disableEditor: true,
    flowFile: "flows.json",
    credentialSecret: false,
    userDir: {user_dir},
    logging: {{ console: {{ level: "info", metrics: false, audit: false }} }},
    diagnostics: {{ enabled: false }},
    runtimeState: {{ enabled: false }},
    telemetry: {{ enabled: false }},
    externalModules: {{ autoInstall: false }},
}};
"""


def prepare(workdir: Path, *, url: str, ward: Ward, client_id: str) -> list[str]:
    """Write the settings and flow into ``workdir``; the command line that runs them."""
    host, port = url.removeprefix("mqtt://").split(":")
    user_dir = workdir / "node-red"
    user_dir.mkdir(parents=True, exist_ok=True)
    (user_dir / "flows.json").write_text(
        json.dumps(flow(host=host, port=int(port), client_id=client_id, ward=ward), indent=1)
    )
    settings = user_dir / "settings.js"
    settings.write_text(SETTINGS.format(port=free_port(), user_dir=json.dumps(str(user_dir))))
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed")
    return [node, str(red_js()), "--settings", str(settings), "--userDir", str(user_dir)]
