"""`make bench`: every performance measurement of the service, side by side in one run.

Prints a table and writes benchmarks/results/latest.json; the last line is a one-line summary. Ratios, not
absolute times, are the results: they are measured together on the same machine in the same run.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.fallback import fallback
from benchmarks.hook_requests import SIZES, course, request_bytes
from benchmarks.http_bench import latency, memory, throughput
from benchmarks.inprocess import fixed_cost, measure
from benchmarks.replay_bench import RESULTS as REPLAY_RESULTS
from benchmarks.replay_bench import replay_section, replay_summary, replay_table
from benchmarks.server import ServiceProcess

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
TOKEN = "bench-token"


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_fallback() -> dict[str, Any]:
    from tests.plugins.fhir_stack import start_stack

    stack = start_stack(env={"FHIR_BEARER_TOKENS": TOKEN})
    try:
        resources = course(3000, seed=23)
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                for r in resources
            ],
        }
        stack.load_bundle(bundle)
        # The test server's search with ~70 OR-ed LOINC codes takes ~1.5 s per page of 1,000: budgets are
        # raised so the measurement is about concurrency, not about that server's speed.
        env = {"CDS_FHIR_TIMEOUT_S": "15", "CDS_HOOK_DEADLINE_S": "40"}
        with ServiceProcess(workers=2, env=env) as service:
            return fallback(service, resources, stack.fhir_base, TOKEN, n=5)
    finally:
        stack.stop()


def table(results: dict[str, Any]) -> str:
    rows = ["size   bytes      parse p50   hook p50   hook p95   ratio_vs_parse"]
    for size, r in results["inprocess"].items():
        rows.append(
            f"{size:>6} {r['bytes']:>9}  {r['parse_median_ms']:8.1f}ms {r['hook_median_ms']:8.1f}ms "
            f"{r['hook_p95_ms']:8.1f}ms   {r['ratio_vs_parse']:.2f}"
        )
    h, t, m, f = results["http_latency"], results["http_throughput"], results["memory"], results["fallback"]
    x = results["fixed_cost"]
    rows += [
        f"linear growth time(10000)/time(1000): {results['linear_growth']:.2f}",
        f"fixed cost per hook (no Observations, in-process): hook {x['hook_median_ms']:.2f}ms - floor "
        f"{x['floor_median_ms']:.2f}ms = {x['fixed_ms']:.2f}ms",
        f"HTTP 3000 obs: hook p50 {h['hook_p50_ms']:.1f}ms p95 {h['hook_p95_ms']:.1f}ms; floor p50 "
        f"{h['floor_p50_ms']:.1f}ms p95 {h['floor_p95_ms']:.1f}ms; ratios p50 {h['p50_ratio']:.2f} "
        f"p95 {h['p95_ratio']:.2f}",
        f"throughput 300 obs, 8 clients: hook {t['hook_rps']:.1f}/s, floor {t['floor_rps']:.1f}/s, "
        f"ratio {t['throughput_ratio']:.2f}; worker CPU per request: hook "
        f"{t['hook_worker_cpu_ms_per_request']:.2f}ms, floor {t['floor_worker_cpu_ms_per_request']:.2f}ms",
        f"read ceiling 300 obs (reads the hook's data, no clinical work): {t['read_rps']:.1f}/s, ratio "
        f"{t['read_ratio']:.2f}; worker CPU per request {t['read_worker_cpu_ms_per_request']:.2f}ms",
        f"FHIR fallback: all keys absent {f['all_absent_ms']:.1f}ms vs slowest single key "
        f"({f['slowest_key']}) {f['single_query_ms'][f['slowest_key']]:.1f}ms: "
        f"ratio {f['fallback_ratio']:.2f}",
        f"memory: peak worker RSS after 10,000-obs hooks {m['peak_rss_mb_10000']:.0f} MB; RSS growth over "
        f"{m['repeats']} hooks {m['rss_growth_pct_over_repeats']:.1f}%",
        f"cold start to discovery: {results['cold_start_s']:.2f}s",
        *replay_table(results["replay"]),
        *(
            ["(replay figures kept from the last replay run: BENCH_REPLAY=keep)"]
            if results.get("replay_kept")
            else []
        ),
    ]
    return "\n".join(rows)


def summary(results: dict[str, Any]) -> str:
    i = results["inprocess"]
    parts = [f"ratio_vs_parse@{s}={i[s]['ratio_vs_parse']:.2f}" for s in ("1000", "3000", "10000")]
    parts += [
        f"linear@10000/1000={results['linear_growth']:.2f}",
        f"http_p50_ratio@3000={results['http_latency']['p50_ratio']:.2f}",
        f"http_p95_ratio@3000={results['http_latency']['p95_ratio']:.2f}",
        f"throughput_ratio@300={results['http_throughput']['throughput_ratio']:.2f}",
        f"read_ceiling_ratio@300={results['http_throughput']['read_ratio']:.2f}",
        f"fallback_ratio={results['fallback']['fallback_ratio']:.2f}",
        f"rss_mb@10000={results['memory']['peak_rss_mb_10000']:.0f}",
        f"rss_growth_pct@1000={results['memory']['rss_growth_pct_over_repeats']:.1f}",
        f"cold_start_s={results['cold_start_s']:.2f}",
        *replay_summary(results["replay"]),
    ]
    return " ".join(parts)


def main() -> int:
    logging.disable(logging.CRITICAL)  # the in-process app logs every request
    bodies = {size: request_bytes(size) for size in SIZES}
    results: dict[str, Any] = {"machine": machine(), "inprocess": measure(bodies)}
    results["fixed_cost"] = fixed_cost(request_bytes(300))
    results["linear_growth"] = (
        results["inprocess"]["10000"]["hook_median_ms"] / results["inprocess"]["1000"]["hook_median_ms"]
    )
    with ServiceProcess(workers=2) as service:
        results["cold_start_s"] = service.cold_start_s
        results["http_latency"] = latency(service, bodies[3000])
        results["http_throughput"] = throughput(service, request_bytes(300))
        results["memory"] = memory(service, bodies[10000], request_bytes(300))
    results["fallback"] = run_fallback()
    # cds-service replay (benchmarks/replay_bench.py, ~25 minutes): BENCH_REPLAY=keep reuses the figures of
    # its last run (benchmarks/results/replay.json) when only the hook's figures are wanted.
    keep = os.environ.get("BENCH_REPLAY") == "keep"
    results["replay"] = replay_section(() if keep else ("cost", "throughput", "memory"))
    results["replay_kept"] = keep
    if not keep:
        REPLAY_RESULTS.write_text(json.dumps(results["replay"], indent=2) + "\n")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(
        f"(written to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS})"
    )
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
