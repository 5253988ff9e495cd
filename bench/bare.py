"""The floor: a bare aiomqtt subscriber that decodes each vitals message and alerts on fever.

    python -m bench.bare --url mqtt://127.0.0.1:1883 --client-id bare --filter 'ward/+/bed/+/vitals'

QoS 1 on a persistent session, like wardd; ``json.loads`` of every message and an
alert (QoS 1) for a temperature of 38.0 °C or more, in the shape the observer reads.
No validation, no state, no storage: what any daemon on aiomqtt pays at least.
paho-mqtt acknowledges each message when it arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import aiomqtt

TEMPERATURE_CODES = ("MDC_TEMP_BODY", 150364)


async def run(url: str, client_id: str, topic_filter: str) -> None:
    """Subscribe and handle messages until the process is terminated.

    SIGTERM ends the process at once (Python's default): the session stays with the
    broker, which is all a restart needs.
    """
    host, port = url.removeprefix("mqtt://").split(":")
    sending: set[asyncio.Task[None]] = set()
    # A long timeout: behind a queued backlog, an alert's PUBACK comes after every message
    # the broker wrote to the socket before it (aiomqtt's default of 10 s is too short).
    async with aiomqtt.Client(
        host, int(port), identifier=client_id, clean_session=False, timeout=600
    ) as client:
        await client.subscribe(topic_filter, qos=1)
        async for message in client.messages:
            data = json.loads(message.payload)
            temp = next((o["value"] for o in data["obs"] if o["code"] in TEMPERATURE_CODES), None)
            if temp is not None and temp >= 38.0:
                topic = str(message.topic)
                parts = topic.split("/")
                alert = {
                    "condition": "FEVER",
                    "phase": "start",
                    "ward": parts[1],
                    "bed": parts[3],
                    "since": data["ts"],
                    "value": temp,
                }
                # Not awaited here: the loop goes on reading while the broker confirms.
                task = asyncio.create_task(
                    client.publish(topic.rsplit("/", 1)[0] + "/alerts", json.dumps(alert), qos=1),
                    name="bare.alert",
                )
                sending.add(task)
                task.add_done_callback(sending.discard)


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--filter", required=True)
    args = parser.parse_args()
    asyncio.run(run(args.url, args.client_id, args.filter))


if __name__ == "__main__":
    main()
