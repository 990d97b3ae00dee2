"""The replay run: partition the export (pass 1), replay each patient group (pass 2), write the outputs.

Both passes are Dask tasks on a ``distributed`` client: a ``LocalCluster`` of worker processes by default
(one thread each: the engine is pure Python), or the cluster at ``--scheduler tcp://HOST:PORT``. The same
code runs on both; the driver only holds task summaries and one timeline part at a time.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from distributed import Client, LocalCluster, as_completed
from tqdm import tqdm

from cds_service.replay import partition, timeline
from cds_service.replay.groups import GroupResult, ReplaySettings, replay_group
from cds_service.replay.labels import Label, metrics, read_labels
from cds_service.replay.outputs import Problems, write_patients, write_problems, write_summary
from cds_service.replay.report import ReportData, write_report

T = TypeVar("T")
WORK = ".replay-work"  # under --out: spill files and timeline parts, removed at the end


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    input: Path
    out: Path
    settings: ReplaySettings = field(default_factory=ReplaySettings)
    labels: Path | None = None
    overrides: tuple[str, ...] = ()
    scheduler: str | None = None
    workers: int | None = None
    progress: bool | None = None  # None: a bar when stderr is a terminal
    partition_bytes: int = partition.PARTITION_BYTES
    chunk_bytes: int = partition.CHUNK_BYTES


@dataclass(slots=True)
class ReplayOutcome:
    summary: dict[str, Any]
    problems: Problems


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@contextmanager
def dask_client(scheduler: str | None, workers: int | None) -> Iterator[Client]:
    """A client of the cluster at `scheduler`, or of a LocalCluster of `workers` processes (closed after)."""
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers or default_workers(),
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _run(
    client: Client,
    task: Callable[..., T],
    items: Sequence[Any],
    args: tuple[Any, ...],
    label: str,
    bar: bool | None,
) -> list[T]:
    """Run `task(item, *args)` for every item on the cluster; results in item order, a progress bar."""
    futures = [client.submit(task, item, *args, pure=False) for item in items]
    order = {future.key: index for index, future in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    disable = None if bar is None else not bar
    with tqdm(total=len(futures), desc=label, unit="task", file=sys.stderr, disable=disable) as progress:
        for future in as_completed(futures):
            results[order[future.key]] = future.result()
            future.release()
            progress.update(1)
    return results


def run_replay(options: ReplayOptions, client: Client | None = None) -> ReplayOutcome:
    """Replay the export in `options.input` into `options.out` (on `client`, else one made here)."""
    files = partition.input_files(options.input)
    labels = read_labels(options.labels) if options.labels else None
    options.out.mkdir(parents=True, exist_ok=True)
    work = options.out / WORK
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    chunks = partition.plan_chunks(files, options.chunk_bytes)
    total = sum(partition.uncompressed_size(f) for f in files)
    groups = partition.group_count(total, options.partition_bytes)
    started = time.perf_counter()
    with _client(options, client) as dask:
        workers = sum(dask.nthreads().values())
        read = _run(dask, partition.shuffle, chunks, (str(work), groups), "reading", options.progress)
        shuffled = time.perf_counter()
        replayed = _run(
            dask, replay_group, range(groups), (str(work), options.settings), "replaying", options.progress
        )
    finished = time.perf_counter()
    outcome = _write(options, work, labels, read, replayed)
    outcome.summary["run"] = {
        "workers": workers,
        "groups": groups,
        "chunks": len(chunks),
        "inputBytes": total,
        "readSeconds": round(shuffled - started, 3),
        "replaySeconds": round(finished - shuffled, 3),
        "seconds": round(finished - started, 3),
    }
    write_summary(options.out / "summary.json", outcome.summary)
    shutil.rmtree(work, ignore_errors=True)
    return outcome


@contextmanager
def _client(options: ReplayOptions, client: Client | None) -> Iterator[Client]:
    if client is not None:
        yield client
        return
    with dask_client(options.scheduler, options.workers) as made:
        yield made


def _write(
    options: ReplayOptions,
    work: Path,
    labels: dict[str, Label] | None,
    read: list[partition.ChunkResult],
    replayed: list[GroupResult],
) -> ReplayOutcome:
    out = options.out
    patients = [p for group in replayed for p in group.patients]
    write_patients(out / "patients.csv", patients, labels)
    rows = timeline.merge([g.timeline for g in replayed if g.timeline], out / "timeline.parquet")
    unreadable = [u for g in replayed for u in g.unreadable]
    problems = write_problems(out / "problems.csv", work, read, unreadable)
    found = metrics(patients, labels) if labels is not None else None
    summary = _summary(options, read, replayed, rows, problems)
    if found is not None:
        summary["labels"] = {
            "labelled": found.labelled,
            "labelledNotReplayed": found.labelled_missing,
            "detected": found.detected,
            "flagged": found.flagged,
            "flaggedLabelled": found.flagged_labelled,
            "sensitivity": found.sensitivity,
            "ppv": found.ppv,
            "medianLeadTimeHours": found.median_lead_hours,
        }
    write_report(out / "report.html", ReportData(patients, labels, found, summary))
    return ReplayOutcome(summary, problems)


def _summary(
    options: ReplayOptions,
    read: list[partition.ChunkResult],
    replayed: list[GroupResult],
    rows: int,
    problems: Problems,
) -> dict[str, Any]:
    def total(key: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for result in read:
            for rtype, n in getattr(result, key).items():
                counts[rtype] = counts.get(rtype, 0) + n
        return dict(sorted(counts.items()))

    patients = [p for g in replayed for p in g.patients]
    return {
        "silentMode": "silent mode, not for clinical use",
        "input": str(options.input),
        "files": len({r.chunk.path for r in read}),
        "lines": sum(r.lines for r in read),
        "resources": total("by_type"),
        "withoutPatient": total("unassigned"),
        "malformedLines": problems.lines,
        "unreadablePatients": problems.patients,
        "patients": len(patients),
        "withoutInfusion": sum(g.without_infusion for g in replayed),
        "evaluations": sum(p.evaluations for p in patients),
        "timelineRows": rows,
        "reachedPossible": sum(1 for p in patients if p.first_possible is not None),
        "reachedMet": sum(1 for p in patients if p.first_met is not None),
        "cardsShown": sum(p.cards_shown for p in patients),
        "patientDays": sum(len(p.card_days) for p in patients),
        "stepHours": options.settings.step.total_seconds() / 3600,
        "horizonDays": None if options.settings.horizon is None else options.settings.horizon.days,
        "overrides": list(options.overrides),
        "workerSeconds": {
            key: round(sum(g.seconds[key] for g in replayed), 3) for key in ("read", "evaluate")
        },
    }
