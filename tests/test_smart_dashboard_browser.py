"""The dashboard in a real browser: headless Debian Chromium (Playwright) through the full SMART launch
(EHR and standalone) against the test bed's real FHIR server and SMART authorization server.

Screenshots go to test-artifacts/. With ``SMART_UPDATE_DOCS_SCREENSHOT=1`` the classic-case screenshot is
also written to docs/dashboard-classic.png (the one the docs show).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from cds_service.smart.devserver import serve
from cds_service.web.app import create_app
from tests.plugins.browser import save_screenshot
from tests.plugins.fhir_stack import FhirStack

PATIENT = "classic-iec-hs"
CARD_CONTEXT = json.dumps({"patient": PATIENT, "at": "2026-03-15T20:00:00+00:00", "view": "iec-hs"})
REPO = Path(__file__).resolve().parents[1]
DOCS_SCREENSHOT = REPO / "docs" / "dashboard-classic.png"
CHARTS = ("ferritin", "fibrinogen", "transaminases", "platelets", "anc", "hemoglobin", "triglycerides", "ldh")


@pytest.fixture(scope="module")
def base_url(fhir_stack: FhirStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    database = tmp_path_factory.mktemp("smart-browser") / "feedback.sqlite3"
    app = create_app(
        {
            "CDS_DEV_MODE": True,
            "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{fhir_stack.app_port}",
            "DATABASE_URL": f"sqlite:///{database}",
        }
    )
    with serve(app, fhir_stack.app_port) as base:
        yield base


def open_from_card(page: Page, fhir_stack: FhirStack, base_url: str, **kwargs: object) -> None:
    """What the EHR does with the card's smart link: launch, then the app runs discovery + PKCE."""
    url = fhir_stack.ehr_launch_url(PATIENT, f"{base_url}/smart/launch", app_context=CARD_CONTEXT, **kwargs)  # type: ignore[arg-type]
    page.goto(url)
    page.wait_for_url(f"{base_url}/smart/dashboard")


def patient_name(fhir_stack: FhirStack) -> str:
    patient = fhir_stack.http.get(f"{fhir_stack.fhir_base}/Patient/{PATIENT}", timeout=30).json()
    name = patient["name"][0]
    return str(name["family"])


def test_ehr_launch_shows_status_grade_banner_and_charts(
    page: Page, fhir_stack: FhirStack, base_url: str, screenshot: Callable[[str], Path]
) -> None:
    open_from_card(page, fhir_stack, base_url)
    assert PATIENT not in page.url
    expect(page.locator("#iec-hs-status")).to_have_text("met")
    expect(page.locator("#iec-hs-grade")).to_have_text(r"Grade 2 (at least)")
    expect(page.locator("#patient-banner")).to_contain_text(patient_name(fhir_stack))
    expect(page.locator("#day-post-infusion")).to_have_text("day 13")
    expect(page.locator("#evaluation-instant")).to_contain_text("2026-03-15 20:00 UTC")
    expect(page.locator("#hscore-line")).to_contain_text("HScore: 210 ")
    for chart in (*CHARTS, "temperature"):
        expect(page.locator(f"svg#chart-{chart}")).to_be_visible()
    ferritin = page.locator("svg#chart-ferritin")
    assert ferritin.get_attribute("data-scale") == "log"
    assert ferritin.locator("g.ref-line[data-kind='threshold']").count() >= 2
    assert ferritin.locator("rect.crs-band").count() == 1
    assert (
        ferritin.locator("g.marker-anakinra").count() == 6
        and ferritin.locator("g.marker-tocilizumab").count() == 1
    )
    fibrinogen = page.locator("svg#chart-fibrinogen")
    expect(fibrinogen.locator("g.ref-line[data-value='150'] text")).to_contain_text("IEC-HS < 150")
    screenshot("dashboard")
    shot = save_screenshot(page, "dashboard-classic-top", full_page=False)
    assert shot.stat().st_size > 10_000
    if os.environ.get("SMART_UPDATE_DOCS_SCREENSHOT") == "1":
        page.set_viewport_size({"width": 1280, "height": 1400})  # banner, summary and the first charts
        shutil.copyfile(save_screenshot(page, "dashboard-classic-docs", full_page=False), DOCS_SCREENSHOT)
        page.set_viewport_size({"width": 1280, "height": 800})
    # The text alternative lists exactly the plotted points.
    panel = page.locator("#panel-ferritin")
    panel.locator("summary").click()
    assert panel.locator("tbody tr").count() == ferritin.locator("circle.point").count() == 44


