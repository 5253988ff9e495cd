"""The bed page's history, from the daemon's own store: the alert timeline, the CRS/ICANS
suggestion history and the audit journal of one bed.

Everything here is read from the ``journal`` table (the alert transitions as they were
committed, see ``daemon.alerts.AlertService._journal_entry``), on the store's thread
(``read_history``, given to ``StoreWriter.call``), with bounded queries: by bed, newest
first, ``LIMIT``. The rest only lays the lines out as HTML, every value escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from daemon.alerts import SYSTEM_ACTOR
from daemon.clinical.crs import CRS_SUSPECTED, ICANS_SUSPECTED
from daemon.delivery.told import Told, told
from daemon.links.store import Store

TIMELINE_LINES = 200
"""The newest transitions the timeline shows (the journal pages further back)."""
JOURNAL_PAGE = 200
"""Journal lines per page: the newest, then "older"."""
SUGGESTION_LINES = 100
"""The newest CRS/ICANS transitions the suggestion history shows."""
SUGGESTIONS = (CRS_SUSPECTED, ICANS_SUSPECTED)
SENT_JOURNAL_LINES = 2000
"""The bed's newest journal lines searched for what was sent to whom (as `wardd status`)."""
SENT_ROWS = 50
"""The newest deliveries the bed page lists."""

