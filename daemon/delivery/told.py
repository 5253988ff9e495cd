"""What was sent to whom, read back from the audit journal's ``notice`` and ``delivery``
lines (``daemon.delivery.service`` writes them). Pure: ``wardd status`` and the bed page
both give it the bed's newest journal lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Told:
    """One notice to one receiver and where it stands."""

    delivery: int
    receiver: str
    notice: str  # alert, worse, escalation, repeat, closing, digest
    level: int
    at: str  # when the notice was made (ISO 8601)
    alerts: tuple[str, ...]
    state: str  # delivered, waiting, refused
    attempts: int
    detail: str  # what the receiver said last ("" before any attempt)
    receipt: str = ""  # what its receipt said a person did: "read", "accepted" ("" without one)
    receipt_by: str = ""  # who, as the receipt named them


def told(entries: Sequence[Mapping[str, Any]], alert_id: str | None = None) -> list[Told]:
    """The deliveries in ``entries`` (journal lines, oldest first), oldest first; with
    ``alert_id``, only the notices about that alert. A delivery whose notice line is not
    among ``entries`` (older) is left out."""
    rows: dict[int, dict[str, Any]] = {}
    for entry in entries:
        what = entry.get("what")
        if what == "notice" and (alert_id is None or alert_id in entry.get("alerts", ())):
            rows[int(entry["delivery"])] = {**entry, "state": "waiting", "attempts": 0, "detail": ""}
        elif what == "delivery" and int(entry.get("delivery", -1)) in rows:
            row = rows[int(entry["delivery"])]
            outcome = str(entry.get("outcome"))
            row["state"] = {"delivered": "delivered", "refused": "refused"}.get(outcome, "waiting")
            row["attempts"] = int(entry.get("attempt", 0))
            row["detail"] = str(entry.get("detail", ""))
        elif what == "receipt" and int(entry.get("delivery", -1)) in rows:
            row = rows[int(entry["delivery"])]
            row["receipt"] = str(entry.get("status", ""))
            row["receipt_by"] = str(entry.get("name") or entry.get("by") or "")
    return [
        Told(
            delivery=number,
            receiver=str(row.get("receiver", "")),
            notice=str(row.get("notice", "")),
            level=int(row.get("level", 0)),
            at=str(row.get("at", "")),
            alerts=tuple(str(a) for a in row.get("alerts", ())),
            state=row["state"],
            attempts=row["attempts"],
            detail=row["detail"],
            receipt=str(row.get("receipt", "")),
            receipt_by=str(row.get("receipt_by", "")),
        )
        for number, row in rows.items()
    ]


def told_lines(entries: Sequence[Mapping[str, Any]], alert_id: str, *, limit: int = 5) -> list[str]:
    """What ``wardd status`` says of an alert's notices, from the journal (oldest first):
    one line per delivery, its receiver, kind, time and where it stands; the last ``limit``."""
    lines = []
    for row in told(entries, alert_id)[-limit:]:
        state = f"{row.state} ({row.attempts} attempt{'s' if row.attempts != 1 else ''}"
        state += f", last: {row.detail})" if row.state != "delivered" and row.detail else ")"
        state += f", {row.receipt} by {row.receipt_by}" if row.receipt else ""
        lines.append(f"{row.receiver}: {row.notice} at {row.at}, {state}")
    return lines