def test_layout_fits_desktop_and_tablet_and_prints_without_controls(
    page: Page, fhir_stack: FhirStack, base_url: str
) -> None:
    open_from_card(page, fhir_stack, base_url)
    overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    assert page.evaluate(overflow) == 0
    desktop = [page.locator(f"#panel-{c}").bounding_box() for c in ("ferritin", "fibrinogen")]
    assert desktop[0] and desktop[1] and desktop[0]["y"] == desktop[1]["y"]  # two charts per row
    page.set_viewport_size({"width": 768, "height": 1024})
    assert page.evaluate(overflow) == 0
    tablet = [page.locator(f"#panel-{c}").bounding_box() for c in ("ferritin", "fibrinogen")]
    assert tablet[0] and tablet[1] and tablet[0]["x"] == tablet[1]["x"] and tablet[1]["y"] > tablet[0]["y"]
    page.emulate_media(media="print")
    expect(page.locator("form.instant")).to_be_hidden()
    expect(page.locator("svg#chart-ferritin")).to_be_visible()
    save_screenshot(page, "dashboard-classic-print-tablet")


def test_charts_and_page_are_labelled_for_assistive_technology(
    page: Page, fhir_stack: FhirStack, base_url: str
) -> None:
    open_from_card(page, fhir_stack, base_url)
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('svg.chart')].filter(svg => {
            const ids = (svg.getAttribute('aria-labelledby') || '').split(' ');
            return svg.getAttribute('role') !== 'img' || ids.length !== 2
                || ids.some(id => !svg.querySelector('#' + CSS.escape(id))?.textContent.trim());
        }).map(svg => svg.id)"""
    )
    assert unlabelled == []
    description = page.locator("svg#chart-ferritin desc").text_content() or ""
    assert "log scale" in description and "CRS grade 2" in description and "anakinra" in description
    assert page.locator("html").get_attribute("lang") == "en"
    page.keyboard.press("Tab")
    expect(page.locator("a.skip-link")).to_be_focused()


def test_need_patient_banner_false_hides_the_banner(page: Page, fhir_stack: FhirStack, base_url: str) -> None:
    open_from_card(page, fhir_stack, base_url, need_patient_banner=False)
    expect(page.locator("#patient-banner")).to_have_count(0)
    expect(page.locator("#iec-hs-status")).to_have_text("met")


def test_standalone_launch_with_the_patient_picker(
    page: Page, fhir_stack: FhirStack, base_url: str, screenshot: Callable[[str], Path]
) -> None:
    page.goto(f"{base_url}/smart/standalone")
    page.fill("#iss", fhir_stack.fhir_base)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/smart/picker")
    page.fill("#name", patient_name(fhir_stack))
    page.click("form[role=search] button")
    page.fill("#at", "2026-03-15T20:00")
    page.click(f"button[data-patient-id='{PATIENT}']")
    page.wait_for_url(f"{base_url}/smart/dashboard")
    expect(page.locator("#iec-hs-status")).to_have_text("met")
    expect(page.locator("#evaluation-instant")).to_contain_text("chosen on this page")
    screenshot("standalone")
    page.click("button.end")
    expect(page.locator("h1#ended-title")).to_be_visible()
    page.goto(f"{base_url}/smart/dashboard")
    expect(page.locator("[data-error-code='no-session']")).to_be_visible()


def test_denied_authorization_shows_an_error_page(
    page: Page, fhir_stack: FhirStack, base_url: str, screenshot: Callable[[str], Path]
) -> None:
    page.goto(fhir_stack.ehr_launch_url(PATIENT, f"{base_url}/smart/launch", deny=True))
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Access was not granted")
    expect(alert).to_contain_text("Open the dashboard again")
    screenshot("denied")
