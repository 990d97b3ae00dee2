"""Over HTTP under gunicorn: latency and throughput of the hook against a floor endpoint of the same app,
worker memory, and cold start. The load generator is a separate process (benchmarks/loadgen.py)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.hook_requests import SERVICE_ID
from benchmarks.inprocess import p95
from benchmarks.server import ServiceProcess

HOOK_PATH = f"/cds-services/{SERVICE_ID}"
FLOOR_PATH = "/_bench/floor"
READ_PATH = f"/_bench/read/{SERVICE_ID}"


def load(
    service: ServiceProcess,
    path: str,
    body: bytes,
    *,
    clients: int = 1,
    requests: int = 0,
    seconds: float = 5.0,
) -> dict[str, Any]:
    """Run the load generator in its own process and return its JSON result."""
    with tempfile.NamedTemporaryFile(suffix=".json") as handle:
        handle.write(body)
        handle.flush()
        command = [
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            "--port",
            str(service.port),
            "--path",
            path,
            "--body",
            handle.name,
            "--clients",
            str(clients),
            "--requests",
            str(requests),
            "--seconds",
            str(seconds),
        ]
        done = subprocess.run(
            command, capture_output=True, check=True, timeout=600, cwd=Path(__file__).resolve().parent.parent
        )
    result: dict[str, Any] = json.loads(done.stdout)
    if result["errors"]:
        raise RuntimeError(f"{path}: {len(result['errors'])} errors, e.g. {result['errors'][:3]}")
    return result


def latency(service: ServiceProcess, body: bytes, rounds: int = 6, per_round: int = 15) -> dict[str, Any]:
    """Sequential single-client latencies of the hook and the floor endpoint, interleaved by rounds."""
    hook: list[float] = []
    floor: list[float] = []
    load(service, HOOK_PATH, body, requests=3)  # warm both workers' caches
    for _ in range(rounds):
        floor += load(service, FLOOR_PATH, body, requests=per_round)["latencies"]
        hook += load(service, HOOK_PATH, body, requests=per_round)["latencies"]
    return {
        "hook_p50_ms": statistics.median(hook) * 1e3,
        "hook_p95_ms": p95(hook) * 1e3,
        "floor_p50_ms": statistics.median(floor) * 1e3,
        "floor_p95_ms": p95(floor) * 1e3,
        "p50_ratio": statistics.median(hook) / statistics.median(floor),
        "p95_ratio": p95(hook) / p95(floor),
    }


def throughput(
    service: ServiceProcess, body: bytes, clients: int = 8, seconds: float = 2.5, rounds: int = 4
) -> dict[str, Any]:
    """Requests per second of the floor, the read ceiling and the hook, measured in alternating windows
    so that machine noise (a shared 2-core VM) hits them alike; and the workers' CPU time per request
    (what the ratios are made of: on 2 cores, throughput is CPU per request).

    The read ceiling (cds_service.web.bench_floor) reads the request exactly as the hook does and stops before
    the clinical work: `read_ratio` is the best throughput ratio any hook that reads its data could have,
    and the gap between it and `throughput_ratio` is what the timeline, instruments and card cost."""
    paths = {"floor": FLOOR_PATH, "read": READ_PATH, "hook": HOOK_PATH}
    done = dict.fromkeys(paths, 0)
    elapsed = dict.fromkeys(paths, 0.0)
    cpu = dict.fromkeys(paths, 0.0)
    for _ in range(rounds):
        for name, path in paths.items():
            before = service.cpu_seconds()
            result = load(service, path, body, clients=clients, seconds=seconds)
            cpu[name] += service.cpu_seconds() - before
            done[name] += len(result["latencies"])
            elapsed[name] += result["elapsed"]
    rps = {name: done[name] / elapsed[name] for name in paths}
    return {
        "hook_rps": rps["hook"],
        "read_rps": rps["read"],
        "floor_rps": rps["floor"],
        "throughput_ratio": rps["hook"] / rps["floor"],
        "read_ratio": rps["read"] / rps["floor"],
        "hook_worker_cpu_ms_per_request": cpu["hook"] / done["hook"] * 1e3,
        "read_worker_cpu_ms_per_request": cpu["read"] / done["read"] * 1e3,
        "floor_worker_cpu_ms_per_request": cpu["floor"] / done["floor"] * 1e3,
    }


def memory(service: ServiceProcess, big: bytes, small: bytes, repeats: int = 1000) -> dict[str, Any]:
    """Peak RSS after 10,000-Observation hooks; RSS growth from hook 100 to hook `repeats` (small bodies)."""
    load(service, HOOK_PATH, big, clients=2, requests=2)  # both workers see at least one (usually)
    peak = max(service.peak_rss_mb().values())
    load(service, HOOK_PATH, small, clients=4, requests=25)
    before = service.rss_mb()
    load(service, HOOK_PATH, small, clients=4, requests=(repeats - 100) // 4)
    after = service.rss_mb()
    growth = max((after[pid] - before[pid]) / before[pid] for pid in before if pid in after)
    return {"peak_rss_mb_10000": peak, "rss_growth_pct_over_repeats": growth * 100, "repeats": repeats}
