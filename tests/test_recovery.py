"""Crash recovery in process: inputs acknowledged only after their commit, replayed after a crash.

No broker is needed: the pipeline's MQTT handler is called directly with an ``ack``
that records when it runs, and a "crash" is a pipeline abandoned after its commit and
before its processing or checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon import app
from daemon.app import RULE_FAMILIES, Pipeline, build
from daemon.config import Config
from daemon.links.store import InboundRow, Store
from daemon.rules import RuleEngine
from tests.helpers import Counting, committing, one_bed_config

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


async def test_beyond_max_inflight_messages_the_sender_waits_for_a_processed_input(tmp_path: Path) -> None:
    base = _config(tmp_path)
    config = base.model_copy(update={"daemon": base.daemon.model_copy(update={"max_inflight_messages": 2})})
    pipeline = build(config)
    acked: list[int] = []
    async with committing(pipeline.writer):
        await _receive(pipeline, [_vitals(0), _vitals(1)], acked)
        third = asyncio.create_task(pipeline.on_message(TOPIC, _vitals(2), lambda: acked.append(2)))
        await pipeline.writer.flush()
        assert acked == [0, 1]
        assert not third.done(), "two inputs in flight: the third waits (the broker keeps it)"
        row = pipeline.work.get_nowait()
        assert isinstance(row, InboundRow)
        await pipeline.process_row(row)
        await third
        await pipeline.writer.flush()
    assert acked == [0, 1, 2]
    pipeline.writer.close()


def _quick_fever(tmp_path: Path, **daemon: object) -> Config:
    """``_config`` with FEVER raised by one fever sample (no confirmation, no delay)."""
    base = one_bed_config(
        datetime.now(UTC) - timedelta(hours=12),
        vitals={"confirm_samples": 1, "fever_delay_s": 0.0, "fever_clear_s": 0.0},
    )
    return base.model_copy(
        update={
            "daemon": base.daemon.model_copy(update={"state_dir": tmp_path / "state", **daemon}),
            "influx": base.influx.model_copy(update={"api": "none"}),
        }
    )


def _fever(i: int) -> bytes:
    ts = FIRST_SAMPLE + timedelta(seconds=i)
    obs = [{"code": "MDC_TEMP_BODY", "value": 39.0, "unit": "Cel"}]
    return json.dumps({"ts": ts.isoformat(), "device": "m1", "obs": obs}).encode()


def _fevers(pipeline: Pipeline) -> list[str]:
    return [a.id for a in pipeline.alerts.book.open_alerts() if a.condition == "FEVER"]


async def test_an_input_is_processed_before_its_commit_and_nothing_it_causes_leaves_before_it(
    tmp_path: Path,
) -> None:
    """The rules see a message at once; its acknowledgement, and the alert's messages, wait
    for the commit that holds it. Input and alert share that one commit."""
    pipeline = build(_quick_fever(tmp_path))
    acked: list[int] = []
    dispatch = asyncio.create_task(pipeline._dispatch())
    await _receive(pipeline, [_fever(0)], acked)
    await asyncio.sleep(0)
    assert _fevers(pipeline), "processed without waiting for the store"
    assert acked == [], "not acknowledged before its commit"
    assert pipeline.link.pending == 0, "the alert does not leave before its commit"
    async with committing(pipeline.writer):
        await pipeline.writer.flush()
    assert acked == [0]
    assert pipeline.link.pending > 0, "the alert's messages are queued for the broker"
    assert pipeline.writer.commits == 1, "the input and its alert in one commit"
    dispatch.cancel()
    pipeline.writer.close()


async def test_an_alert_waits_for_one_commit_when_its_input_comes_to_an_idle_store(tmp_path: Path) -> None:
    """The order that keeps an alert's path to one commit with the writer running: the
    input is queued before it is staged, and the writer lets ready work run before it
    takes the unit (two commits, the input's then the alert's, made the median alert
    at 1,000 beds x 1 Hz 2.1 ms against 1.5)."""
    pipeline = build(_quick_fever(tmp_path))
    acked: list[int] = []
    async with committing(pipeline.writer):
        dispatch = asyncio.create_task(pipeline._dispatch())
        await pipeline.writer.flush()  # what the start staged (its journal line)
        commits = pipeline.writer.commits
        await _receive(pipeline, [_fever(0)], acked)
        await pipeline.writer.flush()
        assert acked == [0]
        assert _fevers(pipeline)
        assert pipeline.writer.commits - commits == 1
        dispatch.cancel()
    pipeline.writer.close()


async def test_a_crash_before_the_commit_loses_the_input_with_what_it_caused(tmp_path: Path) -> None:
    """Processed, never durable: the store holds neither the input nor its alert, the
    sender got no acknowledgement, and the message it sends again raises the alert."""
    config = _quick_fever(tmp_path)
    crashed = build(config)
    acked: list[int] = []
    dispatch = asyncio.create_task(crashed._dispatch())
    await _receive(crashed, [_fever(0)], acked)
    await asyncio.sleep(0)
    assert _fevers(crashed)
    dispatch.cancel()
    crashed.writer.close()  # the crash: the unit staged is never committed
    assert acked == []

    again = build(config)
    async with committing(again.writer):
        await again._recover()
        assert again.store.inbound_after(0) == []
        assert again.alerts.book.open_alerts() == []
        assert again.store.mqtt_pending() == []
        dispatch = asyncio.create_task(again._dispatch())
        await _receive(again, [_fever(0)], acked)
        await again.writer.flush()
        await again.work.join()
        dispatch.cancel()
    assert acked == [0]
    assert _fevers(again)
    again.writer.close()


async def test_an_in_flight_place_is_given_back_once_an_input_is_both_processed_and_durable(
    tmp_path: Path,
) -> None:
    """Processed but not durable (the store failing, or slow) still holds its place: what
    is neither acknowledged nor committed stays bounded by ``max_inflight_messages``."""
    pipeline = build(_quick_fever(tmp_path, max_inflight_messages=1))
    acked: list[int] = []
    dispatch = asyncio.create_task(pipeline._dispatch())
    await _receive(pipeline, [_vitals(0)], acked)
    second = asyncio.create_task(pipeline.on_message(TOPIC, _vitals(1), lambda: acked.append(1)))
    await pipeline.work.join()
    await asyncio.sleep(0)
    assert not second.done(), "the first is processed, not durable: the second waits"
    async with committing(pipeline.writer):
        await second
        await pipeline.writer.flush()
        await pipeline.work.join()
    assert acked == [0, 1]
    dispatch.cancel()
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


# --- a checkpoint written in slices -------------------------------------------------------------


def _counting_pipeline(config: Config) -> Pipeline:
    pipeline = build(config)
    bed = config.bed(BED)
    rules = [Counting(), *(rule for family in RULE_FAMILIES.values() for rule in family(config, bed))]
    pipeline.engine = RuleEngine({BED: rules}, wards={BED: WARD})
    return pipeline


async def _process_logged(pipeline: Pipeline, payloads: list[bytes]) -> None:
    """Receive ``payloads``, commit them and process them, without a dispatch task: slice
    markers are left out, so that the test decides when each slice is staged."""
    await _receive(pipeline, payloads, [])
    await pipeline.writer.flush()
    while not pipeline.work.empty():
        item = pipeline.work.get_nowait()
        if isinstance(item, InboundRow):
            await pipeline.process_row(item)


async def _three_then_a_round(pipeline: Pipeline) -> None:
    """Three messages processed and committed, then a periodic checkpoint's first slice."""
    await _process_logged(pipeline, [_vitals(i) for i in range(3)])
    pipeline.start_checkpoint()
    await pipeline.writer.flush()


