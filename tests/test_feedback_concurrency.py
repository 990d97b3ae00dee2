"""Feedback under load against real gunicorn (2 workers x 4 threads) on loopback: 1,000 distinct feedback
items posted concurrently (a bounded pool of 32 client threads), 100 of them posted twice, one worker
killed and the whole server restarted while the posts are in flight. Clients retry until they get a 200
(feedback is idempotent, so retrying is always safe). Afterwards the database holds every item exactly
once -- on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from cds_service.hooks.feedback import FeedbackStore
from tests.gunicorn_process import ServerProcess, start_server
from tests.plugins.fhir_stack import free_port

ITEMS, RESENT, CLIENT_THREADS = 1000, 100, 32
RUN_TIMEOUT_S = 180  # the whole load, restart included; each post retries until then
SERVICE = "iec-hs-screening"


def item(n: int) -> dict[str, object]:
    return {
        "card": f"load-card-{n:04d}",
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": f"s-{n}"}],
        "outcomeTimestamp": f"2026-11-24T00:{n // 60 % 60:02d}:{n % 60:02d}.{n:03d}Z",
    }


class Load:
    """Posts items with retries; counts successes so the test can restart the server mid-run."""

    def __init__(self, base_url: str) -> None:
        self.url = f"{base_url}/cds-services/{SERVICE}/feedback"
        self.deadline = time.monotonic() + RUN_TIMEOUT_S
        self.succeeded = 0
        self.retries = 0
        self.stored: list[int] = []
        self._lock = threading.Lock()
        self._local = threading.local()

    def post(self, n: int) -> None:
        session = self._local.__dict__.setdefault("session", requests.Session())
        while time.monotonic() < self.deadline:
            try:
                response = session.post(self.url, json={"feedback": [item(n)]}, timeout=10)
            except requests.RequestException:
                response = None
            if response is not None and response.status_code == 200:
                with self._lock:
                    self.succeeded += 1
                    self.stored.append(response.json()["stored"])
                return
            assert response is None or response.status_code >= 500, response.text  # never a 4xx
            with self._lock:
                self.retries += 1
            time.sleep(0.05)
        raise AssertionError(f"item {n} not acknowledged within {RUN_TIMEOUT_S} s")


def disrupt(server: ServerProcess, load: Load, workdir: Path, env: dict[str, str]) -> Iterator[ServerProcess]:
    """Kill one worker at ~25 % progress, restart the whole server at ~50 %; yields the running server."""
    while load.succeeded < ITEMS // 4 and time.monotonic() < load.deadline:
        time.sleep(0.01)
    os.kill(server.worker_pids()[0], signal.SIGKILL)  # a worker of our own server dies mid-request
    while load.succeeded < ITEMS // 2 and time.monotonic() < load.deadline:
        time.sleep(0.01)
    server.stop()
    yield start_server(workdir, server.port, env, label="restarted")


def run_load(workdir: Path, database_url: str) -> tuple[Load, list[ServerProcess]]:
    env = {"DATABASE_URL": database_url, "CDS_WORKERS": "2", "CDS_THREADS": "4"}
    servers = [start_server(workdir, free_port(), env)]
    load = Load(servers[0].base_url)
    numbers = list(range(ITEMS)) + list(range(0, ITEMS, ITEMS // RESENT))  # 100 items sent twice
    try:
        with ThreadPoolExecutor(max_workers=CLIENT_THREADS) as pool:
            futures = [pool.submit(load.post, n) for n in numbers]
            servers += list(disrupt(servers[0], load, workdir, env))
            for future in futures:
                future.result(timeout=RUN_TIMEOUT_S)
    finally:
        for server in servers:
            server.stop()
    return load, servers


def check_database(database_url: str, load: Load) -> None:
    store = FeedbackStore(database_url)
    try:
        records = store.all(SERVICE)
    finally:
        store.engine.dispose()  # close (dispose() keeps connections open for forked workers)
    cards = [r.card_uuid for r in records]
    assert len(cards) == len(set(cards)) == ITEMS, "every item exactly once"
    assert set(cards) == {f"load-card-{n:04d}" for n in range(ITEMS)}
    assert load.succeeded == ITEMS + RESENT
    assert set(load.stored) <= {0, 1} and sum(load.stored) <= ITEMS


@pytest.mark.timeout(400)
def test_sqlite_feedback_survives_load_and_restart(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'load.sqlite3'}"
    start = time.monotonic()
    load, servers = run_load(tmp_path, database_url)
    check_database(database_url, load)
    assert len(servers) == 2 and load.retries > 0, "the restart must have interrupted some posts"
    print(f"\nsqlite: {ITEMS + RESENT} posts, {load.retries} retries, {time.monotonic() - start:.1f} s")


@pytest.mark.timeout(400)
def test_postgresql_feedback_survives_load_and_restart(tmp_path: Path, postgres_database_url: str) -> None:
    start = time.monotonic()
    load, servers = run_load(tmp_path, postgres_database_url)
    check_database(postgres_database_url, load)
    assert len(servers) == 2 and load.retries > 0
    print(f"\npostgresql: {ITEMS + RESENT} posts, {load.retries} retries, {time.monotonic() - start:.1f} s")
