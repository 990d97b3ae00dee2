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
from cds_service.replay.collect import Collector
from cds_service.replay.groups import ReplaySettings, replay_group
from cds_service.replay.labels import read_labels
from cds_service.replay.outputs import Problems, write_problems, write_summary
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
    take: Callable[[T], None],
) -> None:
    """Run `task(item, *args)` for every item on the cluster; `take` each result as it arrives (any
    order) and release it on the cluster; a progress bar on stderr."""
    futures = [client.submit(task, item, *args, pure=False) for item in items]
    disable = None if bar is None else not bar
    with tqdm(total=len(futures), desc=label, unit="task", file=sys.stderr, disable=disable) as progress:
        for future in as_completed(futures):
            take(future.result())
            future.release()
            progress.update(1)


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
    read: list[partition.ChunkResult] = []
    collector = Collector(work, labels)
    with _client(options, client) as dask:
        workers = sum(dask.nthreads().values())
        _run(dask, partition.shuffle, chunks, (str(work), groups), "reading", options.progress, read.append)
        shuffled = time.perf_counter()
        replay = (str(work), options.settings)
        _run(dask, replay_group, range(groups), replay, "replaying", options.progress, collector.add)
    finished = time.perf_counter()
    outcome = _write(options, work, read, collector)
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
    options: ReplayOptions, work: Path, read: list[partition.ChunkResult], collector: Collector
) -> ReplayOutcome:
    out = options.out
    collector.write_patients(out / "patients.csv")
    rows = timeline.merge(collector.timeline_parts(), out / "timeline.parquet")
    problems = write_problems(out / "problems.csv", work, read, collector.unreadable)
    summary = _summary(options, read, collector, rows, problems)
    found = collector.metrics.result() if collector.labels is not None else None
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
    data = ReportData(
        lanes=collector.lanes.sorted(),
        flagged=collector.flagged.sorted(),
        labels=collector.labels,
        metrics=found,
        summary=summary,
        card_day_counts=tuple(collector.totals.card_day_counts),
        cards_by_day=tuple(collector.totals.cards_by_day),
    )
    write_report(out / "report.html", data)
    return ReplayOutcome(summary, problems)


def _summary(
    options: ReplayOptions,
    read: list[partition.ChunkResult],
    collector: Collector,
    rows: int,
    problems: Problems,
) -> dict[str, Any]:
    def total(key: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for result in read:
            for rtype, n in getattr(result, key).items():
                counts[rtype] = counts.get(rtype, 0) + n
        return dict(sorted(counts.items()))

    t = collector.totals
    return {
        "silentMode": "silent mode, not for clinical use",
        "input": str(options.input),
        "files": len({r.chunk.path for r in read}),
        "lines": sum(r.lines for r in read),
        "resources": total("by_type"),
        "withoutPatient": total("unassigned"),
        "malformedLines": problems.lines,
        "unreadablePatients": problems.patients,
        "patients": t.patients,
        "withoutInfusion": t.without_infusion,
        "evaluations": t.evaluations,
        "timelineRows": rows,
        "reachedPossible": t.reached_possible,
        "reachedMet": t.reached_met,
        "cardsShown": t.cards_shown,
        "patientDays": t.patient_days,
        "stepHours": options.settings.step.total_seconds() / 3600,
        "horizonDays": None if options.settings.horizon is None else options.settings.horizon.days,
        "overrides": list(options.overrides),
        "workerSeconds": {key: round(value, 3) for key, value in collector.seconds.items()},
    }
