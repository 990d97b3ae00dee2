"""Bounded soak (`make test-slow`): gunicorn (2 workers x 4 threads) with client JWT verification on, a
steady request rate over loopback for a few minutes -- hooks with full prefetch, hooks completed from a
loopback FHIR server with a bearer token, discovery and feedback -- then: no errors, and worker memory (RSS)
grew by less than 10 % between the end of the warm-up and the end of the run.

SOAK_SECONDS (default 180) and SOAK_RATE (requests/s, default 15) bound the run; both are capped."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.auth_client import SigningKey, bearer, client_entry, token
from tests.cds_helpers import car_t_patient, full_prefetch, hook_body, searchset
from tests.gunicorn_process import ServerProcess, start_server
from tests.loopback_http import LoopbackServer, Reply, Seen
from tests.plugins.fhir_stack import free_port

DURATION_S = min(float(os.environ.get("SOAK_SECONDS", "180")), 900)
RATE = min(float(os.environ.get("SOAK_RATE", "15")), 50)
WARM_UP_S = min(30.0, DURATION_S / 4)
MAX_GROWTH = 0.10
KEY = SigningKey.ec("soak-key")
PID = "soak-patient"
RESOURCES = car_t_patient(PID)


def fhir(seen: Seen) -> Reply:
    if seen.path.startswith("/fhir/Patient/"):
        return Reply(body=RESOURCES[0])
    kind = seen.path.rsplit("/", 1)[-1]
    return Reply(body=searchset(r for r in RESOURCES if r["resourceType"] == kind))


class Soak:
    def __init__(self, server: ServerProcess, fhir_base: str) -> None:
        self.server, self.fhir_base = server, fhir_base
        self.statuses: dict[str, list[int]] = {}
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._feedback = itertools.count()

    def request(self, kind: str) -> None:
        base = self.server.base_url
        path, body = self._call(kind)
        aud = f"http://127.0.0.1:{self.server.port}{path}"
        start = time.perf_counter()
        try:
            if body is None:
                response = requests.get(base + path, headers=bearer(token(KEY, aud)), timeout=10)
            else:
                response = requests.post(base + path, json=body, headers=bearer(token(KEY, aud)), timeout=10)
            status, error = response.status_code, None
        except requests.RequestException as exc:
            status, error = 0, type(exc).__name__
        with self._lock:
            self.errors += [error] if error else []
            self.statuses.setdefault(kind, []).append(status)
            self.latencies.append(time.perf_counter() - start)

    def _call(self, kind: str) -> tuple[str, dict[str, Any] | None]:
        if kind == "discovery":
            return "/cds-services", None
        if kind == "feedback":
            n = next(self._feedback)
            item = {"card": f"soak-{n}", "outcome": "overridden", "outcomeTimestamp": "2026-11-24T00:00:00Z"}
            return "/cds-services/iec-hs-screening/feedback", {"feedback": [item]}
        if kind == "fallback":
            return "/cds-services/iec-hs-screening", hook_body(
                "patient-view", PID, fhir_server=self.fhir_base, token="soak-fhir-token"
            )
        return "/cds-services/iec-hs-screening", hook_body(
            "patient-view", PID, prefetch=full_prefetch(RESOURCES)
        )


def steady(soak: Soak, seconds: float, pool: ThreadPoolExecutor) -> list[Future[None]]:
    """Issue requests at RATE per second for `seconds` (a fixed schedule, not as fast as possible)."""
    mix = itertools.cycle(["hook", "hook", "fallback", "discovery", "hook", "feedback"])
    futures, start = [], time.monotonic()
    for n in range(int(seconds * RATE)):
        time.sleep(max(0.0, start + n / RATE - time.monotonic()))
        futures.append(pool.submit(soak.request, next(mix)))
    return futures


@pytest.mark.slow
@pytest.mark.timeout(int(DURATION_S) + 300)
def test_soak_no_errors_and_bounded_memory(tmp_path: Path) -> None:
    with LoopbackServer(fhir) as fhir_server:
        fhir_base = f"{fhir_server.base_url}/fhir"
        clients = json.dumps({"clients": [client_entry(KEY, fhir_servers=[fhir_base])]})
        env = {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'soak.sqlite3'}",
            "CDS_WORKERS": "2",
            "CDS_THREADS": "4",
            "CDS_TRUSTED_CLIENTS": clients,
        }
        server = start_server(tmp_path, free_port(), env, label="soak")
        soak = Soak(server, fhir_base)
        try:
            with ThreadPoolExecutor(max_workers=8) as pool:
                for future in steady(soak, WARM_UP_S, pool):
                    future.result(timeout=60)
                baseline = server.workers_rss_kib()
                for future in steady(soak, DURATION_S - WARM_UP_S, pool):
                    future.result(timeout=60)
                final = server.workers_rss_kib()
        finally:
            server.stop()
    total = sum(len(s) for s in soak.statuses.values())
    p95 = statistics.quantiles(soak.latencies, n=20)[18]
    growth = (final - baseline) / baseline
    print(
        f"\nsoak: {total} requests in {DURATION_S:.0f} s at {RATE:g}/s, p95 {p95 * 1000:.0f} ms, "
        f"workers RSS {baseline / 1024:.1f} -> {final / 1024:.1f} MiB ({growth:+.1%})"
    )
    assert soak.errors == []
    assert {kind: sorted(set(statuses)) for kind, statuses in soak.statuses.items()} == {
        kind: [200] for kind in ("hook", "fallback", "discovery", "feedback")
    }
    assert total == int(WARM_UP_S * RATE) + int((DURATION_S - WARM_UP_S) * RATE)
    assert growth < MAX_GROWTH
    assert not any(line.get("level") == "ERROR" for line in server.json_lines())
