"""The card preview page in headless Chromium against a real in-process HTTP server: fixture scenario ->
real hook endpoint -> cards as in an EHR sidebar (summary, indicator, Markdown detail, suggestions with
their FHIR resources, links) -> dismiss with an override reason -> real feedback stored. Also: the
Markdown renderer never turns input into HTML, pasted requests and Bundles, and a production server's 401.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import ConsoleMessage, Page, expect
from werkzeug.serving import make_server

from cds_service import create_app
from cds_service.datafiles import PROJECT_ROOT
from cds_service.preview.scenarios import find_scenario
from cds_service.web.state import get_state
from tests.cds_helpers import dev_config

TIMEOUT_MS = 20_000


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """`app` on a free loopback port (threaded werkzeug server) for the duration of the block."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def dev_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    return create_app(dev_config(tmp_path_factory.mktemp("preview-page")))


@pytest.fixture(scope="module")
def base_url(dev_app: Flask) -> Iterator[str]:
    with serving(dev_app) as url:
        yield url


@pytest.fixture
def console_errors(page: Page) -> list[str]:
    errors: list[str] = []

    def record(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", record)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def send_scenario(
    page: Page, base_url: str, scenario: str, hook: str = "patient-view", drug: str = ""
) -> None:
    page.goto(f"{base_url}/")
    page.select_option("#scenario", scenario)
    page.select_option("#hook", hook)
    if drug:
        page.select_option("#drug", drug)
    page.click("#send")
    expect(page.locator("#status")).to_contain_text("card(s) from", timeout=TIMEOUT_MS)


def test_scenario_card_then_dismiss_with_reason_stores_feedback(
    page: Page, base_url: str, dev_app: Flask, console_errors: list[str], screenshot: Callable[[str], Path]
) -> None:
    send_scenario(page, base_url, "classic-iec-hs")
    card = page.locator(".cds-card").first
    expect(card.locator(".cds-card-summary")).to_have_text(
        "IEC-HS criteria met, grade 2 (at least), day +13 after axi-cel"
    )
    expect(card.locator(".cds-card-indicator")).to_have_text("critical")
    expect(card).to_have_class("cds-card indicator-critical")
    expect(page.locator("#status")).to_contain_text("evaluated at 2026-03-15T20:00:00Z")
    detail = card.locator(".markdown")
    expect(detail.locator("strong").first).to_have_text("What is happening")  # the bedside card (issue 17)
    expect(detail.locator("table")).to_have_count(0)  # no tables: the full evidence is behind the link
    expect(detail).to_contain_text("IEC-HS criteria met, grade 2 (at least)")
    expect(detail).to_contain_text("open the IEC-HS dashboard (link below)")
    assert "x 10⁹/L" in detail.inner_text() and "10*9/L" not in detail.inner_text()
    assert "&gt;" not in detail.inner_text()
    expect(card.locator(".cds-card-links a").first).to_have_attribute("rel", "noopener noreferrer")
    expect(card.locator("button.dashboard-link")).to_have_text("Open the IEC-HS dashboard")
    screenshot("card")

    card.locator(".dismiss-toggle").click()
    # Not a repeat-alert reason ("already aware" would make later classic cards one-line acknowledgements).
    card.get_by_label("Not clinically relevant for this patient now").check()
    card.get_by_label("Comment (optional)").fill("seen in clinic")
    card.locator(".dismiss-send").click()
    expect(card.locator(".feedback-result")).to_contain_text("server answered 200", timeout=TIMEOUT_MS)
    expect(card.locator(".feedback-answer")).to_contain_text('"stored": 1')
    expect(card).to_have_class("cds-card indicator-critical dismissed")
    stored = get_state(dev_app).feedback.all("iec-hs-screening")[-1]
    assert (stored.outcome, stored.override_code, stored.override_comment) == (
        "overridden",
        "not-relevant",
        "seen in clinic",
    )
    assert console_errors == []


def test_suggestions_show_the_resources_they_would_create_and_delete(page: Page, base_url: str) -> None:
    send_scenario(page, base_url, "classic-iec-hs", hook="order-select", drug="tocilizumab")
    card = page.locator(".cds-card").first
    expect(card.locator(".cds-card-indicator")).to_have_text("warning")
    expect(card.locator(".cds-card-summary")).to_contain_text("Tocilizumab draft")
    suggestion = card.locator("button.suggestion").first
    expect(suggestion).to_have_attribute("aria-expanded", "false")
    suggestion.click()
    expect(suggestion).to_have_attribute("aria-expanded", "true")
    actions = card.locator(".suggestion-actions").first
    expect(actions).to_contain_text("delete: Remove the draft Tocilizumab order")
    expect(actions).to_contain_text("Resource: MedicationRequest/preview-draft-1")
    actions.locator("button.accept").click()
    expect(card.locator(".feedback-result")).to_contain_text("Feedback (accepted) sent", timeout=TIMEOUT_MS)

    # A draft the patient-view card would create: an orderable, RxNorm-coded MedicationRequest.
    send_scenario(page, base_url, "classic-iec-hs")
    card = page.locator(".cds-card").first
    card.locator("button.suggestion").first.click()
    actions = card.locator(".suggestion-actions").first
    expect(actions).to_contain_text("create: Add a draft Dexamethasone order")
    resource = json.loads(actions.locator("pre.fhir-resource").first.inner_text())
    assert resource["resourceType"] == "MedicationRequest" and resource["status"] == "draft"
    assert (
        resource["medicationCodeableConcept"]["coding"][0]["system"]
        == "http://www.nlm.nih.gov/research/umls/rxnorm"
    )


