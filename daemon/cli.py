"""The ``wardd`` command line.

Every mistake a user can make gives one line on standard error that names the command,
what is wrong and where (a file, an option, an address), and an exit code: 2 for a
usage or input error (a bad argument, a missing or wrong file, an invalid config),
1 for a failure while running (an unreachable server, a disk that refuses a write).
Arguments are checked when they are parsed, before any work starts. A config with
errors lists each of them under that line. No traceback reaches the user: an error
nobody foresaw is named in one line too (its traceback with ``WARDD_TRACEBACK=1``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from daemon import config as config_module
from daemon import ids, logs
from daemon.errors import ConfigError, InputError, WarddError
from daemon.logs import LogFormat
from daemon.partition import (
    MAX_WORKERS,
    LayoutBusyError,
    Partition,
    for_partition,
    foreign_stores,
    layout_lock,
    repartition_plan,
    store_paths,
)

if TYPE_CHECKING:
    import socket

    from daemon.alerts import Alert

log = logging.getLogger("wardd")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_USAGE = 2
STATUS_JOURNAL_LINES = 2000  # per bed: where `wardd status` looks for what was sent to whom


class CliError(WarddError):
    """A command cannot do what it was asked: the line the user reads, and the exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line that names the command (not a usage block)."""

    def error(self, message: str) -> NoReturn:
        """Print ``wardd CMD: message`` and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def version() -> str:
    """The installed package's version (the source's, in a checkout run without installing)."""
    from importlib import metadata  # noqa: PLC0415

    try:
        return metadata.version("wardd")
    except metadata.PackageNotFoundError:
        from daemon import __version__  # noqa: PLC0415

        return __version__


# --------------------------------------------------------------------------- argument types


def _input_file(text: str) -> Path:
    """An argparse type: a file that exists and can be read."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: not readable (permission denied)")
    return path


def _writable_folder(folder: Path, for_what: str) -> None:
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {for_what}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {for_what}: folder {folder} is not writable")


def _output_file(text: str) -> Path:
    """An argparse type: a file that can be written, in a folder that exists (never made
    for it: a mistyped folder should not appear silently)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    if path.exists() and not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text}: permission denied")
    _writable_folder(path.parent if str(path.parent) else Path(), text)
    return path


def _output_folder(text: str) -> Path:
    """An argparse type: a folder that exists and is writable, or can be made in one that is."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    _writable_folder(path if path.exists() else path.parent, text)
    return path


def _mqtt_url(text: str) -> str:
    """An argparse type: a broker URL as the config takes it."""
    from pydantic import ValidationError  # noqa: PLC0415

    try:
        config_module.MqttConfig(url=text)
    except ValidationError:
        raise argparse.ArgumentTypeError(
            f"not a broker URL: {text!r} (like mqtt://host:1883 or mqtts://host:8883)"
        ) from None
    return text


def _influx_target(text: str) -> str:
    """An argparse type: an InfluxDB v1 URL, or a folder for line protocol."""
    if text.startswith(("http://", "https://")):
        return text.rstrip("/")
    if "://" in text:
        raise argparse.ArgumentTypeError(f"not an InfluxDB URL or a folder: {text!r} (http:// or https://)")
    return str(_output_folder(text))


def _alert_id(text: str) -> str:
    """An argparse type: an alert id as the alerts and `wardd status` show it."""
    from daemon.alerts import is_alert_id  # noqa: PLC0415

    if not is_alert_id(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an alert id (such as 12-FEVER-3, from `wardd status`)"
        )
    return text


def _user(text: str) -> str:
    """An argparse type: a broker user name that may acknowledge."""
    if not ids.is_user_id(text):
        raise argparse.ArgumentTypeError(f"{ids.shown(text)} is not a user name ({ids.USER_ID_RULE})")
    return text


def _display_name(text: str) -> str:
    """An argparse type: a person's name as the journal shows it."""
    problem = ids.name_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"the name {problem}")
    return text


def _load(path: str | Path) -> config_module.Config:
    return config_module.load(Path(path))


