"""First run, literally: clone the repository at HEAD into a temporary directory, run the real `make run`
there (it creates its own .venv: a copied or linked one would still run the original checkout's code, and
the Makefile's install stamp would then reinstall into it), wait for discovery, open the card preview page
in headless Chromium, send a fixture scenario, see the card, dismiss it with an override reason, and find
the feedback in the clone's own SQLite database. The card's dashboard link opens the evidence view out of
the box; with the real `make stack` started on the same Makefile ports (from this checkout, whose Node
packages are installed), the stack's printed launch URL and the preview page's link both reach the SMART
dashboard of the `make run` server.

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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from cds_service.datafiles import PROJECT_ROOT
from cds_service.hooks.feedback import FeedbackStore
from tests.plugins.fhir_stack import free_port

BUDGET_S = 170
# make stack's launch URL for classic-iec-hs (its appContext JSON ends the line, URL-encoded).
LAUNCH_LINE = re.compile(r"^  classic-iec-hs +(http\S+%7D)$", re.MULTILINE)


@dataclass
class MakeRun:
    """A `make run` process group serving a fresh clone."""

    clone: Path
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int
    auth_port: int  # the AUTH_PORT `make run` was given: where it expects `make stack`'s EHR launcher

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
    """The caller's environment without service or stack settings, an active venv or an outer make's flags."""
    dropped: tuple[str, ...] = ("CDS_", "PROMETHEUS_", "MAKE", "MFLAGS", "VIRTUAL_ENV", "PYTHONPATH")
    dropped += ("FHIR_", "SMART_", "PORT", "AUTH_PORT", "APP_PORT", "STACK_", "BULK_")
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
    auth_port = free_port()
    make_args.append(f"AUTH_PORT={auth_port}")
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
    run = MakeRun(clone, f"http://127.0.0.1:{port}", process, log_path, port, auth_port)
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


def test_the_cards_dashboard_link_opens_the_evidence_view_out_of_the_box(
    make_run: MakeRun, page: Page
) -> None:
    """`make run` alone: no EHR launcher runs on AUTH_PORT, so the link opens the evidence view."""
    page.goto(f"{make_run.base_url}/")
    expect(page.locator("#dashboard-mode")).to_contain_text("the evidence view")
    page.select_option("#scenario", "classic-iec-hs")
    page.click("#send")
    card = page.locator(".cds-card").first
    expect(card.locator("button.dashboard-link")).to_have_text("Open the IEC-HS dashboard", timeout=30_000)
    with page.context.expect_page(timeout=30_000) as opened:
        card.locator("button.dashboard-link").click()
    evidence = opened.value
    evidence.wait_for_load_state()
    assert evidence.url == f"{make_run.base_url}/preview/evidence"
    expect(evidence.locator("#iec-hs-status")).to_have_text("met")
    expect(evidence.locator("#unverified-list")).to_contain_text("UNVERIFIED")


@contextmanager
def make_stack(port: int, auth_port: int, fhir_port: int, log_path: Path) -> Iterator[str]:
    """`make stack PORT=.. FHIR_PORT=.. AUTH_PORT=..` in this checkout until the block ends; yields its output
    once it has printed the launch URLs (then it stops, with its whole process group)."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["make", "stack", f"PORT={port}", f"FHIR_PORT={fhir_port}", f"AUTH_PORT={auth_port}"],
            cwd=PROJECT_ROOT,
            env=clean_environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + BUDGET_S
        text = ""
        while not LAUNCH_LINE.search(text):  # printed in one write: the classic line is there when done
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`make stack` did not print its launch URLs:\n{text[-5000:]}")
            time.sleep(0.5)
            text = log_path.read_text(encoding="utf-8", errors="replace")
        yield text
    finally:
        stop(process)


def test_make_stack_and_make_run_launch_the_dashboard_on_the_right_ports(
    make_run: MakeRun, page: Page, tmp_path: Path
) -> None:
    with make_stack(make_run.port, make_run.auth_port, free_port(), tmp_path / "stack.log") as printed:
        launch = LAUNCH_LINE.search(printed)
        assert launch is not None, printed[-3000:]
        assert f"launch_uri=http%3A%2F%2F127.0.0.1%3A{make_run.port}%2Fsmart%2Flaunch" in launch.group(1)
        assert f"redirect URIs:        http://127.0.0.1:{make_run.port}/smart/callback" in printed
        page.goto(launch.group(1))  # what an EHR does with the card's link
        page.wait_for_url(f"{make_run.base_url}/smart/dashboard", timeout=60_000)
        expect(page.locator("#iec-hs-status")).to_have_text("met")
        expect(page.locator("#evaluation-instant")).to_contain_text("2026-03-15 20:00 UTC")

        page.goto(f"{make_run.base_url}/")  # the preview page finds the running launcher on AUTH_PORT
        expect(page.locator("#dashboard-mode")).to_contain_text(f"127.0.0.1:{make_run.auth_port}/ehr/launch")
        page.select_option("#scenario", "classic-iec-hs")
        page.click("#send")
        card = page.locator(".cds-card").first
        expect(card.locator(".cds-card-summary")).to_contain_text("IEC-HS criteria met", timeout=30_000)
        with page.context.expect_page(timeout=30_000) as opened:
            card.locator("button.dashboard-link").click()
        dashboard = opened.value
        dashboard.wait_for_url(f"{make_run.base_url}/smart/dashboard", timeout=60_000)
        expect(dashboard.locator("#iec-hs-status")).to_have_text("met")
        expect(dashboard.locator("#iec-hs-grade")).to_have_text("Grade 2 (at least)")
        expect(dashboard.locator("#treatment")).to_contain_text("100–200 mg IV or SQ every 6–12 h")


def test_make_stack_registers_make_runs_default_port() -> None:
    """Without arguments both targets use the same PORT (8080) and AUTH_PORT (8091)."""
    dry = subprocess.run(
        ["make", "-n", "run", "stack"],
        cwd=PROJECT_ROOT,
        env=clean_environment(),
        capture_output=True,
        text=True,
    )
    assert dry.returncode == 0, dry.stderr
    assert "--port 8080" in dry.stdout and "APP_PORT=8080" in dry.stdout
    assert "AUTH_PORT=8091" in dry.stdout and "http://127.0.0.1:8091/ehr/launch" in dry.stdout
