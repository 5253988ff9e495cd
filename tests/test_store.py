"""Atomic writes and JSON reads of small durable files."""

from __future__ import annotations

from pathlib import Path

from daemon.store import read_json, write_atomic, write_json_atomic


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    write_atomic(target, "one")
    write_atomic(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


def test_write_atomic_takes_bytes(tmp_path: Path) -> None:
    target = tmp_path / "batch.lp"
    write_atomic(target, b"m v=1\n")
    assert target.read_bytes() == b"m v=1\n"


def test_json_round_trip_and_missing_file(tmp_path: Path) -> None:
    target = tmp_path / "rules.json"
    assert read_json(target) is None
    write_json_atomic(target, {"bed": "é", "n": [1, 2.5, None]})
    assert target.read_text(encoding="utf-8") == '{"bed":"é","n":[1,2.5,null]}'
    assert read_json(target) == {"bed": "é", "n": [1, 2.5, None]}