def test_markdown_renderer_never_produces_html_from_input(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/")
    hostile = (
        "### Title <img src=x onerror=alert(1)>\n\n"
        "Text <script>window.pwned = 1</script> &lt;b&gt; **bold <i>x</i>**\n\n"
        "- [click](javascript:alert(1)) and [ok](https://example.org/a)\n"
        "- `<code>` \\*not em\\*\n\n"
        "| a | b<br> |\n|---|---|\n| <svg onload=alert(1)> | \\| pipe |\n"
    )
    html = page.evaluate(
        """(md) => { const box = document.createElement('div');
                     box.appendChild(window.CdsMarkdown.render(md, 1)); return box.innerHTML; }""",
        hostile,
    )
    for tag in ("<img", "<script", "<svg", "<i>", "<br>", "<code><code>", 'href="javascript'):
        assert tag not in html, tag
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert '<a href="https://example.org/a" target="_blank" rel="noopener noreferrer">ok</a>' in html
    assert "<strong>bold &lt;i&gt;x&lt;/i&gt;</strong>" in html
    assert "&lt;b&gt;" in html and "*not em*" in html and "| pipe" in html
    assert page.evaluate("window.pwned") is None


def test_a_pasted_bundle_and_a_pasted_request(page: Page, base_url: str) -> None:
    scenario = find_scenario("grade-3-hypoxia")
    assert scenario is not None
    page.goto(f"{base_url}/")
    page.check("input[name=source][value=paste]")
    expect(page.locator("#scenario-fields")).to_be_hidden()
    page.fill("#pasted", json.dumps(scenario.bundle()))
    page.click("#send")
    expect(page.locator("#status")).to_contain_text("evaluated at 2026-09-05T20:00:00Z", timeout=TIMEOUT_MS)
    summary = page.locator(".cds-card-summary").first.inner_text()
    assert (page.locator("#request-json").text_content() or "").startswith('{\n  "hook": "patient-view"')
    page.fill("#pasted", json.dumps(page.evaluate("window.cdsPreview.lastRequest()")))
    page.fill("#instant", "2026-09-05T20:00:00Z")
    page.click("#send")
    expect(page.locator("#status")).to_contain_text("card(s) from iec-hs-screening", timeout=TIMEOUT_MS)
    expect(page.locator(".cds-card-summary").first).to_have_text(summary)
    page.fill("#pasted", '{"hook": "encounter-start", "context": {}}')
    page.click("#send")
    expect(page.locator("#status")).to_contain_text("No service of this server handles the hook")


def test_errors_from_the_service_are_shown(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/")
    page.check("input[name=source][value=paste]")
    page.fill(
        "#pasted", json.dumps({"hook": "patient-view", "hookInstance": "x", "context": {"patientId": "p"}})
    )
    page.click("#send")
    expect(page.locator("#status")).to_contain_text("The service answered 400", timeout=TIMEOUT_MS)
    expect(page.locator("#status")).to_contain_text("context.userId")


def test_rebased_scenario_is_evaluated_now(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/")
    page.select_option("#scenario", "classic-iec-hs")
    page.check("#rebase")
    expect(page.locator("#instant")).to_be_disabled()
    page.click("#send")
    expect(page.locator("#status")).to_contain_text("server's current time", timeout=TIMEOUT_MS)
    expect(page.locator("#status")).to_contain_text("dates shifted by +")
    expect(page.locator(".cds-card-summary").first).to_contain_text("IEC-HS criteria met")


def test_page_structure_is_accessible(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/")
    assert page.get_attribute("html", "lang") == "en"
    for control in page.locator("select, textarea, input[type=text]").all():
        control_id = control.get_attribute("id")
        assert page.locator(f"label[for='{control_id}']").count() == 1, control_id
    expect(page.locator("#status")).to_have_attribute("aria-live", "polite")
    expect(page.locator("#drug-fields")).to_be_hidden()
    page.select_option("#hook", "order-sign")
    expect(page.locator("#drug-fields")).to_be_visible()
    csp = page.request.get(f"{base_url}/").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def production_app(tmp_path: Path, **extra: object) -> Flask:
    return create_app(
        dev_config(
            tmp_path,
            CDS_DEV_MODE=False,
            CDS_PUBLIC_BASE_URL="https://cds.example.org",
            CDS_TRUSTED_CLIENTS_FILE=str(PROJECT_ROOT / "config" / "trusted-clients.example.json"),
            **extra,
        )
    )


def test_a_production_server_answers_401_and_the_page_says_why(tmp_path: Path, page: Page) -> None:
    with serving(production_app(tmp_path, CDS_PREVIEW_BUILDER=True)) as url:
        page.goto(f"{url}/")
        expect(page.locator(".banner.warning")).to_contain_text("not in development mode")
        page.click("#send")
        status = page.locator("#status")
        expect(status).to_contain_text("401", timeout=TIMEOUT_MS)
        expect(status).to_contain_text("needs a server in development mode")


def test_without_the_builder_a_production_page_says_it_is_off(tmp_path: Path, page: Page) -> None:
    with serving(production_app(tmp_path)) as url:
        page.goto(f"{url}/")
        page.click("#send")
        status = page.locator("#status")
        expect(status).to_contain_text("HTTP 404", timeout=TIMEOUT_MS)
        expect(status).to_contain_text("CDS_PREVIEW_BUILDER")
