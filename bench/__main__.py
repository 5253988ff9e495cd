"""Run every figure side by side: ``python -m bench [--only burst,latency] [--rounds N] [--quick] [--profile]``.

Each round starts a private mosquitto per figure (the shipped configuration, see
``bench.broker``) and measures every system of that figure on it, in an order that
rotates from round to round (round 1: wardd, node-red, bare; round 2: node-red, bare,
wardd; ...), so that drift in the machine's load falls on every system alike. The
table gives medians over the rounds and ratios against the baselines of the same run;
it never compares with a fixed goal. Results go to ``bench/results/<timestamp>.json``.

Figures (``--only`` takes these keys, or their prefixes: ``latency`` is both sizes):
burst, burst-online, latency-<beds>x<hz>hz, memory, startup, catchup, storage,
published-case. See README, "Performance".
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import nodered, report, systems
from bench.broker import broker, mosquitto_version
from bench.figures import Context, Figure, Sizes, figures
from bench.pyspy import Profiler

QUICK = Sizes(
    burst_beds=200,
    burst_messages=5_000,
    latency=((200, 1.0), (1000, 0.2)),
    latency_s=15.0,
    fever_every=20,
    memory_beds=(10, 100, 1000),
    startup_beds=1000,
    catchup_beds=200,
    catchup_s=30,
    storage_messages=5_000,
    case_hours=2.0,
)


PROFILED = ("burst", "catchup", "latency")  # "latency": every latency-<beds>x<hz> figure
"""The figures ``--profile`` can sample: a queue that wardd drains (``bench.figures.offline_burst``),
and the paced load of a latency figure."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated figure keys or prefixes (default: all)")
    parser.add_argument("--systems", default="", help="comma-separated systems to measure (default: all)")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure wardd-floor: wardd without its clinical rules (bench.floor)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of every figure (default 3; 1 with --quick or --profile)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, one round: a smoke run of a few minutes"
    )
    parser.add_argument(
        "--beds", type=int, help="beds of the burst, catch-up and storage figures (default 1000)"
    )
    parser.add_argument("--messages", type=int, help="messages of the burst figures (default 50,000)")
    parser.add_argument("--duration", type=float, help="seconds of paced load per latency run (default 60)")
    parser.add_argument("--case-hours", type=float, help="simulate only this much of the published case")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="the burst (or, with --only catchup or latency-N, the catch-up or the paced load) with wardd only, "
        "under py-spy, time by stage",
    )
    parser.add_argument(
        "--workers",
        default="1,2",
        help="comma-separated daemon.workers counts of wardd, each measured as a system of its "
        "own (wardd, wardd-w2, ...; default 1,2)",
    )
    parser.add_argument("--out", type=Path, default=report.RESULTS, help="folder for the JSON results")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs, configs)")
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    """The sizes the options ask for."""
    sizes = QUICK if args.quick else Sizes()
    changes: dict[str, object] = {}
    if args.beds:
        changes |= {"burst_beds": args.beds, "catchup_beds": args.beds}
    if args.messages:
        changes |= {"burst_messages": args.messages, "storage_messages": args.messages}
    if args.duration:
        changes["latency_s"] = args.duration
    if args.case_hours:
        changes["case_hours"] = args.case_hours
    return dataclasses.replace(sizes, **changes)  # type: ignore[arg-type]


def chosen(all_figures: list[Figure], only: str) -> list[Figure]:
    """The figures ``--only`` names (keys or prefixes)."""
    if not only:
        return all_figures
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    picked = [f for f in all_figures if any(f.key == w or f.key.startswith(w) for w in wanted)]
    if not picked:
        raise SystemExit(f"no figure matches {only!r}; figures: {', '.join(f.key for f in all_figures)}")
    return picked


def rotated(names: tuple[str, ...], round_index: int) -> list[str]:
    """The systems in this round's order."""
    shift = round_index % len(names) if names else 0
    return [*names[shift:], *names[:shift]]