@pytest.fixture
def one_state_per_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app, "CHECKPOINT_SLICE_STATES", 1)


@pytest.mark.usefixtures("one_state_per_slice")
async def test_a_checkpoint_cut_short_between_slices_replays_each_input_once_per_state(
    tmp_path: Path,
) -> None:
    """Three messages, then a periodic checkpoint whose first slice (the counting state, at
    input 3) is committed before the daemon dies; two more messages come meanwhile. No
    checkpoint has covered the log, so the next start replays all five: the counting state,
    stored with the first three, takes only the last two (5, not 8)."""
    config = _config(tmp_path)
    crashed = _counting_pipeline(config)
    async with committing(crashed.writer):
        await _three_then_a_round(crashed)
        assert crashed.checkpoint_round is not None
        assert crashed.checkpoint_round.done == 1, "one state per slice: the round is under way"
        await _process_logged(crashed, [_vitals(i) for i in range(3, 5)])
    assert crashed.engine.state(BED, "acount") == 5
    crashed.writer.close()  # the crash: the other slices and the round's end never come

    store = Store(config.daemon.state_dir / "wardd.sqlite")
    assert store.processed_seq() == 0
    assert store.rule_states() == {BED: {"acount": {"n": 3}}}
    assert store.rule_positions() == {(BED, "acount"): 3}
    store.close()

    again = _counting_pipeline(config)
    async with committing(again.writer):
        await again._recover()
    assert again.counters.get("store.replayed_inputs", "mqtt") == 5
    assert again.engine.state(BED, "acount") == 5
    assert again.store.processed_seq() == 5
    assert again.store.rule_positions() == {}, "the checkpoint after the replay covers every state"
    again.writer.close()


