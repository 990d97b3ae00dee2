"""`cds-service`: serve the CDS Hooks service, evaluate a FHIR Bundle, check configuration, list fixtures."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from cds_service.errors import ConfigurationError, DataFileError, InputError

EXIT_OK = 0
EXIT_USAGE = 2
MAX_INSTANTS = 100_000  # a course evaluation's instants (a guard against a mistyped --every)
DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(m|min|h|d)")
DURATION_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days"}
ISO_DURATION = re.compile(r"P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?)?")


def _parse_at(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--at must be an ISO-8601 date-time, got {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _parse_every(value: str) -> timedelta:
    """A duration: 30m, 6h, 1d (or ISO 8601 PT6H, P1D)."""
    match = DURATION.fullmatch(value.strip()) or ISO_DURATION.fullmatch(value.strip().upper())
    if match is None:
        raise argparse.ArgumentTypeError(f"--every must be a duration such as 6h, 30m or 1d, got {value!r}")
    if match.re is DURATION:
        amount, unit = float(match.group(1)), match.group(2)
        every = timedelta(**{DURATION_UNITS[unit]: amount})
    else:
        days, hours, minutes = (float(g) if g else 0.0 for g in match.groups())
        every = timedelta(days=days, hours=hours, minutes=minutes)
    if every <= timedelta(0):
        raise argparse.ArgumentTypeError("--every must be longer than zero")
    return every


def _instants(args: argparse.Namespace) -> list[datetime] | str:
    """The instants of a course evaluation, or the reason the options are wrong."""
    if args.start is None and args.end is None and args.every is None:
        return [args.at] if args.at else []
    if args.at is not None:
        return "--at cannot be combined with --from/--to/--every"
    if args.start is None or args.end is None or args.every is None:
        return "--from, --to and --every go together"
    if args.end < args.start:
        return "--to is before --from"
    count = int((args.end - args.start) / args.every) + 1
    if count > MAX_INSTANTS:
        return f"{count} instants: at most {MAX_INSTANTS} (choose a longer --every)"
    return [args.start + i * args.every for i in range(count)]


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cds_service.engine.evaluate import evaluate_at
    from cds_service.engine.knowledge import load_knowledge
    from cds_service.engine.record import read_record
    from cds_service.engine.report import text_report
    from cds_service.engine.serialize import to_json_bytes

    instants = _instants(args)
    if isinstance(instants, str):
        print(f"error: {instants}", file=sys.stderr)
        return EXIT_USAGE

    try:
        kb = load_knowledge(Path(args.mappings) if args.mappings else None)
    except DataFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    path = Path(args.file)
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    except orjson.JSONDecodeError as exc:
        print(f"error: {path} is not valid JSON ({exc})", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        print(f"error: {path} is not a FHIR Bundle (resourceType must be 'Bundle')", file=sys.stderr)
        return EXIT_USAGE
    try:
        record = read_record(data, knowledge=kb)
    except InputError as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.start is None:  # one instant (default now): the full document or report
        result = evaluate_at(record, instants[0] if instants else None)
        if args.format == "json":
            sys.stdout.buffer.write(to_json_bytes(result, indent=True) + b"\n")
        else:
            sys.stdout.write(text_report(result, kb))
        return EXIT_OK
    for at in instants:  # a course: one line per instant (JSON Lines, or a one-line summary)
        result = evaluate_at(record, at)
        if args.format == "json":
            sys.stdout.buffer.write(to_json_bytes(result) + b"\n")
        else:
            sys.stdout.write(course_line(result) + "\n")
    return EXIT_OK


def course_line(result: EvaluationResult) -> str:
    """One line of a course evaluation: instant, day, CRS, and every registered instrument's summary."""
    from cds_service.engine.instruments.registry import IEC_HS

    iec = IEC_HS.result(result.instruments)
    day = result.therapy.day_post_infusion
    gaps = f" ({'; '.join(gap.text for gap in iec.gaps)})" if iec.gaps else ""
    return (
        f"{result.at.isoformat().replace('+00:00', 'Z')}  day {day if day is not None else '?':>3}  "
        f"CRS {result.crs_status:9}  IEC-HS {IEC_HS.summarize(iec)}{gaps}"
    )