def main(argv: list[str] | None = None) -> int:
    """Run the rounds, print the table, write the JSON."""
    args = parse_args(argv)
    try:
        counts = tuple(dict.fromkeys(int(n) for n in args.workers.split(",") if n.strip()))
    except ValueError:
        raise SystemExit(f"--workers: {args.workers!r} is not a list of numbers") from None
    if not counts or min(counts) < 1:
        raise SystemExit(f"--workers: {args.workers!r}: give at least one count, each 1 or more")
    if args.profile:
        counts = counts[:1]  # py-spy follows one process
    systems.set_workers(counts, floor=args.floor)
    sizes = sizes_from(args)
    rounds_given = "--rounds" in (argv if argv is not None else sys.argv)
    rounds = 1 if (args.quick or args.profile) and not rounds_given else args.rounds
    picked = chosen(figures(sizes), (args.only or "burst") if args.profile else args.only)
    if args.profile:
        picked = [f for f in picked if f.key in PROFILED or f.key.partition("-")[0] == "latency"]
        if not picked:
            raise SystemExit(f"--profile: {args.only!r}: only {' and '.join(PROFILED)} can be profiled")
    only_systems = {s.strip() for s in args.systems.split(",") if s.strip()}
    if args.profile:
        only_systems = {systems.wardd_name(counts[0])}
    results = report.Results(
        options={**vars(args), "out": str(args.out), "rounds": rounds, "sizes": dataclasses.asdict(sizes)}
    )
    results.versions = {"mosquitto": mosquitto_version(), "python": sys.version.split()[0]}
    if any("node-red" in f.systems for f in picked) and (not only_systems or "node-red" in only_systems):
        results.versions["node-red"] = nodered.version()
    workdir = Path(tempfile.mkdtemp(prefix="wardd-bench-"))
    profiler = Profiler(workdir) if args.profile else None
    print(f"wardd bench: {rounds} round(s), figures {', '.join(f.key for f in picked)}; work in {workdir}")
    try:
        for index in range(rounds):
            for figure in picked:
                if figure.once and index > 0:
                    continue
                run_figure(
                    figure,
                    index,
                    sizes=sizes,
                    workdir=workdir,
                    results=results,
                    only_systems=only_systems,
                    profiler=profiler,
                )
    except KeyboardInterrupt:
        results.errors.append("interrupted")
    finally:
        results.load_after = os.getloadavg()
        if profiler is not None:
            results.profile = profiler.table()
        print()
        print(report.table(picked, results))
        print(f"results: {report.write(picked, results, args.out)}")
        if args.keep or results.errors:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if results.errors else 0


def run_figure(
    figure: Figure,
    index: int,
    *,
    sizes: Sizes,
    workdir: Path,
    results: report.Results,
    only_systems: set[str],
    profiler: Profiler | None,
) -> None:
    """One round of one figure: a fresh broker, every system in this round's order."""
    folder = workdir / f"round{index + 1}" / figure.key
    with broker(folder / "broker") as server:
        ctx = Context(
            server.url,
            folder,
            sizes,
            profile=profiler.attach if profiler else None,
            broker_pid=server.proc.pid if server.proc is not None else None,
        )
        for name in rotated(figure.systems, index):
            if only_systems and name not in only_systems and systems.base_name(name) not in only_systems:
                continue
            started = time.monotonic()
            print(f"round {index + 1} {figure.key:18} {name:9} ", end="", flush=True)
            try:
                measured = figure.measure(ctx, name)
            except Exception as exc:  # one failed run is reported, the others go on
                results.errors.append(f"round {index + 1} {figure.key} {name}: {exc}")
                print(f"failed: {str(exc).splitlines()[0]}")
                traceback.print_exc(file=sys.stderr)
                continue
            results.add(figure.key, name, measured)
            shown = ", ".join(
                f"{metric} {report.fmt(measured[metric])}"
                for metric, _, _ in figure.shown
                if metric in measured
            )
            print(f"{time.monotonic() - started:6.1f} s  {shown}")


if __name__ == "__main__":
    sys.exit(main())