@pytest.mark.usefixtures("one_state_per_slice")
async def test_a_whole_sliced_checkpoint_covers_the_log_up_to_its_start(tmp_path: Path) -> None:
    """A message received while the slices are written is after the round's position: the
    round's end deletes the log up to its start only, and keeps the recent-message digests
    of its start, so that a replay after a crash takes that message as new, not as a repeat."""
    config = _config(tmp_path)
    crashed = _counting_pipeline(config)
    async with committing(crashed.writer):
        await _process_logged(crashed, [_vitals(i) for i in range(3)])
        crashed.start_checkpoint()
        assert crashed.checkpoint_round is not None
        keys = crashed.checkpoint_round.keys
        assert keys[0] == (BED, "acount")
        assert len(keys) >= 3, "the rules that read vitals"
        await crashed.writer.flush()
        await _process_logged(crashed, [_vitals(3)])
        slices = 1
        commits = crashed.writer.commits
        while crashed.checkpoint_round is not None:
            crashed._checkpoint_slice()
            await crashed.writer.flush()
            slices += 1
        assert crashed.writer.commits - commits == slices - 1, "one transaction per slice"
        assert slices == len(keys)
        # The fourth message changed every state again; only the first slice's was written before it.
        assert crashed.engine.dirty() == [(BED, "acount")]
    crashed.writer.close()

    store = Store(config.daemon.state_dir / "wardd.sqlite")
    assert store.processed_seq() == 3
    assert [row.seq for row in store.inbound_after(0)] == [4]
    assert store.rule_positions() == dict.fromkeys(keys[1:], 4)
    store.close()

    again = _counting_pipeline(config)
    async with committing(again.writer):
        await again._recover()
    assert again.counters.get("mqtt.duplicates", "vitals") == 0
    assert again.counters.get("store.replayed_inputs", "mqtt") == 1
    assert again.engine.state(BED, "acount") == 4
    # The states written after the fourth message skipped its replay: all as before the crash.
    assert again.engine.snapshot() == crashed.engine.snapshot()
    again.writer.close()


def _logged_seqs(config: Config) -> list[int]:
    with sqlite3.connect(config.daemon.state_dir / "wardd.sqlite") as db:
        return [seq for (seq,) in db.execute("SELECT seq FROM inbound ORDER BY seq")]