def _folder_problem(folder: Path) -> str | None:
    """Why the daemon could not make or write ``folder``, or ``None``."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    return None


def _check_state_folders(config: config_module.Config, source: str) -> None:
    """Refuse to start when the store or the capture could not be written (before anything runs)."""
    daemon = config.daemon
    places = [("daemon.state_dir", daemon.state_dir), ("daemon.store", daemon.store_path.parent)]
    if daemon.capture is not None:
        places.append(("daemon.capture", daemon.capture.parent))
    for option, folder in places:
        problem = _folder_problem(folder.absolute())
        if problem is not None:
            raise CliError(
                f"cannot use {folder} ({option} in {source}): {problem}; nothing was started",
                EXIT_FAILURE,
            )


def _setup_logging(level: str, log_format: LogFormat = "text") -> None:
    logs.configure(level, log_format)


def _redact_secrets(config: config_module.Config) -> None:
    """Keep the configured passwords and tokens out of every log line, whoever writes it."""
    from daemon.delivery.receivers import secrets_of  # noqa: PLC0415
    from daemon.metrics import RedactingFilter  # noqa: PLC0415

    secrets = (
        config.mqtt.password.resolve() or "",
        config.influx.password.resolve() or "",
        config.influx.token.resolve() or "",
        *secrets_of(config.receivers),
    )
    redacting = RedactingFilter(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redacting)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config; print every error at once, then what looks clinically implausible."""
    from daemon.plausible import review  # noqa: PLC0415

    try:
        config = _load(args.config)
    except ConfigError as exc:
        # Every problem at once: the errors, then what is implausible in the part that is valid.
        _print_config_error("wardd check-config", exc)
        valid = config_module.valid_part(Path(args.config))
        for warning in review(*valid) if valid is not None else []:
            print(f"{args.config}: warning: {warning}", file=sys.stderr)
        return EXIT_CONFIG
    warnings = review(config)
    if warnings and args.strict:
        print(
            f"wardd check-config: {args.config}: {len(warnings)} warning(s), refused under --strict",
            file=sys.stderr,
        )
        for warning in warnings:
            print(f"  {warning}", file=sys.stderr)
        return EXIT_USAGE
    for warning in warnings:
        print(f"{args.config}: warning: {warning}", file=sys.stderr)
    note = f"; {len(warnings)} warning(s)" if warnings else ""
    print(f"{args.config}: OK: {config_module.summary(config)}{note}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM or SIGINT: one process, or one per partition."""
    config = _load(args.config)
    if args.capture:
        config = config.model_copy(
            update={"daemon": config.daemon.model_copy(update={"capture": Path(args.capture)})}
        )
    _check_state_folders(config, str(args.config))
    _setup_logging(args.log_level or config.daemon.log_level, config.daemon.log_format)
    _redact_secrets(config)
    from daemon.plausible import review  # noqa: PLC0415

    for warning in review(config):
        log.warning("%s: %s", args.config, warning)

    try:
        # Held while the daemon runs: `wardd repartition` must not move the stores under it.
        with layout_lock(config, exclusive=False):
            return _run_locked(args, config)
    except LayoutBusyError as exc:
        raise CliError(f"{exc}; nothing was started", EXIT_FAILURE) from None


def _run_locked(args: argparse.Namespace, config: config_module.Config) -> int:
    """``wardd run`` once the layout's lock is held."""

    plan = repartition_plan(config)
    if plan.exists():
        raise CliError(
            f"a repartition of the stores was interrupted ({plan} is there); run "
            f"`wardd repartition --config {args.config}` to finish it",
            EXIT_FAILURE,
        )
    if args.partition is None:
        foreign = foreign_stores(config)
        if foreign:
            shown = ", ".join(str(p) for p in foreign)
            raise CliError(
                f"the state folder holds stores of another number of workers ({shown}); "
                f"daemon.workers is {config.daemon.workers}. Their beds' states would not be "
                f"found: set workers back, or move the states with `wardd repartition --config "
                f"{args.config}` (README, Scale).",
                EXIT_FAILURE,
            )
        if config.daemon.workers > 1:
            if args.capture:
                raise CliError("--capture records one process; use it with workers = 1")
            return _supervise(config)
    else:
        try:
            part = Partition.parse(args.partition)
        except ValueError as exc:
            raise CliError(f"--partition: {exc}") from None
        return _serve(for_partition(config, part), part=part)
    return _serve(config)


def _serve(config: config_module.Config, probes: str | None = None, *, part: Partition | None = None) -> int:
    """Run the pipeline of ``config`` (a whole ward's, or partition ``part``'s) until stopped;
    ``probes``: a worker's private socket for its health probes (``daemon.supervisor``)."""
    from daemon.app import build, tune_gc  # noqa: PLC0415 -- keeps check-config fast and light

    async def main() -> None:
        pipeline = build(config, probes=probes, part=part)
        tune_gc()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, pipeline.stop.set)
        log.info("wardd starting: %s", config_module.summary(config))
        await pipeline.run()

    return _run_async(main(), "wardd run", traceback_in_log=True)


def _supervise(config: config_module.Config) -> int:
    """One forked worker per partition, under a supervisor (``daemon.supervisor``)."""
    from daemon.app import build  # noqa: F401, PLC0415 -- imported once, for every worker
    from daemon.supervisor import supervise  # noqa: PLC0415

    probes: list[socket.socket] = []
    if config.health.port is not None:
        from daemon.web.probes import bind_probes  # noqa: PLC0415 -- aiohttp only when served

        probes = bind_probes(config.health)
    try:
        ok = supervise(config.daemon.workers, lambda part, private: _worker(config, part, private), probes)
    finally:
        for sock in probes:
            sock.close()
    return EXIT_OK if ok else EXIT_FAILURE


