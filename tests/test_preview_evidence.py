"""The evidence behind the card (issue 17): on the dashboard's template, reachable without SMART.

* The evidence view (POST /preview/evidence) runs the hook's own evaluation of the request the preview page
  sent and shows every item the card no longer carries: criteria tables, instruments side by side, the
  review's treatment lines with verbatim doses, data quality and what could not be read, every source and the
  UNVERIFIED list. It agrees with the card for every fixture scenario and its raw twin.
* In headless Chromium: the preview page's card links open it ("Evidence view", and "Open the IEC-HS
  dashboard" while no EHR launcher runs), and with the real SMART stack named as the EHR launcher the
  card's link reaches the real SMART dashboard through an EHR launch, evaluated at the card's instant.
"""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import ConsoleMessage, Page, expect

from cds_service import create_app
from cds_service.cards.dosing import POPULATION_LABELS
from cds_service.engine.instruments.registry import REGISTRY
from cds_service.preview.builder import build_hook_request, bundle_resources, service_for_hook
from cds_service.preview.evidence import _environment
from cds_service.preview.scenarios import Scenario, find_scenario
from cds_service.smart.devserver import serve
from cds_service.smart.evidence import content_citations
from cds_service.web.state import get_state
from tests.cds_helpers import dev_config
from tests.golden import golden_scenarios
from tests.plugins.browser import save_screenshot
from tests.plugins.fhir_stack import FhirStack, free_port

TIMEOUT_MS = 30_000
CLASSIC = "classic-iec-hs"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    return create_app(dev_config(tmp_path_factory.mktemp("evidence")))


def hook_request(app: Flask, scenario: Scenario, hook: str = "patient-view") -> tuple[str, dict[str, Any]]:
    state = get_state(app)
    service = service_for_hook(state.registry, hook)
    return service.id, build_hook_request(
        service, bundle_resources(scenario.bundle()), None, scenario.at.date()
    )


def evidence(app: Flask, name: str) -> str:
    scenario = find_scenario(name)
    assert scenario is not None
    service_id, request = hook_request(app, scenario)
    form = {"service": service_id, "request": json.dumps(request), "instant": scenario.at.isoformat()}
    response = app.test_client().post("/preview/evidence", data=form)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.headers["Cache-Control"] == "no-store"
    assert "script-src" not in response.headers["Content-Security-Policy"]  # no scripts on the page
    return response.get_data(as_text=True)


def section(html: str, section_id: str) -> str:
    """The visible text of one <section id=...> (up to its closing tag), tags removed."""
    start = html.index(f'<section id="{section_id}"')
    depth, position = 0, start
    for match in re.finditer(r"<(/?)section\b", html[start:]):
        depth += -1 if match.group(1) else 1
        if depth == 0:
            position = start + match.end()
            break
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html[start:position])))


def test_every_item_that_left_the_card_is_on_the_evidence_page(app: Flask) -> None:
    html = evidence(app, CLASSIC)
    state = get_state(app)
    content, kb = state.cards, state.knowledge
    # Criteria tables of every instrument, and every instrument side by side.
    for instrument in REGISTRY:
        assert f'id="{instrument.key}-criteria"' in html
        assert f'data-instrument="{instrument.key}"' in html
    assert 'data-criterion="hypofibrinogenemia"' in html
    # The review's treatment lines, each dose verbatim for every population, conditions and notes.
    treatment = section(html, "treatment")
    for option in content.options:
        assert option.agent in treatment
        for dose in option.dosing:
            label = POPULATION_LABELS[dose.population]
            assert (f"{label}: {dose.text}" if label else dose.text) in treatment
        for note in (*option.statements, *option.unverified):
            assert note in treatment
    # Every source the card content cites, with its verification status.
    sources = section(html, "data")
    for cid in content_citations(content):
        assert f"{cid} ({kb.citations[cid]['status']}): " in sources
    # The UNVERIFIED list: the engine's items for this evaluation and the card content's.
    unverified = section(html, "unverified")
    assert "IEC-HS severity grading (Hines 2023) not checked against the published table" in unverified
    assert 'Whether "daily" means the total daily dose or twice daily is UNVERIFIED' in unverified
    assert "RxNorm 72435 for Anakinra: verification status R" in unverified
    assert "SNOMED CT 47625008 (Intravenous route)" in unverified
    assert "RxNorm 6902" not in unverified  # methylprednisolone's code is verified (V)
    assert content.statements["lines_by_grade"].text in unverified
    assert 'id="evidence-mode"' in html  # says what the page is: the hook's evaluation, without SMART


