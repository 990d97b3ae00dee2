"""Bounded soak (`make test-slow`): gunicorn (2 workers x 4 threads) with client JWT verification on, a
steady request rate over loopback for a few minutes -- hooks with full prefetch, hooks completed from a
loopback FHIR server with a bearer token, discovery and feedback -- then: no errors, and worker memory (RSS)
grew by less than 10 % between the end of the warm-up and the end of the run.

The fault-mix variant (issue 18, item 4) is closed-loop: OVERLAP_CLIENTS clients send calls back to back,
most of them to FHIR servers that fail in turn (500, malformed JSON, a slow answer past the deadline, a
refused connection), so hook calls overlap all the time and the collector is never released by a pause.
Before the fix, worker RSS grew without bound under this load (measured 217 -> 341 MiB in 90 s after the
warm-up, +57 %); the collector hold must not let the garbage of those failures pile up.

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
from tests.loopback_http import LoopbackServer, Reply, Seen, closed_port_url
from tests.plugins.fhir_stack import free_port

DURATION_S = min(float(os.environ.get("SOAK_SECONDS", "180")), 900)
RATE = min(float(os.environ.get("SOAK_RATE", "15")), 50)
WARM_UP_S = min(30.0, DURATION_S / 4)
OVERLAP_CLIENTS = 16
MAX_GROWTH = 0.10
KEY = SigningKey.ec("soak-key")
PID = "soak-patient"
RESOURCES = car_t_patient(PID)


def fhir(seen: Seen) -> Reply:
    if seen.path.startswith("/fhir/Patient/"):
        return Reply(body=RESOURCES[0])
    kind = seen.path.rsplit("/", 1)[-1]
    return Reply(body=searchset(r for r in RESOURCES if r["resourceType"] == kind))


_faults = itertools.cycle(["500", "junk", "ok", "slow", "500", "not-bundle"])
_faults_lock = threading.Lock()


def faulty(seen: Seen) -> Reply:
    """The FHIR server of the fault mix: failing searches in turn (the Patient read always works)."""
    if seen.path.startswith("/fhir/Patient/"):
        return Reply(body=RESOURCES[0])
    with _faults_lock:
        kind = next(_faults)
    if kind == "500":
        return Reply(status=500, body=b"down")
    if kind == "junk":
        return Reply(body=b'{"resourceType": "Bundle", "entry": [')
    if kind == "slow":
        return Reply(body=searchset([]), delay_s=4.0)  # past the 2.5 s hook deadline
    if kind == "not-bundle":
        return Reply(body={"resourceType": "Patient", "id": "x"})
    return fhir(seen)


class Soak:
    def __init__(self, server: ServerProcess, fhir_base: str, fault_bases: tuple[str, ...] = ()) -> None:
        self.server, self.fhir_base = server, fhir_base
        self.fault_bases = itertools.cycle(fault_bases) if fault_bases else None
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
        if kind == "fault" and self.fault_bases is not None:
            return "/cds-services/iec-hs-screening", hook_body(
                "patient-view", PID, fhir_server=next(self.fault_bases), token="soak-fhir-token"
            )
        return "/cds-services/iec-hs-screening", hook_body(
            "patient-view", PID, prefetch=full_prefetch(RESOURCES)
        )


CLEAN_MIX = ("hook", "hook", "fallback", "discovery", "hook", "feedback")
FAULT_MIX = ("fault", "hook", "fault", "fallback", "fault", "discovery", "fault", "feedback")


def steady(
    soak: Soak, seconds: float, pool: ThreadPoolExecutor, kinds: tuple[str, ...] = CLEAN_MIX
) -> list[Future[None]]:
    """Issue requests at RATE per second for `seconds` (a fixed schedule, not as fast as possible)."""
    mix = itertools.cycle(kinds)
    futures, start = [], time.monotonic()
    for n in range(int(seconds * RATE)):
        time.sleep(max(0.0, start + n / RATE - time.monotonic()))
        futures.append(pool.submit(soak.request, next(mix)))
    return futures


def closed_loop(soak: Soak, seconds: float, kinds: tuple[str, ...]) -> None:
    """OVERLAP_CLIENTS clients, each sending its next call as soon as the last one is answered."""
    stop = time.monotonic() + seconds
    mix = itertools.cycle(kinds)
    lock = threading.Lock()

    def client() -> None:
        while time.monotonic() < stop:
            with lock:
                kind = next(mix)
            soak.request(kind)

    with ThreadPoolExecutor(max_workers=OVERLAP_CLIENTS) as pool:
        for future in [pool.submit(client) for _ in range(OVERLAP_CLIENTS)]:
            future.result(timeout=seconds + 60)


@pytest.mark.slow
@pytest.mark.timeout(int(DURATION_S) + 300)
@pytest.mark.parametrize("mix", ["clean", "faults"])
def test_soak_no_errors_and_bounded_memory(tmp_path: Path, mix: str) -> None:
    kinds = CLEAN_MIX if mix == "clean" else FAULT_MIX
    with LoopbackServer(fhir) as fhir_server, LoopbackServer(faulty) as fault_server:
        fhir_base = f"{fhir_server.base_url}/fhir"
        fault_bases = (f"{fault_server.base_url}/fhir", closed_port_url())
        allowed = [fhir_base, *fault_bases]
        clients = json.dumps({"clients": [client_entry(KEY, fhir_servers=allowed)]})
        env = {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'soak.sqlite3'}",
            "CDS_WORKERS": "2",
            "CDS_THREADS": "4",
            "CDS_TRUSTED_CLIENTS": clients,
        }
        server = start_server(tmp_path, free_port(), env, label=f"soak-{mix}")
        soak = Soak(server, fhir_base, fault_bases if mix == "faults" else ())
        try:
            if mix == "faults":
                closed_loop(soak, WARM_UP_S, kinds)
                baseline = server.workers_rss_kib()
                closed_loop(soak, DURATION_S - WARM_UP_S, kinds)
                final = server.workers_rss_kib()
            else:
                with ThreadPoolExecutor(max_workers=8) as pool:
                    for future in steady(soak, WARM_UP_S, pool, kinds):
                        future.result(timeout=60)
                    baseline = server.workers_rss_kib()
                    for future in steady(soak, DURATION_S - WARM_UP_S, pool, kinds):
                        future.result(timeout=60)
                    final = server.workers_rss_kib()
        finally:
            server.stop()
    total = sum(len(s) for s in soak.statuses.values())
    p95 = statistics.quantiles(soak.latencies, n=20)[18]
    growth = (final - baseline) / baseline
    rate = f"{RATE:g}/s" if mix == "clean" else f"{OVERLAP_CLIENTS} clients back to back"
    print(
        f"\nsoak ({mix}): {total} requests in {DURATION_S:.0f} s, {rate}, p95 {p95 * 1000:.0f} ms, "
        f"workers RSS {baseline / 1024:.1f} -> {final / 1024:.1f} MiB ({growth:+.1%})"
    )
    assert soak.errors == []
    expected = {kind: [200] for kind in ("hook", "fallback", "discovery", "feedback")}
    if mix == "faults":
        expected["fault"] = [200, 412]  # a failed optional query is a gap (200), a failed required one 412
    assert {kind: sorted(set(statuses)) for kind, statuses in soak.statuses.items()} == expected
    if mix == "clean":
        assert total == int(WARM_UP_S * RATE) + int((DURATION_S - WARM_UP_S) * RATE)
    assert growth < MAX_GROWTH
    assert not any(line.get("level") == "ERROR" for line in server.json_lines())
