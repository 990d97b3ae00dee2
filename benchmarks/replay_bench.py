"""`make bench`, replay section: `cds-service replay` over seeded cohorts written by the fixture generator.

* throughput at 1,000 patients with 1 and 2 local workers (patients/s, evaluations/s; medians of rounds run
  alternately), and the scaling efficiency 2-worker / (2 x 1-worker);
* the cost of one evaluation inside the replay (record read once, the instant moved) as a ratio to one
  in-process patient-view hook call on the same patient's data, measured side by side;
* peak RSS of the driver and of the largest worker at 1,000 and 10,000 patients (daily steps to day 2, so
  the 10,000 run stays short: partitioning and per-group reading are what could grow with the cohort).

Each replay runs as its own `cds-service replay` process (its RSS is its own); cohorts are generated once into
$REPLAY_BENCH_DIR (default /tmp/cds-bench-replay) and reused; $REPLAY_BENCH_ROUNDS rounds (default 3).
`python -m benchmarks.replay_bench [cost] [throughput] [memory]` runs only this section (or those parts of it,
keeping the others from benchmarks/results/replay.json).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil

from cds_service.cards.content import load_card_content
from cds_service.engine.knowledge import load_knowledge
from cds_service.engine.record import read_record
from cds_service.replay.groups import ReplaySettings
from cds_service.replay.partition import input_files
from cds_service.replay.patient import card_renderer, replay_record
from cds_service.replay.refs import patient_of
from cds_service.web.app import create_app
from tests.cds_helpers import full_prefetch, hook_body
from tests.replay_helpers import read_lines

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("REPLAY_BENCH_DIR", Path(tempfile.gettempdir()) / "cds-bench-replay"))
RESULTS = Path(__file__).resolve().parent / "results" / "replay.json"
SEED = 7
PER_FILE = 200_000  # lines per NDJSON file, as a Bulk server splits its output
ROUNDS = int(os.environ.get("REPLAY_BENCH_ROUNDS", "3"))
MEMORY_ARGS = ("--step", "24h", "--horizon", "2d")


def cohort(size: int) -> Path:
    """A gzip export of `size` seeded patients (generated once, reused while its manifest matches)."""
    directory = WORK / f"cohort-{size}"
    manifest = directory / "manifest.json"
    index = directory / "index.jsonl"
    if manifest.is_file() and index.is_file() and len(index.read_text().splitlines()) == size:
        return directory
    command = [sys.executable, "-m", "fixtures.generate", "--export", str(directory), "--cohort", str(size)]
    command += ["--seed", str(SEED), "--gzip", "--max-per-file", str(PER_FILE), "--jobs", "2"]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return directory


@dataclass(frozen=True, slots=True)
class Run:
    seconds: float  # the replay itself (both passes), from its summary.json
    wall: float  # the whole process, cluster start-up included
    patients: int
    evaluations: int
    driver_mb: float
    worker_mb: float  # the largest worker process
    worker_cpu_s: float  # user + system CPU of the worker processes
    worker_mb_by_decile: tuple[float, ...]  # the largest worker's peak RSS so far, at each tenth of the run

    @property
    def patients_per_s(self) -> float:
        return self.patients / self.seconds

    @property
    def evaluations_per_s(self) -> float:
        return self.evaluations / self.seconds


def _sample(process: psutil.Process, cpu: dict[int, float]) -> tuple[float, float]:
    """(driver RSS, largest child RSS) in MB; each child's CPU seconds so far into `cpu`."""
    driver = process.memory_info().rss
    workers = 0
    for child in process.children(recursive=True):
        try:
            with child.oneshot():
                workers = max(workers, child.memory_info().rss)
                times = child.cpu_times()
                cpu[child.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return driver / 2**20, workers / 2**20


def replay_process(export: Path, workers: int, *extra: str) -> Run:
    """One `cds-service replay` process, its own and its workers' RSS sampled every 0.1 s."""
    with tempfile.TemporaryDirectory(prefix="replay-bench-") as out:
        command = [sys.executable, "-m", "cds_service.cli", "replay", str(export), "--out", out]
        command += ["--workers", str(workers), "--no-progress", *extra]
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        watched = psutil.Process(child.pid)
        driver = worker = 0.0
        cpu: dict[int, float] = {}
        series: list[tuple[float, float]] = []  # (seconds since start, largest worker peak so far)
        while child.poll() is None:
            try:
                d, w = _sample(watched, cpu)
                driver, worker = max(driver, d), max(worker, w)
                series.append((time.perf_counter() - started, worker))
            except psutil.NoSuchProcess:
                break
            time.sleep(0.1)
        wall = time.perf_counter() - started
        deciles = tuple(max((w for t, w in series if t <= wall * k / 10), default=0.0) for k in range(1, 11))
        stderr = child.stderr.read().decode() if child.stderr else ""
        if child.wait() != 0:
            raise RuntimeError(f"replay failed: {stderr[-2000:]}")
        summary = json.loads((Path(out) / "summary.json").read_text())
    return Run(
        summary["run"]["seconds"],
        wall,
        summary["patients"],
        summary["evaluations"],
        driver,
        worker,
        sum(cpu.values()),
        deciles,
    )


def throughput(export: Path, rounds: int = ROUNDS) -> dict[str, Any]:
    """Patients and evaluations per second with 1 and 2 workers, rounds alternating, medians."""
    runs: dict[int, list[Run]] = {1: [], 2: []}
    for _ in range(rounds):
        for workers in (1, 2):
            runs[workers].append(replay_process(export, workers))
    out: dict[str, Any] = {"rounds": rounds, "patients": runs[1][0].patients}
    for workers, found in runs.items():
        out[f"workers_{workers}"] = {
            "patients_per_s": statistics.median(r.patients_per_s for r in found),
            "evaluations_per_s": statistics.median(r.evaluations_per_s for r in found),
            "seconds": [round(r.seconds, 1) for r in found],
            "evaluations": found[0].evaluations,
            "worker_cpu_ms_per_patient": statistics.median(r.worker_cpu_s / r.patients for r in found) * 1000,
        }
    one, two = out["workers_1"]["patients_per_s"], out["workers_2"]["patients_per_s"]
    out["scaling_efficiency"] = two / (2 * one)
    # Worker CPU per patient, 1 vs 2 workers: below 1 when two workers do work one did not need. On a machine
    # shared with other jobs the wall-clock efficiency above also shows their load; this does not.
    out["work_efficiency"] = (
        out["workers_1"]["worker_cpu_ms_per_patient"] / out["workers_2"]["worker_cpu_ms_per_patient"]
    )
    return out


def _patients(export: Path, count: int) -> dict[str, list[dict[str, Any]]]:
    wanted = [json.loads(line)["id"] for line in (export / "index.jsonl").read_text().splitlines()[:count]]
    found: dict[str, list[dict[str, Any]]] = {p: [] for p in wanted}
    for path in input_files(export):
        for line in read_lines(path):
            resource = orjson.loads(line)
            patient = patient_of(resource)
            if patient in found:
                found[patient].append(resource)
    return found


def evaluation_cost(export: Path, patients: int = 5, rounds: int = ROUNDS, calls: int = 5) -> dict[str, Any]:
    """Per patient and round: the replay's cost per evaluation (read once + every instant + the card) and
    the in-process hook's cost per call (request bytes -> response, clock pinned at replay instants)."""
    kb = load_knowledge()
    render = card_renderer(kb, load_card_content(kb))
    settings = ReplaySettings()
    clock: list[Any] = [None]
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(
            {
                "CDS_DEV_MODE": True,
                "DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite3",
                "CLOCK": lambda: clock[0],
            }
        )
        client = app.test_client()
        per_eval: list[float] = []
        per_call: list[float] = []
        ratios: list[float] = []
        data = _patients(export, patients)
        for _ in range(rounds):
            for patient, resources in data.items():
                started = time.perf_counter()
                replay = replay_record(
                    read_record(resources, knowledge=kb),
                    patient,
                    render,
                    step=settings.step,
                    horizon=settings.horizon,
                )
                if replay is None or not replay.instants:
                    continue
                evaluation = (time.perf_counter() - started) / len(replay.instants)
                body = orjson.dumps(hook_body("patient-view", patient, prefetch=full_prefetch(resources)))
                step = max(1, len(replay.instants) // calls)
                hook: list[float] = []
                for instant in replay.instants[::step][:calls]:
                    clock[0] = instant.at
                    started = time.perf_counter()
                    answer = client.post(
                        "/cds-services/iec-hs-screening", data=body, content_type="application/json"
                    )
                    hook.append(time.perf_counter() - started)
                    assert answer.status_code == 200
                call = statistics.median(hook)
                per_eval.append(evaluation)
                per_call.append(call)
                ratios.append(evaluation / call)
    return {
        "patients": patients,
        "rounds": rounds,
        "replay_ms_per_evaluation": statistics.median(per_eval) * 1000,
        "hook_ms_per_call": statistics.median(per_call) * 1000,
        "ratio": statistics.median(ratios),
    }


def memory(sizes: tuple[int, ...] = (1000, 10000)) -> dict[str, Any]:
    """Peak RSS (driver, largest worker) replaying each cohort with 2 workers, daily steps to day 2."""
    out: dict[str, Any] = {"args": " ".join(MEMORY_ARGS)}
    for size in sizes:
        run = replay_process(cohort(size), 2, *MEMORY_ARGS)
        out[str(size)] = {
            "driver_mb": run.driver_mb,
            "worker_mb": run.worker_mb,
            "seconds": run.seconds,
            "patients": run.patients,
            "worker_mb_by_decile": [round(m) for m in run.worker_mb_by_decile],
        }
    small, large = out[str(sizes[0])], out[str(sizes[-1])]
    out["worker_growth"] = large["worker_mb"] / small["worker_mb"]
    out["driver_growth"] = large["driver_mb"] / small["driver_mb"]
    return out


def replay_section(parts: tuple[str, ...] = ("cost", "throughput", "memory")) -> dict[str, Any]:
    """The replay figures (`parts`: a subset to re-measure, the others kept from the last results file)."""
    export = cohort(1000)
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if "cost" in parts:
        results["evaluation_cost"] = evaluation_cost(export)
    if "throughput" in parts:
        results["throughput_1000"] = throughput(export)
    if "memory" in parts:
        results["memory"] = memory()
    return results


def replay_table(results: dict[str, Any]) -> list[str]:
    """The section's lines (a part never measured is left out)."""
    lines: list[str] = []
    if (t := results.get("throughput_1000")) is not None:
        one, two = t["workers_1"], t["workers_2"]
        lines.append(
            f"replay 1,000 patients ({two['evaluations']:,} evaluations), medians of {t['rounds']} rounds: "
            f"1 worker {one['patients_per_s']:.2f} patients/s {one['evaluations_per_s']:.0f} evaluations/s; "
            f"2 workers {two['patients_per_s']:.2f} patients/s {two['evaluations_per_s']:.0f} evaluations/s; "
            f"scaling efficiency {t['scaling_efficiency']:.2f} (worker CPU per patient 1w/2w "
            f"{t.get('work_efficiency', float('nan')):.2f})"
        )
    if (c := results.get("evaluation_cost")) is not None:
        lines.append(
            "replay evaluation vs in-process hook call (same patients): "
            f"{c['replay_ms_per_evaluation']:.2f}ms vs {c['hook_ms_per_call']:.1f}ms, ratio {c['ratio']:.3f}"
        )
    if (m := results.get("memory")) is not None:
        small, large = m["1000"], m["10000"]
        lines.append(
            f"replay peak RSS ({m['args']}, 2 workers): 1,000 patients driver {small['driver_mb']:.0f} MB, "
            f"worker {small['worker_mb']:.0f} MB; 10,000 patients driver {large['driver_mb']:.0f} MB, "
            f"worker {large['worker_mb']:.0f} MB "
            f"(growth x{m['driver_growth']:.2f} / x{m['worker_growth']:.2f})"
        )
    return lines


def replay_summary(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if (t := results.get("throughput_1000")) is not None:
        out += [
            f"replay_patients_per_s@1w={t['workers_1']['patients_per_s']:.2f}",
            f"replay_patients_per_s@2w={t['workers_2']['patients_per_s']:.2f}",
            f"replay_scaling={t['scaling_efficiency']:.2f}",
        ]
    if (c := results.get("evaluation_cost")) is not None:
        out.append(f"replay_eval_vs_hook={c['ratio']:.3f}")
    if (m := results.get("memory")) is not None:
        out.append(f"replay_worker_rss_mb@10000={m['10000']['worker_mb']:.0f}")
    return out


def main() -> int:
    logging.disable(logging.CRITICAL)  # the in-process app logs every request
    parts = tuple(sys.argv[1:]) or ("cost", "throughput", "memory")
    results = replay_section(parts)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(replay_table(results)))
    print(" ".join(replay_summary(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
