"""Helpers for the replay tests: small Bulk exports written by the fixture generator, runs, outputs read."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from cds_service.replay.groups import ReplaySettings
from cds_service.replay.partition import CHUNK_BYTES
from cds_service.replay.refs import patient_of
from cds_service.replay.runner import ReplayOptions, run_replay
from fixtures.gen.export import export

FAST = ReplaySettings(step=timedelta(hours=24), horizon=timedelta(days=14))  # comparison runs: cheaper


def population_export(directory: Path, *, use_gzip: bool = False, max_per_file: int | None = None) -> Path:
    """The 39-patient population as a Bulk export (the generator's own writer)."""
    export(directory, use_gzip=use_gzip, max_per_file=max_per_file)
    return directory


def ndjson_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith((".ndjson", ".ndjson.gz")))


def read_lines(path: Path) -> list[bytes]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        return list(handle)


def subset_export(source: Path, destination: Path, patients: Iterable[str]) -> Path:
    """The export restricted to `patients` (plain NDJSON, one file per source file)."""
    wanted = set(patients)
    destination.mkdir(parents=True, exist_ok=True)
    for path in ndjson_files(source):
        kept = [line for line in read_lines(path) if patient_of(orjson.loads(line)) in wanted]
        (destination / path.name.removesuffix(".gz")).write_bytes(b"".join(kept))
    return destination


def replay(
    source: Path,
    out: Path,
    *,
    settings: ReplaySettings = FAST,
    labels: Path | None = None,
    workers: int = 2,
    scheduler: str | None = None,
    chunk_bytes: int | None = None,
) -> Path:
    """A replay run (a LocalCluster of `workers` unless `scheduler`); the output folder."""
    options = ReplayOptions(
        input=source,
        out=out,
        settings=settings,
        labels=labels,
        workers=workers,
        scheduler=scheduler,
        progress=False,
        chunk_bytes=chunk_bytes or CHUNK_BYTES,
    )
    run_replay(options)
    return out


def resources_by_patient(source: Path) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for path in ndjson_files(source):
        for line in read_lines(path):
            resource = orjson.loads(line)
            patient = patient_of(resource)
            if patient is not None:
                found.setdefault(patient, []).append(resource)
    return found


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def by_patient(path: Path) -> dict[str, dict[str, str]]:
    return {row["patientId"]: row for row in rows(path)}