Line = tuple[int, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class BedHistory:
    """What the bed page reads from the journal, each list newest first."""

    timeline: Sequence[Line]
    suggestions: Sequence[Line]
    journal: Sequence[Line]
    older: int | None  # the ``before`` of the next page, if there are older lines
    dose_events: Sequence[Line] = ()  # interruptions and boluses, for the dose chart
    sent: Sequence[Told] = ()  # what was sent to whom, newest first (with routes only)


def read_history(
    store: Store,
    bed: str,
    before_seq: int | None,
    dose_conditions: tuple[str, ...] = (),
    dose_lines: int = 0,
    *,
    sent: bool = False,
) -> BedHistory:
    """One bed's history (run on the store's thread: ``StoreWriter.call``); with
    ``dose_conditions``, also the newest ``dose_lines`` transitions of those conditions;
    with ``sent``, the newest deliveries of notices about the bed's alerts."""
    timeline = store.journal_lines(bed, limit=TIMELINE_LINES)
    suggestions = store.journal_lines(bed, limit=SUGGESTION_LINES, conditions=SUGGESTIONS)
    if before_seq is None:
        page = store.journal_lines(bed, limit=JOURNAL_PAGE + 1)
    else:
        page = store.journal_lines(bed, limit=JOURNAL_PAGE + 1, before_seq=before_seq)
    older = page[JOURNAL_PAGE - 1][0] if len(page) > JOURNAL_PAGE else None
    return BedHistory(
        timeline=[line for line in timeline if isinstance(line[1].get("alert"), Mapping)],
        suggestions=[line for line in suggestions if isinstance(line[1].get("alert"), Mapping)],
        journal=page[:JOURNAL_PAGE],
        older=older,
        dose_events=store.journal_lines(bed, limit=dose_lines, conditions=dose_conditions)
        if dose_conditions
        else (),
        sent=told(store.journal(bed=bed, limit=SENT_JOURNAL_LINES))[-SENT_ROWS:][::-1] if sent else (),
    )


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _time(at: Any) -> str:
    # The page's script shows it in the browser's time zone and language; this is the fallback.
    text = str(at or "")
    return f'<time datetime="{_e(text)}">{_e(text[:19].replace("T", " "))}</time>'


def _acked(entry: Mapping[str, Any], words: Mapping[str, str]) -> str:
    alert = entry.get("alert") or {}
    user = entry.get("who") if entry.get("what") == "ack" else alert.get("acked_by")
    if not user or user == SYSTEM_ACTOR:
        return ""
    name = entry.get("name") if entry.get("what") == "ack" else alert.get("acked_name")
    via = entry.get("via")
    who = f"{_e(name)} ({_e(user)})" if name else _e(user)
    via_text = f" {_e(words['via'])} {_e(words.get(f'via_{via}', via))}" if via else ""
    return f' · <span class="acked">{_e(words["acked_by"])} {who}{via_text}</span>'


def timeline_html(lines: Sequence[Line], words: Mapping[str, str]) -> str:
    """The alert timeline's items, newest first (the script prepends live ones alike)."""
    if not lines:
        return f'<li class="empty">{_e(words["no_timeline"])}</li>'
    items = []
    for seq, entry in lines:
        alert = entry["alert"]
        priority = str(alert.get("priority", ""))
        phase = str(entry.get("what", ""))
        state = str(entry.get("to") or alert.get("state", ""))
        items.append(
            f'<li class="t p-{_e(priority)}" data-seq="{seq}" data-alert-id="{_e(alert.get("id"))}"'
            f' data-phase="{_e(phase)}" data-state="{_e(state)}">'
            f"{_time(entry.get('at'))} "
            f'<span class="prio">{_e(words.get(f"priority_{priority}", priority))}</span> '
            f'<span class="cond">{_e(alert.get("condition"))}</span> · '
            f'<span class="phase">{_e(words.get(f"phase_{phase}", phase))}</span> · '
            f'<span class="state">{_e(words.get(f"state_{state}", state))}</span>'
            f"{_acked(entry, words)}</li>"
        )
    return "\n".join(items)


def _basis(details: Mapping[str, Any], words: Mapping[str, str]) -> str:
    basis = details.get("basis")
    if not isinstance(basis, list) or not basis:
        return ""
    parts = []
    for item in basis:
        if not isinstance(item, Mapping):
            continue
        text = f"{_e(item.get('domain'))} {_e(words['grade'])} {_e(item.get('grade'))}"
        if item.get("value") is not None:
            text += f" ({_e(item.get('value'))})"
        if item.get("by"):
            text += f" — {_e(item.get('by'))}"
        parts.append(f"<li>{text}</li>")
    return f'<ul class="basis">{"".join(parts)}</ul>'


def suggestions_html(lines: Sequence[Line], words: Mapping[str, str]) -> str:
    """The CRS/ICANS suggestion history as table rows, newest first."""
    if not lines:
        return f'<tr><td colspan="4" class="empty">{_e(words["no_suggestions"])}</td></tr>'
    rows = []
    for seq, entry in lines:
        alert = entry["alert"]
        details = alert.get("details") or {}
        phase = str(entry.get("what", ""))
        grade = details.get("grade") if isinstance(details, Mapping) else None
        rows.append(
            f'<tr class="p-{_e(alert.get("priority"))}" data-seq="{seq}">'
            f"<td>{_time(entry.get('at'))}</td>"
            f"<td>{_e(alert.get('condition'))} · {_e(words.get(f'phase_{phase}', phase))}</td>"
            f'<td class="grade">{"" if grade is None else _e(grade)}</td>'
            f"<td>{_basis(details, words) if isinstance(details, Mapping) else ''}</td></tr>"
        )
    return "\n".join(rows)


def journal_html(lines: Sequence[Line], words: Mapping[str, str]) -> str:
    """The audit journal's rows (what, who, when), newest first."""
    if not lines:
        return f'<tr><td colspan="4" class="empty">{_e(words["no_journal"])}</td></tr>'
    rows = []
    for seq, entry in lines:
        alert = entry.get("alert") or {}
        who = entry.get("who")
        if entry.get("name"):
            who = f"{entry.get('name')} ({who})"
        change = ""
        if entry.get("from") or entry.get("to"):
            change = f"{entry.get('from') or '—'} → {entry.get('to') or '—'}"
        via = entry.get("via")
        if via:
            change += f" · {words['via']} {words.get(f'via_{via}', via)}"
        rows.append(
            f'<tr data-seq="{seq}"><td>{_time(entry.get("at"))}</td><td>{_e(who)}</td>'
            f"<td>{_e(entry.get('what'))} {_e(alert.get('condition'))} <code>{_e(entry.get('id'))}</code></td>"
            f"<td>{_e(change)}</td></tr>"
        )
    return "\n".join(rows)


def sent_html(rows: Sequence[Told], words: Mapping[str, str]) -> str:
    """What was sent to whom: one row per notice and receiver, newest first, with where
    it stands (delivered, waiting, refused), its attempts and the receiver's last answer."""
    if not rows:
        return f'<tr><td colspan="5" class="empty">{_e(words["no_sent"])}</td></tr>'
    out = []
    for row in rows:
        state = words.get(f"sent_{row.state}", row.state)
        standing = f"{state} · {words['attempts']}: {row.attempts}"
        if row.detail:
            standing += f" · {words['last_answer']}: {row.detail}"
        if row.receipt:
            standing += (
                f" · {words.get(f'receipt_{row.receipt}', row.receipt)} {words['by']} {row.receipt_by}"
            )
        alerts = ", ".join(f"<code>{_e(a)}</code>" for a in row.alerts)
        out.append(
            f'<tr data-delivery="{row.delivery}" class="sent-{_e(row.state)}"><td>{_time(row.at)}</td>'
            f"<td>{_e(row.receiver)}</td><td>{_e(row.notice)} · {_e(words['level'])} {row.level}</td>"
            f"<td>{alerts}</td><td>{_e(standing)}</td></tr>"
        )
    return "\n".join(out)
