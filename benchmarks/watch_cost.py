"""The cost of the watch list's polling cycle per enrolled patient, on the real FHIR test stack.

    .venv/bin/python -m benchmarks.watch_cost [--concurrency 1,4] [--rounds 3]

Every fixture patient (10 scenarios + 32 population patients, 300-850 resources each) is enrolled in a
development-mode watcher (SQLite) that reads the stack through a SMART Backend Services client. The
evaluation instant is 2026-12-01 with a 365-day window, so every patient stays enrolled. Measured per
patient, for one `watch --once`-style cycle (`WatchState.cycle(full=True)`):

* the first cycle: the whole record fetched as a hook without prefetch fetches it, and evaluated;
* a cycle with nothing new: the `_lastUpdated` poll only (the steady state);
* a cycle after one new Observation per patient: poll, fetch and evaluation.

Wall time, the watcher's CPU time (this process), the FHIR server's CPU time (the stack process, from
/proc) and FHIR requests, each divided by the number of patients.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cds_service.watch import WatchState
from tests.plugins.fhir_stack import discover_seed_paths, start_stack
from tests.watch_helpers import put_all, servers_file, state_of, watch_app, watcher_client

AT = datetime(2026, 12, 1, tzinfo=UTC)


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process (and its reaped children), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(label: str, state: WatchState, stack_pid: int) -> dict[str, Any]:
    wall, cpu, server = time.perf_counter(), time.process_time(), process_cpu_s(stack_pid)
    cycle, _ = state.cycle(full=True, at=AT)
    patients = max(1, cycle.claimed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    server = process_cpu_s(stack_pid) - server
    row = {
        "cycle": label,
        "patients": cycle.claimed,
        "evaluated": cycle.evaluated,
        "unchanged": cycle.unchanged,
        "failed": cycle.failed,
        "ms_per_patient": round(wall * 1000 / patients, 1),
        "watcher_cpu_ms_per_patient": round(cpu * 1000 / patients, 1),
        "fhir_server_cpu_ms_per_patient": round(server * 1000 / patients, 1),
        "fhir_requests_per_patient": round(cycle.fhir_requests / patients, 2),
        "problems": sorted({e.problem for e in state.store.active() if e.problem}),
    }
    print(json.dumps(row), flush=True)
    return row


def new_observation(patient: str, n: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"{patient}-watch-cost-{n}",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2276-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-11-30T20:00:00Z",
        "valueQuantity": {
            "value": 420,
            "unit": "ng/mL",
            "system": "http://unitsofmeasure.org",
            "code": "ng/mL",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,4", help="comma-separated CDS_WATCH_CONCURRENCY values")
    parser.add_argument("--rounds", type=int, default=3, help="cycles with nothing new, per concurrency")
    args = parser.parse_args()
    logging.getLogger("cds_service").setLevel(logging.WARNING)
    client = watcher_client("cds-watch-bench")
    stack = start_stack(seed_paths=discover_seed_paths(), backend_clients=[client])
    rows: list[dict[str, Any]] = []
    try:
        patients = [
            r["resource"]["id"]
            for r in stack.http.get(f"{stack.fhir_base}/Patient", params={"_count": 1000}, timeout=60).json()[
                "entry"
            ]
        ]
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            workdir = Path(tempfile.mkdtemp(prefix="watch-cost-"))
            app = watch_app(
                workdir,
                servers_file(workdir, stack, client),
                CDS_WATCH_SUBSCRIPTIONS=False,
                CDS_WATCH_WINDOW_DAYS=365,
                CDS_WATCH_CONCURRENCY=concurrency,
            )
            state = state_of(app)
            for patient in patients:
                state.enrol(stack.fhir_base, patient, infusion_at=None, source="api")
            tag = f"concurrency {concurrency}"
            rows.append(measure(f"first ({tag})", state, stack.process.pid))
            for _ in range(args.rounds):
                rows.append(measure(f"nothing new ({tag})", state, stack.process.pid))
            put_all(stack, [new_observation(p, concurrency) for p in patients])
            rows.append(measure(f"one new result each ({tag})", state, stack.process.pid))
    finally:
        stack.stop()
    print()
    print(f"{'cycle':40} {'patients':>8} {'ms/pt':>8} {'cpu ms/pt':>10} {'FHIR cpu':>9} {'req/pt':>7}")
    for row in rows:
        print(
            f"{row['cycle']:40} {row['patients']:>8} {row['ms_per_patient']:>8} "
            f"{row['watcher_cpu_ms_per_patient']:>10} {row['fhir_server_cpu_ms_per_patient']:>9} "
            f"{row['fhir_requests_per_patient']:>7}"
        )


if __name__ == "__main__":
    main()
