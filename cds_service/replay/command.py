"""``cds-service replay``: options to a run, the terminal summary, exit codes (cli.py dispatches here)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cds_service.errors import DataFileError
from cds_service.replay.export_client import ExportError, download_export
from cds_service.replay.groups import ReplaySettings
from cds_service.replay.labels import LabelsError
from cds_service.replay.partition import InputFolderError
from cds_service.replay.runner import ReplayOptions, ReplayOutcome, run_replay
from cds_service.replay.settings import SettingError, apply_overrides

EXIT_OK, EXIT_USAGE, EXIT_FAILED = 0, 2, 1


def options_from(args: argparse.Namespace) -> ReplayOptions:
    """The run's options; --set edits a copy of the mappings in OUT/mappings (validated on load)."""
    out = Path(args.out).resolve()
    mappings = Path(args.mappings).resolve() if args.mappings else None
    if args.set:
        mappings = apply_overrides(args.set, out / "mappings", mappings)
    settings = ReplaySettings(
        step=args.step,
        horizon=args.horizon,
        mappings_dir=str(mappings) if mappings else None,
        cards_dir=str(Path(args.cards).resolve()) if args.cards else None,
    )
    return ReplayOptions(
        input=Path(args.input).resolve() if args.input else out / "export",
        out=out,
        settings=settings,
        labels=Path(args.labels) if args.labels else None,
        overrides=tuple(args.set or ()),
        scheduler=args.scheduler,
        workers=args.workers,
        progress=False if args.no_progress else None,
    )


def cmd_replay(args: argparse.Namespace) -> int:
    if bool(args.input) == bool(args.export_from):
        print("error: give INPUT (an export folder) or --export-from URL, not both", file=sys.stderr)
        return EXIT_USAGE
    try:
        options = options_from(args)
        if args.export_from:
            if not (args.client_id and args.key):
                print("error: --export-from needs --client-id and --key", file=sys.stderr)
                return EXIT_USAGE
            download_export(
                args.export_from,
                options.input,
                client_id=args.client_id,
                key_path=Path(args.key),
                scope=args.scope,
                kid=args.kid,
            )
        outcome = run_replay(options)
    except (SettingError, LabelsError, InputFolderError, DataFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ExportError as exc:
        print(f"error: export failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print_summary(outcome, options)
    return EXIT_OK


def print_summary(outcome: ReplayOutcome, options: ReplayOptions) -> None:
    s = outcome.summary
    out = options.out
    print("silent mode, not for clinical use", file=sys.stderr)
    print(
        f"replayed {s['patients']} patients ({s['evaluations']} evaluations; "
        f"{s['withoutInfusion']} without an IEC infusion) in {s['run']['seconds']:.1f} s "
        f"on {s['run']['workers']} workers; "
        f"met: {s['reachedMet']}, possible or met: {s['reachedPossible']}",
        file=sys.stderr,
    )
    unassigned = sum(s["withoutPatient"].values())
    if unassigned:
        by_type = ", ".join(f"{t} {n}" for t, n in s["withoutPatient"].items())
        print(
            f"{unassigned} resources without a patient reference (not replayed): {by_type}", file=sys.stderr
        )
    problems = outcome.problems
    if problems.lines or problems.patients:
        print(
            f"{problems.lines} malformed lines skipped, {problems.patients} patients unreadable; "
            f"see {out / 'problems.csv'}:",
            file=sys.stderr,
        )
        for line in problems.first:
            print(f"  {line}", file=sys.stderr)
    if "labels" in s:
        lab = s["labels"]
        print(
            f"labels: sensitivity {lab['detected']}/{lab['labelled']}, "
            f"PPV {lab['flaggedLabelled']}/{lab['flagged']}"
            + (
                ""
                if lab["medianLeadTimeHours"] is None
                else f", median lead time {lab['medianLeadTimeHours']:+.1f} h"
            ),
            file=sys.stderr,
        )
    for name in ("patients.csv", "timeline.parquet", "report.html"):
        print(out / name)
