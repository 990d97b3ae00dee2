"""SMART App Launch of the dashboard over real HTTP: the app served by werkzeug on the pre-registered app
port, the test bed's real FHIR server and real SMART authorization server (oidc-provider). A cookie-keeping
``requests.Session`` plays the browser and follows every redirect by hand, so each hop can be checked.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import pytest
import requests
from flask import Flask

from cds_service.smart.devserver import serve
from cds_service.smart.oauth import missing_access
from cds_service.smart.sessions import COOKIE_NAME
from cds_service.smart.settings import SmartSettings
from cds_service.smart.web import smart_state
from cds_service.web.app import create_app
from tests.plugins.fhir_stack import FhirStack

PATIENT = "classic-iec-hs"
CLASSIC = Path(__file__).resolve().parents[1] / "fixtures" / "scenarios" / "classic-iec-hs.json"
CARD_AT = "2026-03-15T20:00:00+00:00"
REQUIRED_SCOPES = {
    "launch",
    "openid",
    "fhirUser",
    "patient/Patient.rs",
    "patient/Observation.rs",
    "patient/Condition.rs",
    "patient/Procedure.rs",
    "patient/MedicationAdministration.rs",
}


@dataclass
class Server:
    app: Flask
    base: str


@pytest.fixture(scope="module")
def server(fhir_stack: FhirStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The whole service (create_app, development mode) on the port whose /smart/callback is registered."""
    database = tmp_path_factory.mktemp("smart-launch") / "feedback.sqlite3"
    app = create_app(
        {
            "CDS_DEV_MODE": True,
            "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{fhir_stack.app_port}",
            "DATABASE_URL": f"sqlite:///{database}",
        }
    )
    with serve(app, fhir_stack.app_port) as base:
        yield Server(app, base)


@dataclass
class Trip:
    """Every URL requested while following redirects, and the last response."""

    urls: list[str] = field(default_factory=list)
    response: requests.Response | None = None

    @property
    def last(self) -> requests.Response:
        assert self.response is not None
        return self.response


def follow(browser: requests.Session, url: str, *, stop_at: str | None = None, max_hops: int = 15) -> Trip:
    """GETs `url` and follows redirects by hand; stops before requesting a URL starting with `stop_at`."""
    trip = Trip()
    for _ in range(max_hops):
        if stop_at is not None and url.startswith(stop_at):
            trip.urls.append(url)
            return trip
        trip.urls.append(url)
        trip.response = browser.get(url, allow_redirects=False, timeout=30)
        location = trip.response.headers.get("Location")
        if trip.response.status_code not in (301, 302, 303, 307) or not location:
            return trip
        url = urljoin(url, location)
    raise AssertionError(f"too many redirects: {trip.urls}")


def ehr_launch(stack: FhirStack, server: Server, **kwargs: object) -> str:
    return stack.ehr_launch_url(PATIENT, f"{server.base}/smart/launch", **kwargs)  # type: ignore[arg-type]


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def error_code(page: str) -> str | None:
    match = re.search(r'data-error-code="([^"]+)"', page)
    return match.group(1) if match else None


def callback_url(server: Server) -> str:
    return f"{server.base}/smart/callback"


# ------------------------------------------------------------------ the authorization request


def test_launch_redirect_carries_pkce_s256_state_aud_and_launch(
    fhir_stack: FhirStack, server: Server
) -> None:
    browser = requests.Session()
    trip = follow(browser, ehr_launch(fhir_stack, server), stop_at=fhir_stack.authorize_url)
    launch_url, authorize = trip.urls[-2], trip.urls[-1]
    launch_params = query(launch_url)
    assert launch_params["iss"] == fhir_stack.fhir_base
    params = query(authorize)
    assert params["response_type"] == "code"
    assert params["client_id"] == "smart-app"
    assert params["redirect_uri"] == callback_url(server)
    assert params["code_challenge_method"] == "S256"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", params["code_challenge"])  # base64url(SHA-256), no padding
    assert params["aud"] == fhir_stack.fhir_base
    assert params["launch"] == launch_params["launch"]
    assert REQUIRED_SCOPES <= set(params["scope"].split())
    assert len(params["state"]) >= 22  # >= 128 bits of base64url
    cookie = trip.last.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/smart" in cookie
    again = follow(requests.Session(), ehr_launch(fhir_stack, server), stop_at=fhir_stack.authorize_url)
    other = query(again.urls[-1])
    assert other["state"] != params["state"] and other["code_challenge"] != params["code_challenge"]


