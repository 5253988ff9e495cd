"""The results: a table on the terminal and JSON on disk (``bench/results/<timestamp>.json``).

Every row is a median over the rounds, with the ratio against each baseline measured
in the same run (``wardd / bare``, ``wardd / node-red``): a ratio above 1 means more
of the metric, whichever way is better (the ``better`` column says which).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.figures import Figure, Measured, summary

RESULTS = Path(__file__).resolve().parent / "results"


def git_commit() -> str:
    """The commit measured (with ``+dirty`` when the tree has changes)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "daemon"], capture_output=True, text=True, check=False
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head.strip() + ("+dirty" if dirty.strip() else "")


@dataclass
class Results:
    """Every run of every figure, with the machine and the options."""

    options: dict[str, Any]
    started: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    load_before: tuple[float, ...] = field(default_factory=os.getloadavg)
    load_after: tuple[float, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    runs: dict[str, dict[str, list[Measured]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    profile: list[tuple[str, int, float]] = field(default_factory=list)
    commit: str = field(default_factory=git_commit)  # at the start: the code measured

    def add(self, figure: str, system: str, measured: Measured) -> None:
        """One run's numbers."""
        self.runs.setdefault(figure, {}).setdefault(system, []).append(measured)


def fmt(value: float) -> str:
    """A number for the table: 3 significant figures, thousands separated."""
    if value != value:  # noqa: PLR0124 -- NaN
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{max(0, 2 - math.floor(math.log10(abs(value))))}f}"


def rows(figures: list[Figure], results: Results) -> list[list[str]]:
    """The table: figure, metric, system, median, runs, ratios against the baselines."""
    out: list[list[str]] = []
    for figure in figures:
        runs = results.runs.get(figure.key)
        if not runs:
            continue
        medians = summary(runs)
        out.append([figure.title, "", "", "", "", ""])
        for metric, unit, higher in figure.shown:
            for system in figure.systems:
                value = medians.get(system, {}).get(metric)
                if value is None:
                    continue
                ratios = []
                for base in () if system in figure.baselines else figure.baselines:
                    ref = medians.get(base, {}).get(metric)
                    if base != system and ref and value == value and ref == ref:  # noqa: PLR0124
                        ratios.append(f"{value / ref:.2f}× {base}")
                out.append(
                    [
                        f"  {metric} ({unit}, {'higher' if higher else 'lower'} is better)",
                        system,
                        fmt(value),
                        str(len([m for m in runs[system] if metric in m])),
                        ", ".join(ratios),
                        "",
                    ]
                )
    return out


def table(figures: list[Figure], results: Results) -> str:
    """The whole table as text."""
    header = ["figure / metric", "system", "median", "runs", "ratio", ""]
    body = rows(figures, results)
    widths = [max(len(r[i]) for r in [header, *body] if r[1] or i == 0) for i in range(5)]
    lines = []
    for row in [header, *body]:
        if not row[1] and row is not header:
            lines.append(row[0])
            continue
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])).rstrip())
    load = " ".join(f"{x:.2f}" for x in results.load_before)
    after = " ".join(f"{x:.2f}" for x in results.load_after)
    lines.append(f"load average before: {load}; after: {after}; {os.cpu_count()} CPUs")
    if results.profile:
        # --profile runs only the figures it can sample (``bench.__main__.PROFILED``).
        lines.append(f"wardd during the {' and '.join(f.key for f in figures)}, py-spy samples by stage:")
        lines.extend(f"  {name:60} {n:7d} {pct:5.1f} %" for name, n, pct in results.profile)
    lines.extend(f"error: {e}" for e in results.errors)
    return "\n".join(lines)


def write(figures: list[Figure], results: Results, folder: Path = RESULTS) -> Path:
    """``<folder>/<timestamp>.json``: options, machine, every run and the medians."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{results.started.replace(':', '')}.json"
    doc = {
        "started": results.started,
        "commit": results.commit,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_before": results.load_before,
            "load_after": results.load_after,
        },
        "versions": results.versions,
        "options": results.options,
        "figures": {
            figure.key: {
                "title": figure.title,
                "baselines": figure.baselines,
                "shown": [{"metric": m, "unit": u, "higher_is_better": h} for m, u, h in figure.shown],
                "runs": results.runs[figure.key],
                "median": summary(results.runs[figure.key]),
            }
            for figure in figures
            if figure.key in results.runs
        },
        "profile": [{"stage": s, "samples": n, "percent": p} for s, n, p in results.profile],
        "errors": results.errors,
    }
    path.write_text(json.dumps(_no_nan(doc), indent=1, allow_nan=False) + "\n")
    return path


def _no_nan(value: Any) -> Any:
    """``value`` with NaN (a metric that could not be measured) as ``null``: strict JSON."""
    if isinstance(value, float) and value != value:  # noqa: PLR0124 -- NaN
        return None
    if isinstance(value, dict):
        return {key: _no_nan(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(item) for item in value]
    return value