@pytest.mark.usefixtures("one_state_per_slice")
async def test_a_periodic_checkpoint_leaves_the_log_it_covers_to_the_commits_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The round's end writes its position but deletes nothing: each later commit deletes
    as many covered inputs as it logs (``Store.SWEEP_ROWS`` more, none here), and a full
    checkpoint the rest at once."""
    monkeypatch.setattr(Store, "SWEEP_ROWS", 0)
    config = _config(tmp_path)
    pipeline = _counting_pipeline(config)
    async with committing(pipeline.writer):
        await _three_then_a_round(pipeline)
        while pipeline.checkpoint_round is not None:
            pipeline._checkpoint_slice()
            await pipeline.writer.flush()
        assert _logged_seqs(config) == [1, 2, 3]
        await _process_logged(pipeline, [_vitals(3)])
        assert _logged_seqs(config) == [2, 3, 4]
        pipeline.checkpoint()
        await pipeline.writer.flush()
        assert _logged_seqs(config) == []
    pipeline.writer.close()
    store = Store(config.daemon.state_dir / "wardd.sqlite")
    assert store.processed_seq() == 4
    store.close()


def _with_interval(config: Config, interval_s: float) -> Config:
    return config.model_copy(
        update={"daemon": config.daemon.model_copy(update={"checkpoint_interval_s": interval_s})}
    )


@pytest.mark.usefixtures("one_state_per_slice")
async def test_a_periodic_checkpoints_slices_are_spread_over_part_of_its_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slice n of k is staged no sooner than n/k of ``CHECKPOINT_SPREAD`` of the interval
    after the round started (real time), so that the commits carrying one are spread out."""
    interval_s, spread = 0.4, 0.5
    monkeypatch.setattr(app, "CHECKPOINT_SPREAD", spread)
    pipeline = _counting_pipeline(_with_interval(_config(tmp_path), interval_s))
    staged_at: list[float] = []
    stage = pipeline._checkpoint_slice

    def timed() -> None:
        staged_at.append(time.monotonic())
        stage()

    monkeypatch.setattr(pipeline, "_checkpoint_slice", timed)
    async with committing(pipeline.writer), asyncio.TaskGroup() as group:
        await _process_logged(pipeline, [_vitals(0)])
        dispatch = group.create_task(pipeline._dispatch(), name="dispatch")
        pipeline.start_checkpoint()
        checkpoint = pipeline.checkpoint_round
        assert checkpoint is not None
        keys = len(checkpoint.keys)
        assert keys >= 3, "the rules that read vitals"
        async with asyncio.timeout(10):
            while pipeline.checkpoint_round is checkpoint:
                await asyncio.sleep(0.01)
        dispatch.cancel()
    spread_s = interval_s * spread
    assert len(staged_at) == keys
    for n, at in enumerate(staged_at):
        assert at - checkpoint.started_s >= spread_s * n / keys - 1e-3, f"slice {n} of {keys}"
    assert pipeline.store.processed_seq() == 1, "the round ended: the log is covered"


@pytest.mark.usefixtures("one_state_per_slice")
async def test_a_full_checkpoint_stops_the_spread_slices_of_a_round(tmp_path: Path) -> None:
    """A slice waiting for its share of the spread is not queued once a full checkpoint has
    written the round's states (nor counted as a slice of the next round)."""
    pipeline = _counting_pipeline(_with_interval(_config(tmp_path), 0.4))
    async with committing(pipeline.writer):
        await _process_logged(pipeline, [_vitals(0)])
        pipeline.start_checkpoint()
        await pipeline.writer.flush()  # the first slice is committed; the next one waits
        assert pipeline.work.empty()
        pipeline.checkpoint()
        await asyncio.sleep(0.4 * app.CHECKPOINT_SPREAD + 0.05)
        assert pipeline.work.empty()
        assert pipeline.checkpoint_round is None
    assert pipeline.engine.dirty() == []
