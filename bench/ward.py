"""The ward the in-process benchmarks build: config data only, no daemon import (``bench.rules``
imports the daemon of another checkout when asked)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

WARD = "w1"


def protocol_beds(count: int, start: datetime) -> list[dict[str, Any]]:
    """``[[beds]]`` tables of ``count`` beds ``b0`` ... of ward ``WARD``, on the default
    protocol since ``start`` (one patient of 63 kg and 165 cm each)."""
    return [
        {
            "ward": WARD,
            "id": f"b{i}",
            "patient": f"p-{i}",
            "weight_kg": 63,
            "height_cm": 165,
            "protocol_start": start.isoformat(),
        }
        for i in range(count)
    ]