def cmd_replay(args: argparse.Namespace) -> int:
    from cds_service.replay.command import cmd_replay as run

    return run(args)


def _parse_duration(value: str) -> timedelta:
    """--step: a duration, as --every (argparse names the option in its message)."""
    try:
        return _parse_every(value)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("--every must be", "must be")) from exc


def _parse_horizon(value: str) -> timedelta | None:
    """A duration after infusion (100d), or "none" to follow the data to its end."""
    return None if value.strip().lower() == "none" else _parse_duration(value)


def cmd_serve(args: argparse.Namespace) -> int:
    from cds_service.web.server import serve

    return serve(host=args.host, port=args.port, dev=args.dev, workers=args.workers)


def cmd_watch(args: argparse.Namespace) -> int:
    """One polling cycle over every enrolled patient (--once), or the scheduler until stopped."""
    import signal
    import threading

    from cds_service.watch import watch_state
    from cds_service.web.app import create_app

    try:
        app = create_app()
    except ConfigurationError as exc:
        print(f"error: cannot start: {exc}", file=sys.stderr)
        return EXIT_USAGE
    state = watch_state(app)
    if state is None:
        print("error: the watch list is off (CDS_WATCH=0, or no CDS_WATCH_SERVERS_FILE)", file=sys.stderr)
        return EXIT_USAGE
    if args.at is not None and not state.settings.dev_mode:
        print("error: --at is for development mode only (replays of synthetic data)", file=sys.stderr)
        return EXIT_USAGE
    if args.once:
        cycle, delivery = state.cycle(full=True, at=args.at)
        summary = {
            "patients": cycle.claimed,
            "evaluated": cycle.evaluated,
            "unchanged": cycle.unchanged,
            "failed": cycle.failed,
            "left": cycle.left,
            "changes": cycle.changes,
            "lostLeases": cycle.lost_leases,
            "fhirRequests": cycle.fhir_requests,
            "seconds": cycle.seconds,
            "notificationsSent": delivery.sent,
            "notificationsFailed": delivery.failed + delivery.gave_up,
        }
        if args.format == "json":
            print(orjson.dumps(summary).decode())
        else:
            print(
                f"watch cycle: {cycle.claimed} patients ({cycle.evaluated} evaluated, {cycle.unchanged} "
                f"unchanged, {cycle.failed} failed, {cycle.left} left), {cycle.changes} changes, "
                f"{cycle.fhir_requests} FHIR requests, {cycle.seconds:.2f} s; notifications: {delivery.sent} "
                f"sent, {delivery.failed + delivery.gave_up} failed"
            )
        return EXIT_OK
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    state.scheduler.start()
    print(f"watching (a cycle every {state.settings.watch.tick_s:g} s); Ctrl-C stops", flush=True)
    stop.wait()
    state.scheduler.stop()
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    from cds_service.ops.config_check import check_configuration

    return check_configuration()


def cmd_fixtures_list(args: argparse.Namespace) -> int:
    from cds_service.datafiles import PROJECT_ROOT
    from cds_service.preview.scenarios import SCENARIOS_DIR, list_scenarios

    if args.paths:
        for path in sorted((PROJECT_ROOT / "fixtures").glob("*/*.json")):
            if not path.name.endswith(".expected.json") and path.name != "index.json":
                print(path.relative_to(PROJECT_ROOT))
        return EXIT_OK
    scenarios = list_scenarios()
    if not scenarios:
        print(f"no fixture scenarios found in {SCENARIOS_DIR}", file=sys.stderr)
        return EXIT_USAGE
    width = max(len(s.name) for s in scenarios)
    print("Fixture scenarios (synthetic patients; each is evaluated at its own instant):")
    for scenario in scenarios:
        print(f"  {scenario.name:{width}}  {scenario.title}")
    population = len(list((PROJECT_ROOT / "fixtures" / "population").glob("patient-*.json")))
    print(f"\nAlso {population} population bundles in fixtures/population/ (labels in index.json).")
    first = scenarios[0]
    print(
        f"\nEvaluate one: cds-service evaluate {first.bundle_path.relative_to(PROJECT_ROOT)} --at "
        f"{first.at.isoformat().replace('+00:00', 'Z')}"
    )
    print("Preview the cards: `make run`, then open http://127.0.0.1:8080/")
    return EXIT_OK


