"""The worklist in a real browser (headless Debian Chromium through Playwright), against the session's FHIR
stack and SMART authorization server, with the watcher reading through the stack's Backend Services client.

* Development mode without trusted clients: the worklist is open; patients are sorted by urgency, each with
  a labelled ferritin sparkline; a problem is shown in its row; the page reloads itself. The screenshot is
  written to docs/watch-list.png with ``WATCH_UPDATE_DOCS_SCREENSHOT=1``.
* With trusted clients (as in production): a sign-in page; the dashboard's own standalone SMART launch
  brings the user back to the worklist, and "Open dashboard" shows that patient's dashboard.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from cds_service.smart.devserver import serve
from tests.plugins.browser import save_screenshot
from tests.plugins.fhir_stack import FhirStack, free_port
from tests.watch_helpers import dispose, servers_file, state_of, watch_app

REPO = Path(__file__).resolve().parents[1]
DOCS_SCREENSHOT = REPO / "docs" / "watch-list.png"
AT = datetime.fromisoformat("2026-03-15T20:00:00+00:00")
WATCHED = ["classic-iec-hs", "si-units", "pop-06", "pop-07", "pop-08", "pop-05", "non-car-t-high-ferritin"]
MISSING = "no-such-patient-1"


def build(fhir_stack: FhirStack, directory: Path, **config: object) -> Flask:
    """A watcher on the session stack (its backend-rs384 client), the fixture patients evaluated at AT."""
    directory.mkdir(parents=True, exist_ok=True)
    client = fhir_stack.backend_client("backend-rs384")
    app = watch_app(
        directory, servers_file(directory, fhir_stack, client), CDS_WATCH_SUBSCRIPTIONS=False, **config
    )
    state = state_of(app)
    for patient in [*WATCHED, MISSING]:
        assert state.enrol(fhir_stack.fhir_base, patient, infusion_at=None, source="api")[1]
    state.cycle(full=True, at=AT)
    return app


@pytest.fixture(scope="module")
def open_list(fhir_stack: FhirStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, str]]:
    app = build(fhir_stack, tmp_path_factory.mktemp("watch-browser"))
    with serve(app, free_port()) as base:
        yield app, base
    dispose(app)


def test_the_open_worklist_sorts_by_urgency_and_shows_trends_and_problems(
    page: Page, open_list: tuple[Flask, str]
) -> None:
    app, base = open_list
    page.goto(f"{base}/smart/worklist")
    expect(page.locator("#dev-open")).to_be_visible()
    rows = page.locator("#worklist tbody tr")
    listed = [rows.nth(i).get_attribute("data-status") for i in range(rows.count())]
    # pop-05 (day 33) and the patient without CAR-T left at their first evaluation.
    assert rows.count() == len(WATCHED) - 2 + 1
    ranks = {"met": 0, "possible": 1}
    assert [ranks.get(s or "", 2) for s in listed] == sorted(ranks.get(s or "", 2) for s in listed)
    first = page.locator("#worklist tbody tr", has_text="classic-iec-hs")
    assert listed[:2] == ["met", "met"] and listed[2] != "met"
    expect(first.locator(".status")).to_have_text("met")
    expect(first.locator(".grade")).to_have_text("2")
    expect(first.locator(".day")).to_have_text("13")
    spark = first.locator("svg.sparkline")
    expect(spark).to_have_attribute("role", "img")
    assert "ferritin rising" in (spark.get_attribute("aria-label") or "")
    missing = page.locator("#worklist tbody tr", has_text=MISSING)
    expect(missing.locator(".problem")).to_have_text("⚠ patient not found on the FHIR server")
    assert page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") == 0
    assert page.locator("meta[http-equiv=refresh]").get_attribute("content") == "60"
    shot = save_screenshot(page, "watch-list", full_page=False)
    if os.environ.get("WATCH_UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(shot, DOCS_SCREENSHOT)
    # It refreshes itself: a patient taken off the list disappears without any click.
    app.config["WATCH_REFRESH_S"] = 1
    page.reload()
    web = app.test_client()
    body = {"patientId": MISSING, "fhirServer": state_of(app).store.active()[0].fhir_server}
    assert web.post("/watch/api/unenroll", json=body).status_code == 200
    expect(page.locator("#worklist tbody tr", has_text=MISSING)).to_have_count(0, timeout=10_000)


TRUSTED = {
    "clients": [{"issuer": "https://ehr.example.org", "jwks_url": "https://ehr.example.org/jwks.json"}]
}


def test_with_trusted_clients_the_worklist_is_behind_the_smart_sign_in(
    page: Page, fhir_stack: FhirStack, tmp_path: Path
) -> None:
    app = build(
        fhir_stack,
        tmp_path / "signed",
        CDS_TRUSTED_CLIENTS=json.dumps(TRUSTED),
        CDS_PUBLIC_BASE_URL=f"http://127.0.0.1:{fhir_stack.app_port}",
    )
    try:
        with serve(app, fhir_stack.app_port) as base:
            page.goto(f"{base}/smart/worklist")
            expect(page.locator("#signin-title")).to_be_visible()
            assert page.locator("#worklist").count() == 0
            page.click("form.signin button")  # standalone launch: authorize, token, back to the worklist
            expect(page.locator("#worklist")).to_be_visible(timeout=30_000)
            assert page.url == f"{base}/smart/worklist"
            expect(page.locator("#dev-open")).to_have_count(0)
            row = page.locator("#worklist tbody tr", has_text="classic-iec-hs")
            row.locator("a", has_text="Open dashboard").click()
            page.wait_for_url(f"{base}/smart/dashboard")
            assert "classic-iec-hs" not in page.url
            expect(page.locator("#iec-hs-status")).to_be_visible()
            save_screenshot(page, "watch-list-open-dashboard")
            # The API is not behind the browser's sign-in: it needs a client JWT.
            assert app.test_client().get("/watch/api/patients").status_code == 401
    finally:
        dispose(app)
