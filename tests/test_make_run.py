"""First run, literally: clone the repository at HEAD into a temporary directory, run the real `make run`
there (it creates its own .venv: a copied or linked one would still run the original checkout's code, and
the Makefile's install stamp would then reinstall into it), wait for discovery, open the card preview page
in headless Chromium, send a fixture scenario, see the card, dismiss it with an override reason, and find
the feedback in the clone's own SQLite database.

The port: `make run PORT=<free port>` when the Makefile has a PORT variable; otherwise port 8080 if it is
free, else the test is skipped (it must never assume 8080 is free). Budget: about a minute (the install
resolves from the local wheel cache), three minutes at most.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from cds_service.datafiles import PROJECT_ROOT
from cds_service.hooks.feedback import FeedbackStore
from tests.plugins.fhir_stack import free_port

BUDGET_S = 170


@dataclass
class MakeRun:
    """A `make run` process group serving a fresh clone."""

    clone: Path
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def choose_port(makefile: Path) -> tuple[int, list[str]]:
    """(port, extra make arguments): a free port through the Makefile's PORT variable."""
    assert re.search(r"^PORT\s*\?=", makefile.read_text(encoding="utf-8"), re.MULTILINE), (
        "the Makefile must let `make run` take PORT (PORT ?= 8080)"
    )
    port = free_port()
    return port, [f"PORT={port}"]


def clean_environment() -> dict[str, str]:
    """The caller's environment without service settings, an active venv or an outer make's flags."""
    dropped = ("CDS_", "PROMETHEUS_", "MAKE", "MFLAGS", "VIRTUAL_ENV", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped) and k != "DATABASE_URL"}
    venv_bin = str(PROJECT_ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


def wait_for_discovery(run: MakeRun, deadline: float) -> None:
    while time.monotonic() < deadline:
        if run.process.poll() is not None:
            pytest.fail(f"`make run` exited with {run.process.returncode}:\n{run.log()[-5000:]}")
        try:
            if requests.get(f"{run.base_url}/cds-services", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    pytest.fail(f"no discovery within {BUDGET_S} s:\n{run.log()[-5000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group we started (make, cds-service, gunicorn), SIGKILL if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRun]:
    assert shutil.which("make") and shutil.which("git"), "the first-run test needs make and git"
    started = time.monotonic()
    clone = tmp_path_factory.mktemp("first-run") / "clone"
    subprocess.run(["git", "clone", "--quiet", str(PROJECT_ROOT), str(clone)], check=True, timeout=120)
    port, make_args = choose_port(clone / "Makefile")
    log_path = clone.parent / "make-run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["make", "run", *make_args],
            cwd=clone,
            env=clean_environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run = MakeRun(clone, f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_for_discovery(run, started + BUDGET_S)
        yield run
    finally:
        stop(process)


def test_make_run_serves_the_clone_and_prints_the_urls(make_run: MakeRun) -> None:
    assert (make_run.clone / ".venv" / ".installed").is_file()  # its own environment, set up by make
    log = make_run.log()
    assert f"card preview page (open this first): {make_run.base_url}/" in log
    assert f"discovery:  {make_run.base_url}/cds-services" in log
    assert "DEVELOPMENT MODE" in log
    health = requests.get(f"{make_run.base_url}/healthz", timeout=5).json()
    assert health["mode"] == "development"
    assert requests.get(f"{make_run.base_url}/readyz", timeout=5).status_code == 200
    # The watch list runs embedded: its page and API answer, and each worker started a scheduler.
    assert f"watch list: {make_run.base_url}/smart/worklist" in log
    assert requests.get(f"{make_run.base_url}/watch/api/patients", timeout=5).json() == {"patients": []}
    assert requests.get(f"{make_run.base_url}/smart/worklist", timeout=5).status_code == 200
    assert '"event":"watch-scheduler"' in make_run.log()


def test_first_run_preview_card_and_feedback(make_run: MakeRun, page: Page) -> None:
    page.goto(f"{make_run.base_url}/")
    expect(page.locator("h1")).to_contain_text("card preview")
    page.select_option("#scenario", "classic-iec-hs")
    page.select_option("#hook", "patient-view")
    page.click("#send")
    card = page.locator(".cds-card").first
    expect(card.locator(".cds-card-summary")).to_have_text(
        "IEC-HS criteria met, grade 2 (at least), day +13 after axi-cel", timeout=30_000
    )
    expect(card.locator(".cds-card-indicator")).to_have_text("critical")

    card.locator(".dismiss-toggle").click()
    card.get_by_label("Alternative diagnosis being worked up (e.g. infection, progression)").check()
    card.locator(".dismiss-send").click()
    expect(card.locator(".feedback-result")).to_contain_text("server answered 200", timeout=30_000)

    store = FeedbackStore(f"sqlite:///{make_run.clone / 'instance' / 'feedback.sqlite3'}")
    try:
        records = store.all("iec-hs-screening")
    finally:
        store.engine.dispose()
    assert [(r.outcome, r.override_code) for r in records] == [("overridden", "alternative-diagnosis")]