def test_full_ehr_launch_reaches_the_dashboard_with_no_phi_or_token_exposed(
    fhir_stack: FhirStack, server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    browser = requests.Session()
    app_context = json.dumps({"patient": PATIENT, "at": CARD_AT, "view": "iec-hs"})
    trip = follow(browser, ehr_launch(fhir_stack, server, app_context=app_context))
    page = trip.last
    assert page.status_code == 200, page.text[:2000]
    assert trip.urls[-1] == f"{server.base}/smart/dashboard"
    app_urls = [u for u in trip.urls if u.startswith(server.base)]
    after_callback = app_urls[app_urls.index(next(u for u in app_urls if "/smart/callback" in u)) + 1 :]
    assert after_callback and all(PATIENT not in u for u in after_callback)
    assert 'id="iec-hs-status"' in page.text and 'data-status="met"' in page.text
    assert "2026-03-15 20:00 UTC" in page.text  # the card's evaluation instant from appContext
    assert "signed in as Practitioner/smart-test-user" in page.text  # fhirUser of the verified id_token
    session_id = browser.cookies.get(COOKIE_NAME, path="/smart")
    assert session_id is not None and re.fullmatch(r"[A-Za-z0-9_-]{43}", session_id)
    session = smart_state(server.app).store.get(session_id)
    assert session is not None and session.context is not None
    token = session.context.access_token
    assert session.context.patient == PATIENT and session.context.scopes >= {"patient/Observation.rs"}
    assert token not in page.text and all(token not in u for u in trip.urls)
    assert token not in caplog.text and token not in repr(session)
    assert page.headers["Cache-Control"] == "no-store"
    assert "script-src" not in page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Referrer-Policy"] == "no-referrer"


def test_app_context_view_and_need_patient_banner_false_are_honoured(
    fhir_stack: FhirStack, server: Server
) -> None:
    app_context = json.dumps({"patient": PATIENT, "at": CARD_AT, "view": "trends"})
    trip = follow(
        requests.Session(), ehr_launch(fhir_stack, server, app_context=app_context, need_patient_banner=False)
    )
    page = trip.last.text
    assert trip.last.status_code == 200
    assert 'id="patient-banner"' not in page and 'id="print-identification"' in page
    assert page.index('id="trends"') < page.index('id="summary"')


def test_app_context_for_another_patient_is_ignored(fhir_stack: FhirStack, server: Server) -> None:
    app_context = json.dumps({"patient": "someone-else", "at": CARD_AT, "view": "trends"})
    page = follow(requests.Session(), ehr_launch(fhir_stack, server, app_context=app_context)).last.text
    assert "named a different patient" in page
    assert "2026-03-15 20:00 UTC" not in page.split('id="evaluation-instant"')[1][:200]
    assert page.index('id="summary"') < page.index('id="trends"')


# ------------------------------------------------------------------ error pages


def test_wrong_state_gives_an_error_page(fhir_stack: FhirStack, server: Server) -> None:
    browser = requests.Session()
    trip = follow(browser, ehr_launch(fhir_stack, server), stop_at=callback_url(server))
    params = query(trip.urls[-1])
    assert "code" in params
    parts = urlsplit(trip.urls[-1])
    forged = urlunsplit(parts._replace(query=urlencode({**params, "state": "forged-" + params["state"]})))
    response = browser.get(forged, allow_redirects=False, timeout=30)
    assert response.status_code == 400
    assert error_code(response.text) == "state-mismatch"
    assert "state mismatch" in response.text and "Open the dashboard again" in response.text
    assert "Traceback" not in response.text and response.headers["Content-Type"].startswith("text/html")
    # The genuine state is now spent as well: a replayed callback cannot complete the sign-in.
    replay = browser.get(trip.urls[-1], allow_redirects=False, timeout=30)
    assert replay.status_code in (303, 400)


def test_callback_from_another_browser_is_refused(fhir_stack: FhirStack, server: Server) -> None:
    trip = follow(requests.Session(), ehr_launch(fhir_stack, server), stop_at=callback_url(server))
    stranger = requests.get(trip.urls[-1], allow_redirects=False, timeout=30)
    assert stranger.status_code == 400 and error_code(stranger.text) == "state-mismatch"


def test_denied_authorization_gives_an_error_page(fhir_stack: FhirStack, server: Server) -> None:
    trip = follow(requests.Session(), ehr_launch(fhir_stack, server, deny=True))
    assert "error=access_denied" in trip.urls[-1]
    response = trip.last
    assert response.status_code == 403
    assert error_code(response.text) == "access-denied"
    assert "Access was not granted" in response.text and "Traceback" not in response.text


def test_expired_token_gives_a_relaunch_page(fhir_stack: FhirStack, server: Server) -> None:
    with fhir_stack.start_extra({"SMART_TOKEN_TTL": "1"}, seeds=[CLASSIC]) as short:
        browser = requests.Session()
        launch = short.ehr_launch_url(PATIENT, f"{server.base}/smart/launch")
        trip = follow(browser, launch, stop_at=f"{server.base}/smart/dashboard")
        assert trip.last.status_code == 303 and trip.urls[-1].endswith("/smart/dashboard")
        time.sleep(2.2)
        response = browser.get(trip.urls[-1], allow_redirects=False, timeout=30)
        assert response.status_code == 401
        assert error_code(response.text) == "token-expired"
        assert "expired" in response.text and "Open the dashboard again" in response.text


def test_revoked_token_is_detected_at_the_fhir_server(fhir_stack: FhirStack, server: Server) -> None:
    """No local expiry here: the FHIR server's 401 for a revoked token must give the relaunch page too."""
    browser = requests.Session()
    trip = follow(browser, ehr_launch(fhir_stack, server))
    assert trip.last.status_code == 200
    session = smart_state(server.app).store.get(browser.cookies[COOKIE_NAME])
    assert session is not None and session.context is not None and not session.context.expired()
    revoked = requests.post(
        f"{fhir_stack.auth_base}/token/revocation",
        data={"token": session.context.access_token, "client_id": fhir_stack.client_id},
        timeout=30,
    )
    assert revoked.status_code == 200
    response = browser.get(f"{server.base}/smart/dashboard", allow_redirects=False, timeout=30)
    assert response.status_code == 401 and error_code(response.text) == "token-expired"


def test_iss_not_on_the_allowlist_is_refused(server: Server) -> None:
    for iss in ("https://ehr.example.org/fhir", "http://10.1.2.3/fhir", "file:///etc/passwd"):
        response = requests.get(
            f"{server.base}/smart/launch",
            params={"iss": iss, "launch": "x"},
            allow_redirects=False,
            timeout=30,
        )
        assert response.status_code == 400, iss
        assert error_code(response.text) == "iss-not-allowed"
        assert "Set-Cookie" not in response.headers  # nothing was started


def test_launch_without_parameters_and_dashboard_without_session(server: Server) -> None:
    response = requests.get(f"{server.base}/smart/launch", params={"iss": "x"}, timeout=30)
    assert response.status_code == 400 and error_code(response.text) == "invalid-launch"
    response = requests.get(f"{server.base}/smart/dashboard", allow_redirects=False, timeout=30)
    assert response.status_code == 401 and error_code(response.text) == "no-session"


def test_standalone_launch_with_patient_picker(fhir_stack: FhirStack, server: Server) -> None:
    browser = requests.Session()
    start = f"{server.base}/smart/standalone?{urlencode({'iss': fhir_stack.fhir_base})}"
    authorize = follow(browser, start, stop_at=fhir_stack.authorize_url).urls[-1]
    params = query(authorize)
    assert "launch" not in params and "launch/patient" in params["scope"].split()
    trip = follow(browser, authorize)
    assert trip.urls[-1] == f"{server.base}/smart/picker" and trip.last.status_code == 200
    picker = trip.last.text
    assert f'data-patient-id="{PATIENT}"' in picker
    csrf = re.search(r'name="csrf" value="([^"]+)"', picker)
    assert csrf is not None
    refused = browser.post(f"{server.base}/smart/picker", data={"patient": PATIENT, "csrf": "x"}, timeout=30)
    assert refused.status_code == 400 and error_code(refused.text) == "csrf"
    chosen = browser.post(
        f"{server.base}/smart/picker",
        data={"patient": PATIENT, "csrf": csrf.group(1), "at": "2026-03-15T20:00"},
        allow_redirects=False,
        timeout=30,
    )
    assert chosen.status_code == 303 and chosen.headers["Location"] == "/smart/dashboard"
    page = browser.get(f"{server.base}/smart/dashboard", timeout=30)
    assert page.status_code == 200 and 'data-status="met"' in page.text
    assert "an instant chosen on this page" in page.text


# ------------------------------------------------------------------ settings and scope rules


def test_allowlist_rules_outside_and_inside_development() -> None:
    production = SmartSettings(dev_mode=False, public_base_url="https://cds.example.org")
    allowed = SmartSettings(
        dev_mode=False, public_base_url=None, iss_allowlist=("https://ehr.example.org/fhir",)
    )
    development = SmartSettings(dev_mode=True, public_base_url=None)
    assert not production.iss_allowed("http://127.0.0.1:8080/fhir")
    assert allowed.iss_allowed("https://ehr.example.org/fhir/") and not allowed.iss_allowed(
        "https://evil.org/fhir"
    )
    assert development.iss_allowed("http://127.0.0.1:8080/fhir")
    assert not development.iss_allowed("https://ehr.example.org/fhir")  # dev mode adds loopback only
    assert not development.iss_allowed("http://192.0.2.1/fhir")
    assert not development.iss_allowed("http://127.0.0.1:8080/fhir?x=1")


def test_v1_read_and_v2_rs_grants_are_both_accepted() -> None:
    types = ("Patient", "Observation", "Condition", "Procedure", "MedicationAdministration")
    assert missing_access([f"patient/{t}.read" for t in types]) == []
    assert missing_access([f"patient/{t}.rs" for t in types]) == []
    assert missing_access(["patient/*.read"]) == [] and missing_access(["user/*.rs"]) == []
    assert missing_access(["patient/Observation.rs?category=laboratory", "patient/*.r"]) == [
        "Condition.rs",
        "Procedure.rs",
        "MedicationAdministration.rs",
    ]
    assert missing_access(["launch", "openid"]) == [
        "Patient.r",
        "Observation.rs",
        "Condition.rs",
        "Procedure.rs",
        "MedicationAdministration.rs",
    ]


def test_blueprint_registers_without_touching_other_routes(server: Server) -> None:
    rules = {r.rule for r in server.app.url_map.iter_rules() if r.rule.startswith("/smart")}
    expected = {"/smart/launch", "/smart/standalone", "/smart/callback", "/smart/picker", "/smart/dashboard"}
    assert expected | {"/smart/logout"} <= rules