def test_data_quality_and_what_could_not_be_read_are_shown(app: Flask) -> None:
    html = evidence(app, "messy-data")
    quality = section(html, "data")
    assert "unit 'mg/furlong' is not a valid UCUM unit (Ferritin): excluded" in quality
    assert "status 'entered-in-error': excluded" in quality
    scenario = find_scenario(CLASSIC)
    assert scenario is not None
    service_id, request = hook_request(app, scenario)
    del request["prefetch"]["conditions"]  # no fhirServer: a stated gap, as on the card
    response = app.test_client().post(
        "/preview/evidence",
        json={"serviceId": service_id, "request": request, "instant": scenario.at.isoformat()},
    )
    assert response.status_code == 200
    assert "conditions: Conditions (CRS diagnosis, hemophagocytosis, ICANS)" in section(
        response.get_data(as_text=True), "data"
    )


@pytest.mark.parametrize("scenario", golden_scenarios(), ids=lambda s: s.name)
def test_the_evidence_view_agrees_with_the_card(app: Flask, scenario: Scenario) -> None:
    """Same evaluation as the hook: the page's IEC-HS status is the one the card speaks of."""
    service_id, request = hook_request(app, scenario)
    client = app.test_client()
    headers = {"X-CDS-Evaluation-Instant": scenario.at.isoformat()}
    cards = client.post(f"/cds-services/{service_id}", json=request, headers=headers).get_json()["cards"]
    form = {"service": service_id, "request": json.dumps(request), "instant": scenario.at.isoformat()}
    html = client.post("/preview/evidence", data=form).get_data(as_text=True)
    status = re.search(r'data-status="([a-z-]+)" id="iec-hs-status"', html)
    assert status is not None
    by_summary = {
        "IEC-HS criteria met": "met",
        "Possible IEC-HS": "possible",
        "IEC-HS not judged": "indeterminate",
    }
    if cards:
        expected = next(v for k, v in by_summary.items() if cards[0]["summary"].startswith(k))
        assert status.group(1) == expected
        assert (cards[0]["indicator"] == "critical") == (expected == "met")
    else:
        assert status.group(1) in {"not-met", "not-applicable"}
    assert f"{scenario.at.strftime('%Y-%m-%d %H:%M')} UTC" in html  # the same instant


def test_the_evidence_view_is_off_in_production_unless_configured(tmp_path: Path) -> None:
    production = {
        "CDS_DEV_MODE": False,
        "CDS_PUBLIC_BASE_URL": "https://cds.example.org",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'p.sqlite3'}",
        "CDS_SMART_SESSION_KEY": "y" * 43 + "=",
    }
    off = create_app(production)
    assert (
        off.test_client().post("/preview/evidence", data={"service": "x", "request": "{}"}).status_code == 404
    )
    on = create_app({**production, "CDS_PREVIEW_EVIDENCE": True})
    with on.test_request_context("/preview/evidence", method="POST"):
        env = _environment("")
        assert not env.fetch.server_allowed("https://ehr.example.org/fhir")  # never contacts a FHIR server
    with create_app(dev_config(tmp_path)).test_request_context("/preview/evidence", method="POST"):
        assert _environment("").fetch.server_allowed("http://127.0.0.1:8090/fhir")  # the hook's own policy


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"service": "nope", "request": "{}"}, 404),
        ({"service": "iec-hs-screening", "request": "not json"}, 400),
        ({"service": "iec-hs-screening", "request": '{"hook": "patient-view"}'}, 400),
        ({"request": "{}"}, 400),
    ],
)
def test_bad_evidence_requests_are_client_errors(app: Flask, form: dict[str, str], status: int) -> None:
    assert app.test_client().post("/preview/evidence", data=form).status_code == status


def test_a_bad_instant_is_a_client_error(app: Flask) -> None:
    scenario = find_scenario(CLASSIC)
    assert scenario is not None
    service_id, request = hook_request(app, scenario)
    form = {"service": service_id, "request": json.dumps(request), "instant": "yesterday"}
    assert app.test_client().post("/preview/evidence", data=form).status_code == 400


# --------------------------------------------------------------------------------------------- chromium


