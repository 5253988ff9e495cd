"""Fuzzing the NE-1000 parsers: any bytes give a reply or a FrameError, nothing else."""

from __future__ import annotations

import contextlib
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.devices.ne1000 import (
    ETX,
    STX,
    Alarm,
    CommandError,
    Reply,
    ReplyDecoder,
    Status,
    encode_reply,
    parse_command,
    parse_reply,
    parse_safe_command,
)
from daemon.errors import FrameError

FUZZ = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Batches: each example checks many frames made from its own random source, so the
# total passes 10,000 frames while generation stays cheap.
BATCH = settings(max_examples=100, deadline=None)
FRAMES_PER_BATCH = 120

_DATA = st.sampled_from(
    ["", "10.00MH", "0.600UH", "I240.0W0.000ML", "NE1000V3.928", "270.0ML", *[e.value for e in CommandError]]
)


@st.composite
def valid_frames(draw: st.DrawFn) -> bytes:
    """Well-formed replies in either mode."""
    address = draw(st.integers(0, 99))
    status = draw(st.sampled_from(list(Status)))
    data = f"?{draw(st.sampled_from(list(Alarm))).value}" if status is Status.ALARM else draw(_DATA)
    return encode_reply(address, status, data, safe=draw(st.booleans()))


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    """Valid frames with bytes flipped, inserted, deleted or cut."""
    frame = bytearray(draw(valid_frames()))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut", "control"]))
        index = draw(st.integers(0, max(0, len(frame) - 1)))
        if op == "flip" and frame:
            frame[index] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            frame.insert(index, draw(st.integers(0, 255)))
        elif op == "delete" and frame:
            del frame[index]
        elif op == "cut":
            frame = frame[:index]
        elif op == "control":
            frame.insert(index, draw(st.sampled_from([STX, ETX, 0x0D, 0x00])))
    return bytes(frame)


_ANY = st.one_of(st.binary(max_size=80), mutated_frames(), valid_frames())


def _check_parse(frame: bytes) -> None:
    result: Reply | FrameError
    try:
        result = parse_reply(frame, address=draw_address(frame))
    except FrameError as exc:
        result = exc
    assert isinstance(result, Reply) or (isinstance(result, FrameError) and result.reason)


def draw_address(frame: bytes) -> int | None:
    """Check address filtering on half the inputs."""
    return 0 if len(frame) % 2 else None


@FUZZ
@given(_ANY)
def test_parse_reply_returns_reply_or_frame_error(frame: bytes) -> None:
    _check_parse(frame)


@FUZZ
@given(st.lists(_ANY, min_size=1, max_size=6), st.integers(1, 16))
def test_decoder_accounts_for_every_byte(frames: list[bytes], chunk: int) -> None:
    stream = b"".join(frames)
    decoder = ReplyDecoder(address=None)
    items = []
    for start in range(0, len(stream), chunk):
        items.extend(decoder.feed(stream[start : start + chunk]))
    items.extend(decoder.flush())
    for item in items:
        assert (item.reply is None) != (item.error is None)
        assert isinstance(item.reply, Reply) or isinstance(item.error, FrameError)
    # Nothing lost, nothing invented.
    assert b"".join(item.raw for item in items) == stream


@FUZZ
@given(st.lists(valid_frames(), min_size=1, max_size=5), st.binary(max_size=20))
def test_valid_frames_survive_surrounding_noise(frames: list[bytes], noise: bytes) -> None:
    # Noise without STX in front of valid frames never hides them.
    clean_noise = noise.replace(bytes([STX]), b"")
    items = ReplyDecoder().feed(clean_noise + b"".join(frames))
    replies = [item.reply for item in items if item.reply is not None]
    assert len(replies) == len(frames)


@settings(max_examples=800, deadline=None)
@given(st.one_of(st.binary(max_size=60), mutated_frames()))
def test_command_parsers_never_raise_anything_else(body: bytes) -> None:
    for parse in (parse_command, parse_safe_command):
        with contextlib.suppress(FrameError):
            parse(body)


def _random_frame(rng: random.Random) -> bytes:
    statuses = list(Status)
    status = rng.choice(statuses)
    data = f"?{rng.choice(list(Alarm)).value}" if status is Status.ALARM else rng.choice(_SAMPLE_DATA)
    frame = bytearray(encode_reply(rng.randrange(100), status, data, safe=rng.random() < 0.5))
    kind = rng.random()
    if kind < 0.2:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
    if kind < 0.3:
        return bytes(frame)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        index = rng.randrange(len(frame)) if frame else 0
        if op == 0 and frame:
            frame[index] ^= 1 << rng.randrange(8)
        elif op == 1:
            frame.insert(index, rng.randrange(256))
        elif op == 2 and frame:
            del frame[index]
        elif op == 3:
            frame = frame[:index]
        else:
            frame.insert(index, rng.choice([STX, ETX, 0x0D, 0x00]))
    return bytes(frame)


_SAMPLE_DATA = ["", "10.00MH", "0.600UH", "I240.0W0.000ML", "NE1000V3.928", *[e.value for e in CommandError]]


@BATCH
@given(st.randoms(use_true_random=False))
def test_ten_thousand_random_and_mutated_frames(rng: random.Random) -> None:
    frames = [_random_frame(rng) for _ in range(FRAMES_PER_BATCH)]
    for frame in frames:
        _check_parse(frame)
    stream = b"".join(frames)
    decoder = ReplyDecoder(address=rng.choice([None, 0, 42]))
    items = []
    step = rng.randint(1, 32)
    for start in range(0, len(stream), step):
        items.extend(decoder.feed(stream[start : start + step]))
    items.extend(decoder.flush())
    assert b"".join(item.raw for item in items) == stream
