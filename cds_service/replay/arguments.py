"""The ``cds-service replay`` options (no heavy imports: the parser is built for every command)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import timedelta


def add_arguments(
    parser: argparse.ArgumentParser,
    duration: Callable[[str], timedelta],
    horizon: Callable[[str], timedelta | None],
) -> None:
    """The replay options (`duration` / `horizon` parse 6h, 1d, PT6H; horizon also 'none')."""
    parser.add_argument("input", nargs="?", help="a Bulk Data export folder (*.ndjson, *.ndjson.gz)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument(
        "--step", type=duration, default=timedelta(hours=6), help="at least every STEP (default 6h)"
    )
    parser.add_argument(
        "--horizon",
        type=horizon,
        default=timedelta(days=100),
        help="stop this long after infusion (default 100d; none)",
    )
    parser.add_argument("--labels", metavar="CSV", help="ground truth: patientId,onset[,grade]")
    parser.add_argument(
        "--set",
        action="append",
        metavar="FILE:KEY=VALUE",
        help="change a setting for this run (repeatable), e.g. "
        "criteria/iec_hs.yaml:required.second_rise.with_fever_hours=48",
    )
    parser.add_argument("--mappings", metavar="DIR", help="a site's mappings directory")
    parser.add_argument("--cards", metavar="DIR", help="a site's cards directory")
    parser.add_argument(
        "--scheduler", metavar="tcp://HOST:PORT", help="a running Dask scheduler (default: local)"
    )
    parser.add_argument("--workers", type=int, default=None, help="local worker processes (default: CPUs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--export-from", metavar="URL", help="run a Bulk $export first (FHIR base or kick-off URL)"
    )
    parser.add_argument("--client-id", help="SMART Backend Services client id (with --export-from)")
    parser.add_argument("--key", metavar="PEM", help="the client's private key, PEM (RSA: RS384, EC: ES384)")
    parser.add_argument("--kid", help="key id in the assertion header (default: the JWK thumbprint)")
    parser.add_argument("--scope", default="system/*.read", help="scopes to ask for (default system/*.read)")