def console_errors(page: Page) -> list[str]:
    errors: list[str] = []

    def record(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", record)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def send(page: Page, base_url: str, scenario: str = CLASSIC) -> None:
    page.goto(f"{base_url}/")
    page.select_option("#scenario", scenario)
    page.select_option("#hook", "patient-view")
    page.click("#send")
    expect(page.locator("#status")).to_contain_text("card(s) from", timeout=TIMEOUT_MS)


def test_the_preview_page_opens_the_evidence_view_from_the_card(page: Page, app: Flask) -> None:
    """`make run` alone: no EHR launcher, so the card's dashboard link opens the evidence view."""
    with serve(app, free_port()) as base_url:
        errors = console_errors(page)
        send(page, base_url)
        expect(page.locator("#dashboard-mode")).to_contain_text("the evidence view")
        card = page.locator(".cds-card").first
        expect(card.locator(".cds-card-links .hint").first).to_contain_text("opens the evidence view")
        for button in ("button.dashboard-link", "button.evidence-link"):
            with page.context.expect_page(timeout=TIMEOUT_MS) as opened:
                card.locator(button).click()
            evidence_page = opened.value
            evidence_page.wait_for_load_state()
            assert evidence_page.url == f"{base_url}/preview/evidence"
            expect(evidence_page.locator("#iec-hs-status")).to_have_text("met")
            expect(evidence_page.locator("#iec-hs-grade")).to_have_text("Grade 2 (at least)")
            expect(evidence_page.locator("#evaluation-instant")).to_contain_text("2026-03-15 20:00 UTC")
            expect(evidence_page.locator("#unverified-list")).to_contain_text("RxNorm 72435 for Anakinra")
            expect(evidence_page.locator("#instruments tbody tr")).to_have_count(len(REGISTRY))
            expect(evidence_page.locator("#treatment")).to_contain_text("100–200 mg IV or SQ every 6–12 h")
            expect(evidence_page.locator("form.instant")).to_have_count(0)  # no SMART session, no controls
            save_screenshot(evidence_page, f"evidence-view-{button.split('.')[1]}")
            evidence_page.close()
        assert errors == []


def test_the_card_link_reaches_the_smart_dashboard_through_the_stack(
    page: Page, fhir_stack: FhirStack, tmp_path: Path
) -> None:
    """With make stack's EHR launcher configured and running, the same link is a real SMART launch of the
    card's patient at the card's instant, ending on the SMART dashboard with the same evidence sections."""
    config = dev_config(
        tmp_path,
        CDS_PREVIEW_EHR_LAUNCH_URL=f"{fhir_stack.auth_base}/ehr/launch",
        CDS_PUBLIC_BASE_URL=f"http://127.0.0.1:{fhir_stack.app_port}",
    )
    with serve(create_app(config), fhir_stack.app_port) as base_url:
        send(page, base_url)
        expect(page.locator("#dashboard-mode")).to_contain_text(f"{fhir_stack.auth_base}/ehr/launch")
        card = page.locator(".cds-card").first
        expect(card.locator(".cds-card-links .hint").first).to_contain_text("SMART launch")
        with page.context.expect_page(timeout=TIMEOUT_MS) as opened:
            card.locator("button.dashboard-link").click()
        dashboard = opened.value
        dashboard.wait_for_url(f"{base_url}/smart/dashboard", timeout=TIMEOUT_MS)
        expect(dashboard.locator("#iec-hs-status")).to_have_text("met")
        expect(dashboard.locator("#iec-hs-grade")).to_have_text("Grade 2 (at least)")
        expect(dashboard.locator("#evaluation-instant")).to_contain_text("2026-03-15 20:00 UTC")
        expect(dashboard.locator("#evaluation-instant")).to_contain_text("the card's evaluation instant")
        expect(dashboard.locator("#unverified-list")).to_contain_text("RxNorm 72435 for Anakinra")
        expect(dashboard.locator("#treatment")).to_contain_text("100–200 mg IV or SQ every 6–12 h")
        expect(dashboard.locator("#instruments tbody tr")).to_have_count(len(REGISTRY))
        save_screenshot(dashboard, "preview-card-link-smart-dashboard")
        dashboard.close()


def test_a_launcher_that_is_not_running_falls_back_to_the_evidence_view(page: Page, tmp_path: Path) -> None:
    """`make run` sets make stack's launcher; without the stack the page must not send anyone to it."""
    dead = f"http://127.0.0.1:{free_port()}/ehr/launch"
    with serve(create_app(dev_config(tmp_path, CDS_PREVIEW_EHR_LAUNCH_URL=dead)), free_port()) as base_url:
        send(page, base_url)
        expect(page.locator("#dashboard-mode")).to_contain_text("start make stack and reload")
        with page.context.expect_page(timeout=TIMEOUT_MS) as opened:
            page.locator(".cds-card button.dashboard-link").first.click()
        opened.value.wait_for_load_state()
        assert opened.value.url.endswith("/preview/evidence")
