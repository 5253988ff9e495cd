"""What the codec fuzz tests share: for the Alaris and Fresenius codecs, settings, byte
edits, and the stream fed to a decoder in arbitrary reads; for HL7 v2, the pieces that
messages are made of.

Each test file keeps what is its protocol's: its stock of frames, its framing bytes, the
parsers it tries on every frame, its HL7 messages' own codes and values.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SMALL = settings(max_examples=500, deadline=None)


def fuzz_settings(examples_variable: str, default: int = 10_000) -> settings:
    """The receive-path property's settings: ``default`` examples, or the number in ``examples_variable``."""
    examples = int(os.environ.get(examples_variable, str(default)))
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])


Edit = tuple[str, int, int]


def edits(framing: Sequence[int]) -> st.SearchStrategy[Edit]:
    """One edit anywhere in a stream: flip, insert or delete a byte, a protocol's framing byte often."""
    return st.tuples(
        st.sampled_from(["flip", "insert", "delete"]),
        st.integers(0, 400),
        st.one_of(st.sampled_from(list(framing)), st.integers(0, 255)),
    )


def edited(stream: bytes, changes: Sequence[Edit]) -> bytes:
    """``stream`` with ``changes`` applied in turn (positions wrap round)."""
    out = bytearray(stream)
    for op, position, byte in changes:
        if not out:
            out.append(byte)
            continue
        index = position % len(out)
        if op == "flip":
            out[index] ^= byte or 1
        elif op == "insert":
            out.insert(index, byte)
        else:
            del out[index]
    return bytes(out)


@st.composite
def streams(draw: st.DrawFn, stock: Sequence[bytes], framing: Sequence[int]) -> tuple[bytes, list[int]]:
    """A line's stream and the sizes of the reads it arrives in: pieces of the ``stock`` of
    valid frames and noise, edited anywhere (``framing`` bytes often)."""
    pieces = draw(st.lists(st.one_of(st.sampled_from(list(stock)), st.binary(max_size=24)), max_size=5))
    changes = draw(st.lists(edits(framing), max_size=4))
    cuts = draw(st.lists(st.integers(1, 48), max_size=6))
    return edited(b"".join(pieces), changes), cuts


class _Raw(Protocol):
    @property
    def raw(self) -> bytes: ...


Item = TypeVar("Item", bound=_Raw)


class _Decoder(Protocol[Item]):
    def feed(self, data: bytes) -> list[Item]: ...

    def flush(self) -> list[Item]: ...

    @property
    def pending(self) -> int: ...


def decode_in_reads(decoder: _Decoder[Item], stream: bytes, cuts: Sequence[int]) -> list[Item]:
    """Feed ``stream`` in reads of the ``cuts`` sizes (the rest at once), then flush.

    Asserts what every stream decoder guarantees: each byte lands in exactly one item,
    and nothing stays buffered after the flush.
    """
    items: list[Item] = []
    rest = stream
    for cut in cuts:
        items += decoder.feed(rest[:cut])
        rest = rest[cut:]
    items += decoder.feed(rest)
    items += decoder.flush()
    assert b"".join(item.raw for item in items) == stream, "every byte lands in exactly one item"
    assert decoder.pending == 0
    return items


def hl7_pieces(*own: str) -> st.SearchStrategy[str]:
    """One piece of an HL7 v2 message, for messages joined from them that are nearly right:
    segment names, delimiters and value types, a message's ``own`` codes and values, a time,
    and values no field should take (an overflowing number, a NUL, a letter beyond ASCII)."""
    return st.sampled_from(
        [
            *("MSH", "|", "^", "~", "\\", "&", "\r", "PID", "PV1", "OBR", "OBX", "NM", "X"),
            *own,
            *("-1e309", "20260302120000+0000", "\x00", "é"),
        ]
    )
