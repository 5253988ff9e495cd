"""Recent message digests: duplicates recognised, the oldest forgotten, saved only when changed."""

from __future__ import annotations

from daemon.dedup import RecentDigests


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
