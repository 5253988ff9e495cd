"""Recent message digests: duplicates recognised, the oldest forgotten, saved only when changed."""

from __future__ import annotations

import base64
import hashlib

from daemon.dedup import RecentDigests, text


def test_a_repeat_is_recognised_and_the_oldest_forgotten() -> None:
    seen = RecentDigests(2)
    assert seen.add("t", b"a")
    assert not seen.add("t", b"a")
    assert seen.add("u", b"a"), "the topic is part of the message"
    assert seen.add("t", b"b")
    assert len(seen) == 2
    assert seen.add("t", b"a"), "forgotten once two newer ones came"


def test_changed_says_whether_a_checkpoint_has_anything_new_to_save() -> None:
    seen = RecentDigests(8)
    assert not seen.changed
    seen.add("t", b"a")
    assert seen.changed
    saved = seen.dump()
    assert not seen.changed
    seen.add("t", b"a")
    assert not seen.changed, "a duplicate adds nothing"
    again = RecentDigests(8)
    again.load(saved)
    assert not again.changed
    assert not again.add("t", b"a"), "the digests survive the round trip"


def _digest(topic: str, payload: bytes) -> bytes:
    return hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=16).digest()


def test_the_digests_are_saved_oldest_first_once_the_ring_has_wrapped() -> None:
    seen = RecentDigests(3)
    for payload in (b"a", b"b", b"c", b"d", b"e"):
        assert seen.add("t", payload)
    expected = b"".join(_digest("t", p) for p in (b"c", b"d", b"e"))
    assert seen.take() == expected
    assert seen.dump() == base64.b64encode(expected).decode("ascii")
    assert text(expected) == seen.dump()
    # Before the ring is full: only what was added.
    fresh = RecentDigests(3)
    fresh.add("t", b"a")
    assert fresh.take() == _digest("t", b"a")
    assert RecentDigests(3).take() == b""


def test_a_loaded_ring_forgets_its_oldest_first() -> None:
    seen = RecentDigests(3)
    for payload in (b"a", b"b", b"c", b"d"):
        seen.add("t", payload)
    again = RecentDigests(3)
    again.load(seen.dump())
    assert len(again) == 3
    assert not again.add("t", b"b"), "kept: b, c, d"
    assert again.add("t", b"a"), "forgotten before the dump"
    assert again.add("t", b"b"), "b was the oldest: the new a took its place"
    assert not again.add("t", b"d")
    assert again.take() == b"".join(_digest("t", p) for p in (b"d", b"a", b"b"))


def test_loading_more_digests_than_it_holds_keeps_the_most_recent() -> None:
    big = RecentDigests(5)
    for payload in (b"a", b"b", b"c", b"d", b"e"):
        big.add("t", payload)
    small = RecentDigests(2)
    small.load(big.dump())
    assert small.take() == _digest("t", b"d") + _digest("t", b"e")
    assert small.add("t", b"c")
    assert small.take() == _digest("t", b"e") + _digest("t", b"c")