def _worker(config: config_module.Config, part: Partition, probes: str | None) -> NoReturn:
    """The life of a forked worker: run its partition, then exit, never returning into
    the supervisor's code (its loop, its lock's release)."""
    code = EXIT_FAILURE
    try:
        code = _serve(for_partition(config, part), probes, part=part)
    except BaseException:  # the process ends here whatever happened: say what it was
        log.critical("worker %s stopped on an unexpected error", part, exc_info=True)
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # skips what the supervisor registered to run at its exit


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _run_async(coro: Coroutine[Any, Any, object], command: str, *, traceback_in_log: bool = False) -> int:
    """Run ``coro``; a failure is said in one line per cause, and exits 1.

    ``traceback_in_log``: an unforeseen error's traceback goes to the log too (the
    service's journal, where a bug is diagnosed); other commands keep it for
    ``WARDD_TRACEBACK=1``.
    """
    try:
        asyncio.run(coro)
    except Exception as failure:  # the last line of defence: say what failed, exit non-zero
        for exc in _leaves(failure):
            if isinstance(exc, WarddError):
                print(f"{command}: {exc}", file=sys.stderr)
                continue
            if traceback_in_log:
                log.critical("%s stopped on an unexpected error in a task", command, exc_info=exc)
            else:
                _show_traceback(exc)
            print(f"{command}: unexpected failure: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _show_traceback(exc: BaseException) -> None:
    if os.environ.get("WARDD_TRACEBACK"):
        traceback.print_exception(exc, file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo ward."""
    _setup_logging(args.log_level)
    from daemon.demo import run_demo  # noqa: PLC0415

    config = Path(args.config) if args.config else None
    if config is not None and args.secure:
        raise CliError("--secure runs a broker of its own; it does not take --config")
    if config is not None:
        _load(args.config)  # report config errors before anything starts
    given = {"beds": args.beds, "speed": args.speed, "duration_s": args.duration}
    return _run_async(
        run_demo(config_path=config, secure=args.secure, **{k: v for k, v in given.items() if v is not None}),
        "wardd demo",
    )


def _number_in(low: float, high: float, kind: type[float] | type[int]) -> Any:
    """An argparse type: a number of ``kind`` with ``low < value <= high``."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not low < value <= high:
            raise argparse.ArgumentTypeError(f"must be above {low:g} and at most {high:g}, got {text}")
        return value

    return parse


def cmd_scenario(args: argparse.Namespace) -> int:
    """Run a scenario file (or a built-in by name) through simulators and the daemon."""
    _setup_logging(args.log_level)
    from daemon.config import InfluxConfig  # noqa: PLC0415
    from daemon.links.mqtt import broker_address  # noqa: PLC0415
    from simulators import scenario as scenarios  # noqa: PLC0415
    from simulators.broker import answers  # noqa: PLC0415

    loaded = scenarios.load_scenario(args.file)
    expected: Path | None = None
    if args.check:
        expected = _expected_alerts(args.file)
        scenarios.load_expected(expected)  # a broken file is refused before the run, not after
    # A config's broker settings (login, TLS), as every command that connects takes them.
    broker = _load(args.config).mqtt if args.config else None
    asked = args.mqtt or (broker.url if broker is not None else None)
    host, port = "", 0
    if asked is not None:
        # A broker the user named is used or the run fails: never an embedded one in its place.
        host, port, _ = broker_address(asked)
        if not answers(host, port):
            where = "--mqtt" if args.mqtt else f"mqtt.url in {args.config}"
            raise CliError(
                f"no MQTT broker answers at {host}:{port} ({where}); start it, or leave out "
                "--mqtt and --config to run on an embedded one",
                EXIT_FAILURE,
            )
    influx: InfluxConfig | None = None
    if args.influx_out:
        if args.influx_out.startswith(("http://", "https://")):
            influx = InfluxConfig(api="v1", url=args.influx_out, database="wardd_scenario")
        else:
            influx = InfluxConfig(api="none", spool_dir=Path(args.influx_out))
    try:
        result = asyncio.run(
            scenarios.run_scenario(
                loaded,
                fast=args.speed is None,
                speed=args.speed or 1.0,
                mqtt_url=args.mqtt,
                influx=influx,
                capture=args.capture,
                broker=broker,
            )
        )
    except TimeoutError:
        # The runner waits 30 s for its links and the daemon's to connect.
        where = f" at {host}:{port}" if asked is not None else ""
        raise CliError(
            f"the broker{where} did not let the run connect within 30 s (its login or TLS settings?)",
            EXIT_FAILURE,
        ) from None
    if args.alerts_out:
        args.alerts_out.write_text("".join(line + "\n" for line in result.alert_lines()), encoding="utf-8")
    days = result.simulated_s / 86400
    print(f"scenario {loaded.name}: {days:.2f} simulated day(s) in {result.wall_s:.1f} s; {result.counts}")
    print("\n".join(result.timeline))
    if args.capture:
        from daemon.capture import config_beside  # noqa: PLC0415

        print(f"capture: {args.capture}, made under {config_beside(args.capture)} (for `wardd replay`)")
    if expected is not None:
        problems = scenarios.check_expected(loaded.start, result.alerts, scenarios.load_expected(expected))
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        print(f"expected alerts ({expected}): {'OK' if not problems else f'{len(problems)} difference(s)'}")
        return EXIT_OK if not problems else EXIT_FAILURE
    return EXIT_OK


def _expected_alerts(name: str) -> Path:
    """The expected alerts of a scenario file, or of the built-in of that name."""
    from simulators import scenario as scenarios  # noqa: PLC0415

    candidates = [scenarios.expected_path(Path(name))]
    builtin = scenarios.builtin_path(name)
    if builtin is not None:
        candidates.append(scenarios.expected_path(builtin))
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise CliError(f"--check: no expected alerts for {name} ({candidates[0]} does not exist)")
    return found


def cmd_replay(args: argparse.Namespace) -> int:
    """Feed a capture file back through the rules and the alert engine."""
    config = _load(args.config)
    from daemon import __version__  # noqa: PLC0415
    from daemon.capture import config_beside, config_fingerprint  # noqa: PLC0415
    from daemon.metrics import Counters  # noqa: PLC0415
    from daemon.replay import read_events, replay, survey  # noqa: PLC0415

    found = survey(args.file)
    if found.problem is not None:
        raise CliError(f"{args.file} is not a capture: {found.problem}")
    if not found.events:
        raise CliError(f"{args.file} holds no event to replay")
    mine = config_fingerprint(config)
    others = sorted(found.fingerprints - {mine})
    if others and not args.force:
        beside = config_beside(args.file)
        use = f"replay it with --config {beside}" if beside.is_file() else "replay it with its own config"
        # Defaults a later version added change the fingerprint of the same file too.
        older = sorted(found.versions - {__version__})
        made_by = f", made by wardd {', '.join(older)}" if older else ""
        raise CliError(
            f"{args.file} was captured under another config than {args.config} (fingerprint "
            f"{others[0][:12]}{made_by}, this one {mine[:12]}): {use}, or add --force"
        )
    configured = {bed.id for bed in config.beds}
    if found.beds and not found.beds & configured and not args.force:
        shown = ", ".join(sorted(found.beds)[:5])
        raise CliError(
            f"none of the beds in {args.file} ({shown}) is in {args.config}: every event would be "
            "ignored; add --force to replay anyway"
        )
    if found.admissions and not args.force:
        raise CliError(
            f"{args.file} holds {len(found.admissions)} admission change(s) (beds changed at run "
            f"time; {found.admissions[0]}), which a replay does not apply: its alerts would not be "
            "the run's; add --force to replay on the config's beds anyway"
        )
    if not found.fingerprints:
        print(
            f"wardd replay: note: {args.file} records no config fingerprint (written by hand or by "
            "an older wardd): nothing says it was made under this config",
            file=sys.stderr,
        )
    counters = Counters()
    result = replay(config, read_events(args.file, counters, sys.stderr), tick_s=args.tick)
    lines = [json.dumps(t, ensure_ascii=False, sort_keys=True) for t in result.transitions]
    if args.alerts_out:
        args.alerts_out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    else:
        print("\n".join(lines))
    unknown = sorted(found.beds - configured)
    print(
        f"replay: {result.events} event(s), {result.ticks} tick(s), {len(lines)} transition(s), "
        f"{counters.total('replay.rejected')} line(s) skipped"
        + (f"; events of beds not in the config ignored: {', '.join(unknown)}" if unknown else ""),
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Print each bed's protocol, dose and open alerts from the daemon's persisted state."""
    config = _load(args.config)
    from daemon.alerts import load_book  # noqa: PLC0415
    from daemon.app import admitted, build_rules  # noqa: PLC0415
    from daemon.clinical.dose import status_lines  # noqa: PLC0415
    from daemon.clock import SystemClock  # noqa: PLC0415
    from daemon.delivery.service import told_lines  # noqa: PLC0415
    from daemon.links.store import Store  # noqa: PLC0415
    from daemon.wardview import ward_alerts  # noqa: PLC0415

    paths = store_paths(config)
    unwatched = []
    if config.daemon.workers == 1 and paths[0].exists():
        # The beds as admissions left them (README, "Admissions").
        store = Store(paths[0])
        try:
            config, ward = admitted(config, store)
        finally:
            store.close()
        unwatched = [o for o in ward.occupants().values() if not o.watched]
    engine = build_rules(config)
    alerts = []
    journals: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        if not path.exists():
            continue
        # WAL: reading beside a running daemon is safe; its states are those of its last checkpoint.
        store = Store(path)
        try:
            engine.restore(store.rule_states(), store.rule_windows())
            alerts += load_book(store).open_alerts()
            if config.routes:
                for bed in config.beds:
                    # The newest lines of the bed are enough for its open alerts' notices.
                    journals.setdefault(bed.id, []).extend(
                        store.journal(bed=bed.id, limit=STATUS_JOURNAL_LINES)
                    )
        finally:
            store.close()
    if not any(path.exists() for path in paths):
        print(f"(no state store at {paths[0]}: has the daemon run with this config?)")
    now = SystemClock().now()
    language = config.daemon.language
    for bed in config.beds:
        print("\n".join(status_lines(engine, bed, now, config=config, language=language)))
        open_alerts = sorted(
            (a for a in alerts if a.bed == bed.id), key=lambda a: (-a.priority.rank, a.since)
        )
        print(f"  open alerts: {len(open_alerts) or 'none'}")
        for alert in open_alerts:
            print(_status_line(alert, language))
            for line in told_lines(journals.get(bed.id, []), alert.id):
                print(f"      told {line}")
    for ward_id, own in ward_alerts(config, alerts).items():
        # The ward's links: one alert for every bed of the ward (daemon.tech_rules).
        print(f"ward {ward_id}: open alerts of the ward itself: {len(own)}")
        for alert in own:
            print(_status_line(alert, language))
    for occupant in unwatched:
        print(
            f"{occupant.ward}/{occupant.id}: patient {occupant.patient} admitted, no protocol watch "
            "(set one with `wardd admit --protocol ... --start ...`)"
        )
    return EXIT_OK


def cmd_repartition(args: argparse.Namespace) -> int:
    """Move the stores' rows to the layout of another number of workers (README, "Scale")."""
    config = _load(args.config)
    from datetime import UTC, datetime  # noqa: PLC0415

    from daemon.repartition import BrokerSessions, repartition  # noqa: PLC0415

    to = config.daemon.workers if args.to is None else args.to
    if args.prepare:
        return _prepare_sessions(config, to)
    sessions = None if args.without_broker else BrokerSessions(config.mqtt)
    try:
        report = repartition(config, to, now=datetime.now(UTC), say=print, sessions=sessions)
    except LayoutBusyError as exc:
        raise CliError(f"{exc}; stop it first (nothing was changed)", EXIT_FAILURE) from None
    if report.resumed:
        print(f"finished: {', '.join(str(p) for p in report.target.paths)} in place")
        for note in report.notes:
            print(f"  note: {note}")
    else:
        print("\n".join(report.lines()))
    print(f"old stores kept in {report.archive}")
    if to != config.daemon.workers:
        print(f"set daemon.workers = {to} in {args.config} before `wardd run`")
    return EXIT_OK


def _prepare_sessions(config: config_module.Config, to: int) -> int:
    """``wardd repartition --prepare``: the new workers' sessions only, beside a running daemon."""
    from daemon.repartition import BrokerSessions, find_layout, layout_sessions  # noqa: PLC0415

    source = find_layout(config.daemon.store_path, to)
    sessions = layout_sessions(config, to)
    BrokerSessions(config.mqtt).keep(sessions)
    print(
        f"the broker keeps from now on, for the {to} worker(s) of the new layout "
        f"({', '.join(sessions)}), what is published to their topics; stop the daemon "
        f"({source.count} worker(s) now), then run `wardd repartition` again without --prepare"
    )
    return EXIT_OK


def _status_line(alert: Alert, language: str) -> str:
    """One open alert in ``wardd status``."""
    return (
        f"    {alert.priority.upper():6} {alert.condition} [{alert.state}] id {alert.id} "
        f"since {alert.since.isoformat()}: {alert.message.get(language)}"
    )


def cmd_routes(args: argparse.Namespace) -> int:
    """Print who would be told of a sample alert, and when, if nobody acknowledged it."""
    config = _load(args.config)
    from datetime import UTC, datetime  # noqa: PLC0415

    from daemon.delivery.preview import Sample, preview  # noqa: PLC0415
    from daemon.events import Kind, Priority  # noqa: PLC0415

    if args.condition not in config_module.KNOWN_CONDITIONS:
        print(f"wardd routes: unknown condition {args.condition!r}", file=sys.stderr)
        return EXIT_CONFIG
    bed = config.beds[0] if config.beds and args.bed is None else None
    bed_id = args.bed or (bed.id if bed is not None else "1")
    ward = args.ward or next((b.ward for b in config.beds if b.id == bed_id), None) or "ward"
    try:
        at = datetime.fromisoformat(args.at) if args.at else datetime.now(UTC)
    except ValueError:
        print(f"wardd routes: --at {args.at!r} is not an ISO 8601 time", file=sys.stderr)
        return EXIT_CONFIG
    if at.tzinfo is None:
        print("wardd routes: --at needs a time zone offset, e.g. 2026-03-02T23:00:00+01:00", file=sys.stderr)
        return EXIT_CONFIG
    sample = Sample(args.condition, Priority(args.priority), Kind(args.kind), ward, bed_id, at)
    print("\n".join(preview(config, sample, horizon_s=args.horizon_s)))
    return EXIT_OK


def cmd_ack(args: argparse.Namespace) -> int:
    """Acknowledge an open alert through the broker, as a nursing station would."""
    config = _load(args.config)
    import aiomqtt  # noqa: PLC0415

    from daemon.alerts import send_ack  # noqa: PLC0415
    from daemon.links.mqtt import broker_address  # noqa: PLC0415
    from daemon.links.tls import client_context  # noqa: PLC0415
    from daemon.links.tls import describe as tls_reason  # noqa: PLC0415

    login = config.mqtt.username
    if login is not None and args.user is not None and args.user != login:
        print(
            f"wardd ack: --user {args.user!r} is not the broker login of this config ({login!r}): "
            "the acknowledgement's author is the user the broker authenticates",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    user = login or args.user
    if user is None:
        print(
            "wardd ack: who acknowledges? Set mqtt.username (and its password) in the config; "
            "on a broker without logins, give --user",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    host, port, tls = broker_address(config.mqtt.url)
    # The daemon's own connection settings: TLS, its CA, credentials.
    context = client_context(config.mqtt.tls, "mqtt") if tls else None

    async def ack() -> bool:
        async with aiomqtt.Client(
            host,
            port,
            username=login,
            password=config.mqtt.password.resolve(),
            tls_context=context,
        ) as client:
            reply = await send_ack(
                client, prefix=config.mqtt.topic_prefix, alert_id=args.id, user=user, name=args.by
            )
        if reply.ok:
            shown = f"{user} ({args.by.strip()})" if args.by else user
            print(f"acknowledged {args.id} ({reply.ward}/{reply.bed}) by {shown}: now {reply.state}")
        else:
            print(f"wardd ack: {args.id}: {reply.error}", file=sys.stderr)
        return reply.ok

    try:
        ok = asyncio.run(ack())
    except aiomqtt.MqttError as exc:
        print(
            f"wardd ack: cannot reach the broker at {host}:{port}: {tls_reason(exc) or exc}", file=sys.stderr
        )
        return EXIT_FAILURE
    return EXIT_OK if ok else EXIT_FAILURE


def _broker_user(command: str, config: config_module.Config, given: str | None) -> str | None:
    """The broker user a command acts as (the config's login; ``given`` only without one),
    or ``None`` after saying why on standard error."""
    login = config.mqtt.username
    if login is not None and given is not None and given != login:
        print(
            f"wardd {command}: --user {given!r} is not the broker login of this config ({login!r}): "
            "the command's author is the user the broker authenticates",
            file=sys.stderr,
        )
        return None
    user = login or given
    if user is None:
        print(
            f"wardd {command}: who is acting? Set mqtt.username (and its password) in the config; "
            "on a broker without logins, give --user",
            file=sys.stderr,
        )
    return user


def _admission(args: argparse.Namespace, command: str, body: dict[str, Any]) -> int:
    """Send one admin command to the running daemon through the broker and print its answer."""
    config = _load(args.config)
    import aiomqtt  # noqa: PLC0415

    from daemon.admission_desk import send_admission  # noqa: PLC0415
    from daemon.links.mqtt import broker_address  # noqa: PLC0415
    from daemon.links.tls import client_context  # noqa: PLC0415
    from daemon.links.tls import describe as tls_reason  # noqa: PLC0415

    user = _broker_user(command, config, args.user)
    if user is None:
        return EXIT_CONFIG
    host, port, tls = broker_address(config.mqtt.url)
    context = client_context(config.mqtt.tls, "mqtt") if tls else None

    async def send() -> bool:
        async with aiomqtt.Client(
            host,
            port,
            username=config.mqtt.username,
            password=config.mqtt.password.resolve(),
            tls_context=context,
        ) as client:
            reply = await send_admission(client, prefix=config.mqtt.topic_prefix, user=user, command=body)
        if reply.ok:
            print(reply.detail if reply.changed else f"nothing to change: {reply.detail}")
        else:
            print(f"wardd {command}: refused ({reply.reason}): {reply.error}", file=sys.stderr)
        return reply.ok

    try:
        ok = asyncio.run(send())
    except aiomqtt.MqttError as exc:
        print(
            f"wardd {command}: cannot reach the broker at {host}:{port}: {tls_reason(exc) or exc}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return EXIT_OK if ok else EXIT_FAILURE


def cmd_admit(args: argparse.Namespace) -> int:
    """Admit a patient to a bed, or set their protocol and its start (staff only)."""
    body: dict[str, Any] = {"action": "admit", "ward": args.ward, "bed": args.bed}
    for key, value in (
        ("patient", args.patient),
        ("weight_kg", args.weight_kg),
        ("height_cm", args.height_cm),
        ("protocol", args.protocol),
        ("protocol_start", args.start),
        ("delivered_before_ug", args.delivered_before),
        ("news2_spo2_scale", args.news2_spo2_scale),
    ):
        if value is not None:
            body[key] = value
    return _admission(args, "admit", body)


def cmd_transfer(args: argparse.Namespace) -> int:
    """Move a patient, with their watch, measurements and open alerts, to another bed."""
    body: dict[str, Any] = {"action": "transfer", "ward": args.ward, "bed": args.bed}
    if args.patient is not None:
        body["patient"] = args.patient
    if args.from_bed is not None:
        body["from_bed"] = args.from_bed
    return _admission(args, "transfer", body)


def cmd_discharge(args: argparse.Namespace) -> int:
    """Discharge a patient: the watch ends and the bed's open alerts close with the reason."""
    body: dict[str, Any] = {"action": "discharge", "reason": args.reason}
    if args.patient is not None:
        body["patient"] = args.patient
    if args.bed is not None:
        body["bed"] = args.bed
    return _admission(args, "discharge", body)


def _aware_time(text: str) -> str:
    """An argparse type: an ISO 8601 time with its offset."""
    from datetime import datetime  # noqa: PLC0415

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone offset, e.g. 2026-03-02T08:00:00+01:00")
    return when.isoformat()


def _delivered_before(text: str) -> float | str:
    """An argparse type: µg delivered before the watch, or ``unknown``."""
    if text == "unknown":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give the µg delivered before the watch, or unknown"
        ) from None
    if not 0 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"{text!r}: between 0 and 100000 µg")
    return value


def _ident(text: str) -> str:
    """An argparse type: a ward or bed id."""
    if not ids.is_config_id(text):
        raise argparse.ArgumentTypeError(f"{ids.shown(text)} is not a ward or bed id")
    return text


def _add_admissions(sub: Any) -> None:
    """``wardd admit``, ``transfer``, ``discharge`` (README, "Admissions")."""
    admit = sub.add_parser("admit", help="admit a patient to a bed, with their protocol and its start")
    transfer = sub.add_parser("transfer", help="move a patient and their watch to another bed")
    discharge = sub.add_parser("discharge", help="discharge a patient: the watch ends, its alerts close")
    for parser_ in (admit, transfer, discharge):
        parser_.add_argument("--config", required=True, help="TOML configuration file (for the broker)")
        parser_.add_argument(
            "--user", type=_user, help="who acts, on a broker without logins (otherwise mqtt.username)"
        )
    admit.add_argument("--ward", required=True, type=_ident)
    admit.add_argument("--bed", required=True, type=_ident)
    admit.add_argument("--patient", help="the patient's pseudonym (default: the one already in the bed)")
    admit.add_argument("--weight-kg", type=_number_in(0, 400, float))
    admit.add_argument("--height-cm", type=_number_in(30, 260, float))
    admit.add_argument("--protocol", help="the protocol (ssc-14d, all-cycle1, ... or one of [protocols])")
    admit.add_argument("--start", type=_aware_time, help="the protocol's start, ISO 8601 with its offset")
    admit.add_argument(
        "--delivered-before",
        type=_delivered_before,
        metavar="UG|unknown",
        help="µg delivered before the watch, for a protocol that started earlier (or: unknown)",
    )
    admit.add_argument("--news2-spo2-scale", type=int, choices=[1, 2])
    admit.set_defaults(func=cmd_admit)
    transfer.add_argument("--ward", required=True, type=_ident, help="the ward of the new bed")
    transfer.add_argument("--bed", required=True, type=_ident, help="the new bed")
    transfer.add_argument("--patient", help="the patient's pseudonym")
    transfer.add_argument("--from-bed", type=_ident, help="the bed the patient leaves")
    transfer.set_defaults(func=cmd_transfer)
    discharge.add_argument("--bed", type=_ident)
    discharge.add_argument("--patient")
    discharge.add_argument(
        "--reason", required=True, help="why the watch ends (journaled, on the closed alerts)"
    )
    discharge.set_defaults(func=cmd_discharge)


MIN_PASSWORD_CHARS = 8  # NIST SP 800-63B's minimum for a chosen password


def cmd_web_password(args: argparse.Namespace) -> int:
    """Read a password (from the terminal, asked twice, or one line of standard input) and
    print its hash for ``[[web.users]] password_hash``."""
    import getpass  # noqa: PLC0415

    from daemon.web.passwords import MAX_PASSWORD_BYTES, hash_password  # noqa: PLC0415

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise CliError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD_CHARS or len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise CliError(
            f"a password has {MIN_PASSWORD_CHARS} characters at least and {MAX_PASSWORD_BYTES} bytes at most"
        )
    print(hash_password(password))
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of an input payload or of the config."""
    from daemon.telemetry import VITALS_SCHEMA  # noqa: PLC0415

    schemas = {"vitals": VITALS_SCHEMA, "config": config_module.Config.model_json_schema()}
    print(json.dumps(schemas[args.which], indent=2, ensure_ascii=False))
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    """Write a starting config (the commented example) and the systemd unit where asked."""
    from daemon.resources import EXAMPLE_CONFIG, UNIT_FILE  # noqa: PLC0415

    if args.config is None and args.unit is None:
        raise CliError("say where to write: --config FILE, --unit FILE, or both")
    # Both checked before either is written: a refusal leaves nothing half done.
    for path in (args.config, args.unit):
        if path is not None and path.exists():
            raise CliError(f"{path} already exists; nothing was written (wardd init never overwrites)")
    written = []
    if args.config is not None:
        text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
        header = (
            f"# Written by `wardd init` (wardd {version()}) from the shipped example: edit the\n"
            f"# beds, pumps, broker and database, then `wardd check-config {args.config}`.\n#\n"
        )
        _write_new(args.config, header + text, 0o640)  # it will hold the broker's login
        written.append(f"config {args.config}")
    if args.unit is not None:
        config_path = (args.config or Path("/etc/wardd/ward.toml")).absolute()
        _write_new(args.unit, _unit_text(UNIT_FILE.read_text(encoding="utf-8"), config_path), 0o644)
        written.append(f"systemd unit {args.unit}")
    print(f"wardd init: wrote {' and '.join(written)}")
    return EXIT_OK


def _unit_text(shipped: str, config_path: Path) -> str:
    """The shipped unit with ExecStart naming this installation's wardd and the config."""
    installed = Path(sys.executable).parent / "wardd"
    program = str(installed) if installed.is_file() else f"{sys.executable} -m daemon"
    lines = [
        f"ExecStart={program} run --config {config_path}" if line.startswith("ExecStart=") else line
        for line in shipped.splitlines()
    ]
    return "\n".join(lines) + "\n"


def _write_new(path: Path, text: str, mode: int) -> None:
    """Create ``path`` (and its folder, if that folder's parent exists), never over a file."""
    path.parent.mkdir(exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as out:
            out.write(text)
    except FileExistsError:
        raise CliError(f"{path} already exists; wardd init never overwrites") from None
    path.chmod(mode)


def _add_demo(sub: Any) -> None:
    """``wardd demo``'s arguments."""
    demo = sub.add_parser("demo", help="run a demo ward on simulators (needs nothing installed by hand)")
    # At most 50 beds: a scenario's limit.
    demo.add_argument(
        "--beds",
        type=_number_in(0, 50, int),
        help="number of beds, each playing one of the built-in scenarios in turn (default 6)",
    )
    demo.add_argument(
        "--speed",
        type=_number_in(0, MAX_SPEED, float),
        help="simulated seconds per real second (default 60)",
    )
    demo.add_argument(
        "--duration", type=_number_in(0, 1e6, float), help="stop by itself after this many real seconds"
    )
    demo.add_argument(
        "--config", type=_input_file, help="use this config's broker and database where they answer"
    )
    demo.add_argument(
        "--secure",
        action="store_true",
        help="run it behind a locked-down mosquitto (TLS, logins, the shipped ACL); needs mosquitto and openssl",
    )
    demo.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    demo.set_defaults(func=cmd_demo)


# At most 300x: the simulated pumps answer in real time, and above that the daemon's
# reply timeout (1 simulated second) comes close to a pseudo-terminal's round trip.
MAX_SPEED = 300.0


def _add_scenario(sub: Any) -> None:
    """``wardd scenario``'s arguments."""
    scen = sub.add_parser(
        "scenario", help="run a scenario (file or built-in name) through simulators and the daemon"
    )
    scen.add_argument(
        "file", metavar="SCENARIO", help="scenario TOML file, or a built-in name such as published-case"
    )
    pace = scen.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=_number_in(0, MAX_SPEED, float), help="simulated time per real second")
    pace.add_argument("--fast", action="store_true", help="as fast as the pipeline allows (the default)")
    scen.add_argument(
        "--alerts-out", type=_output_file, help="write every alert transition here as JSON lines"
    )
    scen.add_argument(
        "--influx-out", type=_influx_target, help="a folder (line protocol) or an InfluxDB v1 URL"
    )
    scen.add_argument(
        "--capture",
        type=_output_file,
        help="also write the daemon's input events here (for `wardd replay`), and the config "
        "it ran under beside it (NAME.config.toml)",
    )
    scen.add_argument(
        "--mqtt",
        type=_mqtt_url,
        help="this broker, which must answer (default: the local one if it answers, else embedded)",
    )
    scen.add_argument(
        "--config",
        type=_input_file,
        help="take the broker (URL, login, TLS) from this config's [mqtt]; --mqtt overrides the URL",
    )
    scen.add_argument("--check", action="store_true", help="compare with the .expected.jsonl beside the file")
    scen.add_argument("--log-level", default="ERROR", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    scen.set_defaults(func=cmd_scenario)


def _add_routes(sub: Any) -> None:
    routes = sub.add_parser("routes", help="print who would be told of a sample alert, and when")
    routes.add_argument("--config", required=True, help="TOML configuration file")
    routes.add_argument(
        "--condition", default="HYPOTENSION", help="the alert's condition (default HYPOTENSION)"
    )
    routes.add_argument("--priority", choices=["low", "medium", "high"], default="high")
    routes.add_argument("--kind", choices=["physiological", "technical"], default="physiological")
    routes.add_argument("--bed", help="bed id (default: the first configured bed)")
    routes.add_argument("--ward", help="ward (default: the bed's)")
    routes.add_argument("--at", help="when it starts, ISO 8601 with an offset (default: now)")
    routes.add_argument(
        "--horizon-s",
        type=_number_in(1, 7 * 86_400, float),
        default=3600.0,
        help="how far ahead to look, in seconds (default 3600)",
    )
    routes.set_defaults(func=cmd_routes)


def parser() -> argparse.ArgumentParser:
    """The argument parser (every sub-command)."""
    top = Parser(prog="wardd", description="Ward daemon for patients on a continuous blinatumomab infusion.")
    top.add_argument("--version", action="version", version=f"wardd {version()}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check-config", help="validate a configuration file and report every error")
    check.add_argument("config", help="TOML configuration file")
    check.add_argument(
        "--strict", action="store_true", help="exit 2 on warnings too (implausible values), not only errors"
    )
    check.set_defaults(func=cmd_check_config)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", required=True, help="TOML configuration file")
    run.add_argument(
        "--capture",
        type=_output_file,
        help="append every input event to this JSON-lines file (for `wardd replay`)",
    )
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument(
        "--partition",
        metavar="I/N",
        help="run only partition I of N (what the supervisor starts when daemon.workers > 1)",
    )
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="print each bed's protocol day, dose and open alerts")
    status.add_argument("--config", required=True, help="TOML configuration file")
    status.set_defaults(func=cmd_status)

    repart = sub.add_parser(
        "repartition",
        help="move the stores' states, alerts and journal to the layout of another number of workers",
    )
    repart.add_argument("--config", required=True, help="TOML configuration file")
    repart.add_argument(
        "--to",
        type=_number_in(0, MAX_WORKERS, int),
        help="the number of workers to move to (default: the config's daemon.workers)",
    )
    broker = repart.add_mutually_exclusive_group()
    broker.add_argument(
        "--prepare",
        action="store_true",
        help="only make the broker keep sessions for the new workers from now on, beside the "
        "running daemon, so that nothing published while it is stopped and moved is lost",
    )
    broker.add_argument(
        "--without-broker",
        action="store_true",
        help="leave the broker alone: no sessions kept for the new workers' client ids before "
        "they first connect (what is published until then is not read), the old ones not ended",
    )
    repart.set_defaults(func=cmd_repartition)

    _add_routes(sub)

    ack = sub.add_parser("ack", help="acknowledge an open alert by its id")
    ack.add_argument("--config", required=True, help="TOML configuration file (for the broker)")
    ack.add_argument(
        "id",
        metavar="ALERT_ID",
        type=_alert_id,
        help="the alert id (as shown in the alert and by `wardd status`)",
    )
    ack.add_argument(
        "--by",
        type=_display_name,
        help="the display name of the person who acknowledges (the author is the broker's user)",
    )
    ack.add_argument(
        "--user",
        type=_user,
        help="the user who acknowledges, on a broker without logins (otherwise the config's mqtt.username)",
    )
    ack.set_defaults(func=cmd_ack)
    _add_admissions(sub)

    _add_demo(sub)
    _add_scenario(sub)

    rep = sub.add_parser("replay", help="feed a capture file back through the rules and alert engine")
    rep.add_argument(
        "file", metavar="CAPTURE", type=_input_file, help="JSON-lines capture (wardd run/scenario --capture)"
    )
    rep.add_argument("--config", required=True, help="the configuration the capture was made with")
    rep.add_argument(
        "--alerts-out", type=_output_file, help="write the alert transitions here (default: standard output)"
    )
    rep.add_argument(
        "--tick", type=_number_in(0, 86400, float), help="seconds between ticks (default: the config's)"
    )
    rep.add_argument(
        "--force",
        action="store_true",
        help="replay even under another config than the capture's, or with none of its beds",
    )
    rep.set_defaults(func=cmd_replay)

    init = sub.add_parser(
        "init", help="write a commented starting config and the systemd unit file (never over a file)"
    )
    init.add_argument("--config", type=Path, help="where to write the config (e.g. /etc/wardd/ward.toml)")
    init.add_argument(
        "--unit", type=Path, help="where to write the unit (e.g. /etc/systemd/system/wardd.service)"
    )
    init.set_defaults(func=cmd_init)

    web_password = sub.add_parser(
        "web-password",
        help="read a password (terminal or standard input) and print its hash for [[web.users]]",
    )
    web_password.set_defaults(func=cmd_web_password)

    schema = sub.add_parser("schema", help="print a JSON Schema")
    schema.add_argument("which", choices=["vitals", "config"])
    schema.set_defaults(func=cmd_schema)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wardd`` console script: every failure is one line and an exit code."""
    args = parser().parse_args(argv)
    command = f"wardd {args.command}"
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        _print_config_error(command, exc)
        return EXIT_CONFIG
    except CliError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return exc.code
    except InputError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # The reader went away (`wardd replay ... | head`): nothing left to say to it.
        sys.stderr.close()
        return EXIT_OK
    except WarddError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{command}: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # the last line of defence: a bug, named in one line
        _show_traceback(exc)
        print(
            f"{command}: unexpected failure: {type(exc).__name__}: {exc} (WARDD_TRACEBACK=1 shows where)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


def _print_config_error(command: str, exc: ConfigError) -> None:
    """One line for a file that cannot be read; otherwise a line and every error under it."""
    started = "" if command == "wardd check-config" else "; nothing was started"
    if len(exc.issues) == 1 and not exc.issues[0].location:
        print(f"{command}: {exc.source}: {exc.issues[0].reason}{started}", file=sys.stderr)
        return
    print(f"{command}: {exc.source}: {len(exc.issues)} error(s){started}", file=sys.stderr)
    for issue in exc.issues:
        print(f"  {issue}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