DESCRIPTION = """\
CDS Hooks 2.0 service that screens CAR-T patients for IEC-HS (immune effector cell-associated
HLH-like syndrome, ASTCT 2023), with HScore, HLH-2004, HLH-94, CARTOX and Shah shown as context.

An EHR calls it on patient-view, order-select and order-sign and shows the cards it returns."""

EPILOG = """\
first steps:
  cds-service serve --dev        run locally (no client JWT needed), then open http://127.0.0.1:8080/
  cds-service fixtures list      the synthetic scenarios you can send from that page
  cds-service evaluate FILE      evaluate a FHIR Bundle without a server
  cds-service config check       validate the configuration (environment + CDS_CONFIG_FILE)
  cds-service watch --once       one polling cycle over the watch list (docs/watch-list.md)
  cds-service replay DIR --out OUT   replay a Bulk Data export silently (lead time, alert burden)

Configuration comes from environment variables and an optional file; see docs/configuration.md.
Run `cds-service COMMAND --help` for the options of a command."""


def build_parser() -> argparse.ArgumentParser:
    """The `cds-service` argument parser with its five commands."""
    parser = argparse.ArgumentParser(
        prog="cds-service",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    _add_evaluate(sub)
    _add_config(sub)
    _add_fixtures(sub)
    _add_watch(sub)
    _add_replay(sub)
    return parser


if TYPE_CHECKING:  # argparse has no public name for the subparsers object
    from cds_service.engine.model import EvaluationResult

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _command(sub: Subparsers, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, help=summary, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def _add_serve(sub: Subparsers) -> None:
    serve = _command(
        sub,
        "serve",
        "run the service (gunicorn) until stopped",
        "Run the CDS Hooks service behind gunicorn. It prints the URLs to open once it listens:\n"
        "discovery (/cds-services), the card preview page (/), health (/healthz, /readyz),\n"
        "metrics (/metrics) and the OpenAPI document (/openapi.json).\n\n"
        "Without --dev the configuration must name the public https base URL and the trusted\n"
        "clients (see docs/configuration.md); invalid configuration stops it with exit code 2.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    serve.add_argument(
        "--workers", type=int, default=None, help="gunicorn worker processes (default: CDS_WORKERS)"
    )
    serve.add_argument(
        "--dev",
        action="store_true",
        help="development mode: no client JWT required, http FHIR servers on loopback allowed, "
        "CORS open; for synthetic data only",
    )
    serve.set_defaults(func=cmd_serve)


def _add_evaluate(sub: Subparsers) -> None:
    evaluate = _command(
        sub,
        "evaluate",
        "evaluate a FHIR Bundle file and print the result (no server)",
        "Run the screening engine on one patient's FHIR R4 Bundle and print IEC-HS status and grade,\n"
        "the context instruments and the data still missing. Exit code 2 on unreadable input.\n\n"
        "example: cds-service evaluate fixtures/scenarios/classic-iec-hs.json --at 2026-03-15T20:00:00Z",
    )
    evaluate.add_argument("file", help="a FHIR Bundle (JSON) holding one patient's resources")
    evaluate.add_argument(
        "--at",
        type=_parse_at,
        default=None,
        help="evaluation instant (ISO-8601); only data at or before it is used (default: now)",
    )
    evaluate.add_argument(
        "--format",
        choices=["json", "text"],
        default="text",
        help="output format (default text); with --from/--to/--every, JSON Lines or one line per instant",
    )
    evaluate.add_argument(
        "--from",
        dest="start",
        type=_parse_at,
        default=None,
        help="course evaluation: the first instant (ISO-8601)",
    )
    evaluate.add_argument(
        "--to",
        dest="end",
        type=_parse_at,
        default=None,
        help="course evaluation: the last instant (ISO-8601)",
    )
    evaluate.add_argument(
        "--every",
        type=_parse_every,
        default=None,
        help="course evaluation: the step between instants (6h, 30m, 1d, PT6H); the data are read once",
    )
    evaluate.add_argument(
        "--mappings",
        metavar="DIR",
        default=None,
        help="a site's mappings directory (default: CDS_MAPPINGS_DIR, else this source tree's mappings/)",
    )
    evaluate.set_defaults(func=cmd_evaluate)


def _add_config(sub: Subparsers) -> None:
    config = _command(
        sub, "config", "configuration commands (check)", "Inspect and validate the configuration."
    )
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    check = _command(
        config_sub,
        "check",
        "validate the configuration and data files, print the effective settings",
        "Read the environment variables and CDS_CONFIG_FILE (if set), validate them together with\n"
        "mappings/ and cards/, and print the effective settings with secrets masked.\n"
        "Exit code 0 when valid, 2 with the reason otherwise.",
    )
    check.set_defaults(func=cmd_config_check)


def _add_fixtures(sub: Subparsers) -> None:
    fixtures = _command(
        sub, "fixtures", "fixture commands (list)", "The synthetic FHIR fixtures shipped in fixtures/."
    )
    fixtures_sub = fixtures.add_subparsers(dest="fixtures_command", required=True, metavar="SUBCOMMAND")
    listing = _command(
        fixtures_sub,
        "list",
        "list the fixture scenarios with a one-line description",
        "List the scenarios of fixtures/scenarios/ (name and description). Each can be sent from\n"
        "the card preview page or evaluated with `cds-service evaluate`.",
    )
    listing.add_argument(
        "--paths", action="store_true", help="print only the Bundle file paths (scenarios and population)"
    )
    listing.set_defaults(func=cmd_fixtures_list)


def _add_watch(sub: Subparsers) -> None:
    watch = _command(
        sub,
        "watch",
        "the watch list: one polling cycle (--once) or the scheduler",
        "Poll the enrolled CAR-T patients' FHIR servers for new results, re-run the engine, record\n"
        "status rises and deliver their notifications (docs/watch-list.md).\n\n"
        "--once: one cycle over every enrolled patient, then the due notifications, then exit\n"
        "(cron-style deployments, tests). Without it: the scheduler until SIGTERM / Ctrl-C.\n"
        "Several processes may run at once (PostgreSQL): none evaluates or notifies a patient twice.",
    )
    watch.add_argument("--once", action="store_true", help="one cycle over all enrolled patients, then exit")
    watch.add_argument(
        "--at",
        type=_parse_at,
        default=None,
        help="evaluate as of this instant instead of now (development mode only: replays of synthetic data)",
    )
    watch.add_argument(
        "--format", choices=["json", "text"], default="text", help="the --once summary (default text)"
    )
    watch.set_defaults(func=cmd_watch)


def _add_replay(sub: Subparsers) -> None:
    from cds_service.replay.arguments import add_arguments

    replay = _command(
        sub,
        "replay",
        "replay a FHIR Bulk Data export through the engine (silent mode, on Dask)",
        "Silent mode, not for clinical use. Evaluate every patient with an immune effector cell infusion\n"
        "at every data arrival and every --step from infusion (each instant sees only the data on record\n"
        "then), and write OUT/patients.csv, OUT/timeline.parquet, OUT/report.html and OUT/problems.csv.\n\n"
        "example: cds-service replay export/ --out replay-out --labels export/labels.csv\n"
        "See docs/replay.md (partitioning, --set syntax, labels metrics, clusters).",
    )
    add_arguments(replay, _parse_duration, _parse_horizon)
    replay.set_defaults(func=cmd_replay)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cds-service` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DataFileError as exc:
        print(f"error: data file invalid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # the reader went away (`... | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
