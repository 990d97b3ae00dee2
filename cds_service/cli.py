"""`cds-service`: serve the CDS Hooks service, evaluate a FHIR Bundle, check configuration, list fixtures."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson

from cds_service.errors import DataFileError, InputError

EXIT_OK = 0
EXIT_USAGE = 2


def _parse_at(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--at must be an ISO-8601 date-time, got {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cds_service.engine import evaluate
    from cds_service.engine.report import text_report
    from cds_service.engine.serialize import to_json_bytes

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
        result = evaluate(data, at=args.at)
    except InputError as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.format == "json":
        sys.stdout.buffer.write(to_json_bytes(result, indent=True) + b"\n")
    else:
        sys.stdout.write(text_report(result))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from cds_service.server import serve

    return serve(host=args.host, port=args.port, dev=args.dev, workers=args.workers)


def cmd_config_check(args: argparse.Namespace) -> int:
    from cds_service.config import check_configuration

    return check_configuration()


def cmd_fixtures_list(args: argparse.Namespace) -> int:
    from cds_service.datafiles import PROJECT_ROOT

    for path in sorted((PROJECT_ROOT / "fixtures").glob("*/*.json")):
        if path.name.endswith(".expected.json") or path.name == "index.json":
            continue
        print(path.relative_to(PROJECT_ROOT))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cds-service",
        description="CDS Hooks 2.0 service that screens CAR-T patients for IEC-HS "
        "(ASTCT 2023) with HScore, HLH-2004, HLH-94, CARTOX and Shah as context.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service behind gunicorn")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--workers", type=int, default=None, help="gunicorn workers (default: from config)")
    serve.add_argument(
        "--dev",
        action="store_true",
        help="development mode: no client JWT required, http FHIR servers on loopback allowed",
    )
    serve.set_defaults(func=cmd_serve)

    evaluate = sub.add_parser("evaluate", help="evaluate a FHIR Bundle file and print the result")
    evaluate.add_argument("file", help="a FHIR Bundle (JSON) holding one patient's resources")
    evaluate.add_argument(
        "--at",
        type=_parse_at,
        default=None,
        help="evaluation instant (ISO-8601); only data at or before it is used (default: now)",
    )
    evaluate.add_argument(
        "--format", choices=["json", "text"], default="text", help="output format (default text)"
    )
    evaluate.set_defaults(func=cmd_evaluate)

    config = sub.add_parser("config", help="configuration commands")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate configuration and data files, then exit")
    check.set_defaults(func=cmd_config_check)

    fixtures = sub.add_parser("fixtures", help="fixture commands")
    fixtures_sub = fixtures.add_subparsers(dest="fixtures_command", required=True)
    listing = fixtures_sub.add_parser("list", help="list the synthetic fixture bundles")
    listing.set_defaults(func=cmd_fixtures_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DataFileError as exc:
        print(f"error: data file invalid: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
