"""Crash recovery in process: inputs acknowledged only after their commit, replayed after a crash.

No broker is needed: the pipeline's MQTT handler is called directly with an ``ack``
that records when it runs, and a "crash" is a pipeline abandoned after its commit and
before its processing or checkpoint.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon.app import Pipeline, build
from daemon.config import Config
from tests.helpers import committing, one_bed_config

WARD, BED = "w1", "b1"
TOPIC = f"ward/{WARD}/bed/{BED}/vitals"
FIRST_SAMPLE = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def _config(tmp_path: Path) -> Config:
    base = one_bed_config(datetime.now(UTC) - timedelta(hours=12))
    return base.model_copy(
        update={
            "daemon": base.daemon.model_copy(update={"state_dir": tmp_path / "state"}),
            "influx": base.influx.model_copy(update={"api": "none"}),
        }
    )


def _vitals(i: int) -> bytes:
    ts = FIRST_SAMPLE + timedelta(seconds=i)
    obs = [{"code": "MDC_TEMP_BODY", "value": 37.0, "unit": "Cel"}]
    return json.dumps({"ts": ts.isoformat(), "device": "m1", "obs": obs}).encode()


async def _receive(pipeline: Pipeline, payloads: list[bytes], acked: list[int]) -> None:
    for i, payload in enumerate(payloads):
        await pipeline.on_message(TOPIC, payload, lambda i=i: acked.append(i))  # type: ignore[misc]


async def test_an_input_is_acknowledged_only_after_its_commit(tmp_path: Path) -> None:
    pipeline = build(_config(tmp_path))
    acked: list[int] = []
    await _receive(pipeline, [_vitals(0), _vitals(1)], acked)
    assert acked == [], "nothing is acknowledged before the store has it"
    assert pipeline.store.inbound_after(0) == []
    async with committing(pipeline.writer):
        await pipeline.writer.flush()
    assert acked == [0, 1]
    assert [row.payload for row in pipeline.store.inbound_after(0)] == [_vitals(0), _vitals(1)]
    pipeline.writer.close()


async def test_what_was_logged_but_not_processed_is_replayed_after_a_crash(tmp_path: Path) -> None:
    config = _config(tmp_path)
    crashed = build(config)
    payloads = [_vitals(i) for i in range(5)]
    async with committing(crashed.writer):
        await _receive(crashed, payloads, [])
    # The crash: acknowledged and durable, never processed, no checkpoint.
    crashed.writer.close()

    again = build(config)
    async with committing(again.writer):
        await again._recover()
        await again.writer.flush()
    store = again.store
    assert store.inbound_after(0) == [], "the checkpoint after the replay covers the log"
    assert store.processed_seq() == 5
    assert again.counters.get("store.replayed_inputs", "mqtt") == 5
    assert store.outbox_stats()[0] == 5, "every replayed sample became its point"
    again.writer.close()

    # A third start replays nothing: a replay is not repeated.
    third = build(config)
    async with committing(third.writer):
        await third._recover()
    assert third.counters.get("store.replayed_inputs", "mqtt") == 0
    assert third.store.outbox_stats()[0] == 5
    third.writer.close()


async def test_a_message_sent_again_by_the_broker_reaches_the_rules_once(tmp_path: Path) -> None:
    pipeline = build(_config(tmp_path))
    async with committing(pipeline.writer):
        dispatch = asyncio.create_task(pipeline._dispatch())
        await _receive(pipeline, [_vitals(0), _vitals(0), _vitals(1)], [])
        await pipeline.writer.flush()
        await pipeline.work.join()
        pipeline.checkpoint()
        await pipeline.writer.flush()
        dispatch.cancel()
    assert pipeline.counters.get("mqtt.duplicates", "vitals") == 1
    assert pipeline.counters.get("mqtt.accepted", "vitals") == 2
    pipeline.writer.close()

    # The digests survive a restart with the checkpoint: a redelivery after it is still known.
    again = build(_config(tmp_path))
    async with committing(again.writer):
        await again._recover()
        dispatch = asyncio.create_task(again._dispatch())
        await _receive(again, [_vitals(1)], [])
        await again.writer.flush()
        await again.work.join()
        dispatch.cancel()
    assert again.counters.get("mqtt.duplicates", "vitals") == 1
    again.writer.close()
