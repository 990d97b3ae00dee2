"""SMART App Launch (EHR launch, authorization code + PKCE) against the real test auth server.

The whole flow runs through one cookie-keeping ``requests.Session`` that follows redirects by hand
until it reaches the registered redirect URI, exactly like a browser would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import jwt
import pytest
import requests

from tests.plugins.fhir_stack import FhirStack

PATIENT = "smart-pt-1"
DENIED_PATIENT = "smart-pt-denied"
SCOPE = "launch openid fhirUser patient/*.read offline_access"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge


@dataclass
class Callback:
    """Where the authorization ended: the redirect URI's query, or the last non-redirect page."""

    url: str
    params: dict[str, str]
    response: requests.Response | None = None


def follow_to_callback(
    sess: requests.Session, url: str, redirect_uri: str, *, method: str = "GET", data: Any = None
) -> Callback:
    """Follows redirects by hand until the redirect URI is reached (it is not requested)."""
    for _ in range(15):
        resp = sess.request(method, url, data=data, allow_redirects=False, timeout=10)
        method, data = "GET", None
        location = resp.headers.get("Location")
        if resp.status_code not in (302, 303, 307) or not location:
            return Callback(url=url, params={}, response=resp)
        url = urljoin(url, location)
        if url.startswith(redirect_uri):
            query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
            return Callback(url=url, params=query)
    raise AssertionError(f"too many redirects, last: {url}")


@dataclass
class Launch:
    iss: str
    launch: str


def ehr_launch(stack: FhirStack, sess: requests.Session, patient: str, **kwargs: Any) -> Launch:
    launch_uri = f"http://127.0.0.1:{stack.app_port}/smart/launch"
    resp = sess.get(stack.ehr_launch_url(patient, launch_uri, **kwargs), allow_redirects=False, timeout=10)
    assert resp.status_code == 302, resp.text
    location = resp.headers["Location"]
    assert location.startswith(launch_uri + "?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    return Launch(iss=query["iss"], launch=query["launch"])


def authorize_params(
    stack: FhirStack, launched: Launch, challenge: str | None, state: str, /, **overrides: str
) -> dict[str, str]:
    """Authorization request parameters; ``overrides`` replace any of them."""
    params = {
        "response_type": "code",
        "client_id": stack.client_id,
        "redirect_uri": stack.redirect_uris[0],
        "launch": launched.launch,
        "scope": SCOPE,
        "state": state,
        "aud": launched.iss,
    }
    if challenge is not None:
        params["code_challenge"] = challenge
        params["code_challenge_method"] = "S256"
    params.update(overrides)
    return {k: v for k, v in params.items() if v != ""}


@dataclass
class Flow:
    code: str
    verifier: str
    state: str
    callback: Callback


def run_authorization(
    stack: FhirStack, sess: requests.Session, patient: str = PATIENT, **launch_kwargs: Any
) -> Flow:
    launch = ehr_launch(stack, sess, patient, **launch_kwargs)
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(24)
    url = f"{stack.authorize_url}?{urlencode(authorize_params(stack, launch, challenge, state))}"
    callback = follow_to_callback(sess, url, stack.redirect_uris[0])
    assert callback.params.get("state") == state, callback
    assert "code" in callback.params, callback.params
    return Flow(code=callback.params["code"], verifier=verifier, state=state, callback=callback)


def exchange(stack: FhirStack, sess: requests.Session, code: str, verifier: str | None) -> requests.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": stack.redirect_uris[0],
        "client_id": stack.client_id,
    }
    if verifier is not None:
        data["code_verifier"] = verifier
    return sess.post(stack.token_url, data=data, timeout=10)


@pytest.fixture
def browser_session() -> Iterator[requests.Session]:
    with requests.Session() as sess:
        yield sess


@pytest.fixture(scope="module")
def short_lived(fhir_stack: FhirStack) -> Iterator[FhirStack]:
    """A second stack with 1-second access tokens and a patient whose launches are denied."""
    env = {"SMART_TOKEN_TTL": "1", "SMART_DENY_PATIENTS": DENIED_PATIENT}
    with fhir_stack.start_extra(env, seeds=[]) as extra:
        yield extra


def test_ehr_launch_redirects_with_iss_and_launch(
    fhir_stack: FhirStack, browser_session: requests.Session
) -> None:
    first = ehr_launch(fhir_stack, browser_session, PATIENT)
    second = ehr_launch(fhir_stack, browser_session, PATIENT)
    assert first.iss == fhir_stack.fhir_base
    assert len(first.launch) >= 16 and first.launch != second.launch

    bad = browser_session.get(
        f"{fhir_stack.auth_base}/ehr/launch", params={"launch_uri": "http://x/"}, timeout=10
    )
    assert bad.status_code == 400


def test_smart_configuration(fhir_stack: FhirStack) -> None:
    with requests.Session() as anon:
        resp = anon.get(fhir_stack.smart_configuration_url, headers={"Accept": "application/json"})
        assert resp.status_code == 200
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        cfg = resp.json()
        on_auth_origin = anon.get(f"{fhir_stack.auth_base}/.well-known/smart-configuration").json()
        assert on_auth_origin == cfg
    assert cfg["authorization_endpoint"] == fhir_stack.authorize_url
    assert cfg["token_endpoint"] == fhir_stack.token_url
    assert cfg["issuer"] == fhir_stack.auth_base
    assert cfg["jwks_uri"].startswith(fhir_stack.auth_base)
    assert cfg["code_challenge_methods_supported"] == ["S256"]
    assert "plain" not in cfg["code_challenge_methods_supported"]
    for capability in (
        "launch-ehr",
        "client-public",
        "context-ehr-patient",
        "context-banner",
        "sso-openid-connect",
        "permission-v1",
        "permission-v2",
        "permission-offline",
    ):
        assert capability in cfg["capabilities"], capability
    for scope in ("launch", "openid", "fhirUser", "patient/*.read", "patient/Observation.rs"):
        assert scope in cfg["scopes_supported"], scope
    assert "authorization_code" in cfg["grant_types_supported"]


def test_full_flow_token_response_and_fhir_access(
    fhir_stack: FhirStack, browser_session: requests.Session
) -> None:
    app_context = json.dumps({"hook": "patient-view", "card": "iec-hs"})
    flow = run_authorization(fhir_stack, browser_session, app_context=app_context)
    assert flow.callback.params["iss"] == fhir_stack.auth_base  # RFC 9207

    resp = exchange(fhir_stack, browser_session, flow.code, flow.verifier)
    assert resp.status_code == 200, resp.text
    assert "no-store" in resp.headers["Cache-Control"]
    token = resp.json()
    assert token["token_type"] == "Bearer"
    assert token["patient"] == PATIENT
    assert token["need_patient_banner"] is True
    assert token["appContext"] == app_context
    assert 0 < token["expires_in"] <= 3600
    granted = set(token["scope"].split())
    assert {"launch", "openid", "fhirUser", "patient/*.read", "offline_access"} <= granted
    assert token["refresh_token"]

    jwks = jwt.PyJWKSet.from_dict(browser_session.get(f"{fhir_stack.auth_base}/jwks").json())
    header = jwt.get_unverified_header(token["id_token"])
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims = jwt.decode(
        token["id_token"],
        key=key.key,
        algorithms=["RS256"],
        audience=fhir_stack.client_id,
        issuer=fhir_stack.auth_base,
    )
    assert claims["fhirUser"].startswith(f"{fhir_stack.fhir_base}/Practitioner/")

    with requests.Session() as app:
        ok = app.get(
            f"{fhir_stack.fhir_base}/Practitioner/{claims['fhirUser'].rsplit('/', 1)[1]}",
            headers={"Authorization": f"Bearer {token['access_token']}"},
        )
        assert ok.status_code == 200, ok.text
        bogus = app.get(
            f"{fhir_stack.fhir_base}/Patient/{PATIENT}",
            headers={"Authorization": f"Bearer {token['access_token']}x"},
        )
        assert bogus.status_code == 401

    refreshed = browser_session.post(
        fhir_stack.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_id": fhir_stack.client_id,
        },
    )
    assert refreshed.status_code == 200, refreshed.text
    again = refreshed.json()
    assert again["patient"] == PATIENT and again["access_token"] != token["access_token"]
    assert again["appContext"] == app_context
    with requests.Session() as app:
        ok = app.get(
            f"{fhir_stack.fhir_base}/metadata",
            headers={"Authorization": f"Bearer {again['access_token']}"},
        )
        assert ok.status_code == 200


def test_launch_options_reach_the_token(fhir_stack: FhirStack, browser_session: requests.Session) -> None:
    flow = run_authorization(fhir_stack, browser_session, encounter="enc-9", need_patient_banner=False)
    token = exchange(fhir_stack, browser_session, flow.code, flow.verifier).json()
    assert token["patient"] == PATIENT
    assert token["encounter"] == "enc-9"
    assert token["need_patient_banner"] is False
    assert "appContext" not in token


def test_authorize_by_post(fhir_stack: FhirStack, browser_session: requests.Session) -> None:
    launch = ehr_launch(fhir_stack, browser_session, PATIENT)
    verifier, challenge = pkce_pair()
    form = authorize_params(fhir_stack, launch, challenge, "post-state")
    callback = follow_to_callback(
        browser_session,
        fhir_stack.authorize_url,
        fhir_stack.redirect_uris[0],
        method="POST",
        data=form,
    )
    assert callback.params.get("state") == "post-state"
    token = exchange(fhir_stack, browser_session, callback.params["code"], verifier)
    assert token.status_code == 200 and token.json()["patient"] == PATIENT


def test_wrong_code_verifier_is_invalid_grant(
    fhir_stack: FhirStack, browser_session: requests.Session
) -> None:
    flow = run_authorization(fhir_stack, browser_session)
    wrong, _ = pkce_pair()
    resp = exchange(fhir_stack, browser_session, flow.code, wrong)
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"


def test_missing_code_verifier_is_rejected(fhir_stack: FhirStack, browser_session: requests.Session) -> None:
    flow = run_authorization(fhir_stack, browser_session)
    resp = exchange(fhir_stack, browser_session, flow.code, None)
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"


def test_code_cannot_be_reused(fhir_stack: FhirStack, browser_session: requests.Session) -> None:
    flow = run_authorization(fhir_stack, browser_session)
    first = exchange(fhir_stack, browser_session, flow.code, flow.verifier)
    assert first.status_code == 200
    second = exchange(fhir_stack, browser_session, flow.code, flow.verifier)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"


def test_authorization_without_pkce_is_refused(
    fhir_stack: FhirStack, browser_session: requests.Session
) -> None:
    launch = ehr_launch(fhir_stack, browser_session, PATIENT)
    params = authorize_params(fhir_stack, launch, None, "no-pkce")
    callback = follow_to_callback(
        browser_session,
        f"{fhir_stack.authorize_url}?{urlencode(params)}",
        fhir_stack.redirect_uris[0],
    )
    assert callback.params["error"] == "invalid_request"
    assert "PKCE" in callback.params["error_description"]
    assert "code" not in callback.params and callback.params["state"] == "no-pkce"


def test_plain_pkce_method_is_refused(fhir_stack: FhirStack, browser_session: requests.Session) -> None:
    launch = ehr_launch(fhir_stack, browser_session, PATIENT)
    verifier, _ = pkce_pair()
    params = authorize_params(
        fhir_stack,
        launch,
        None,
        "plain",
        code_challenge=verifier,
        code_challenge_method="plain",
    )
    callback = follow_to_callback(
        browser_session,
        f"{fhir_stack.authorize_url}?{urlencode(params)}",
        fhir_stack.redirect_uris[0],
    )
    assert callback.params["error"] == "invalid_request"
    assert "code" not in callback.params


@pytest.mark.parametrize(
    ("override", "expected_text"),
    [({"aud": "http://127.0.0.1:1/fhir"}, "aud"), ({"launch": "no-such-launch"}, "launch")],
)
def test_wrong_aud_or_unknown_launch_is_invalid_request(
    fhir_stack: FhirStack,
    browser_session: requests.Session,
    override: dict[str, str],
    expected_text: str,
) -> None:
    launch = ehr_launch(fhir_stack, browser_session, PATIENT)
    _, challenge = pkce_pair()
    params = authorize_params(fhir_stack, launch, challenge, "bad", **override)
    callback = follow_to_callback(
        browser_session,
        f"{fhir_stack.authorize_url}?{urlencode(params)}",
        fhir_stack.redirect_uris[0],
    )
    assert callback.params["error"] == "invalid_request"
    assert expected_text in callback.params["error_description"]


def test_unknown_redirect_uri_gets_an_error_page_not_a_redirect(
    fhir_stack: FhirStack, browser_session: requests.Session
) -> None:
    launch = ehr_launch(fhir_stack, browser_session, PATIENT)
    _, challenge = pkce_pair()
    evil = "http://127.0.0.1:1/steal"
    params = authorize_params(fhir_stack, launch, challenge, "s", redirect_uri=evil)
    resp = browser_session.get(f"{fhir_stack.authorize_url}?{urlencode(params)}", allow_redirects=False)
    assert resp.status_code == 400
    assert "Location" not in resp.headers
    assert "redirect_uri" in resp.text and evil not in resp.headers.get("Location", "")

    flow = run_authorization(fhir_stack, browser_session)
    token = browser_session.post(
        fhir_stack.token_url,
        data={
            "grant_type": "authorization_code",
            "code": flow.code,
            "redirect_uri": fhir_stack.redirect_uris[1],  # registered, but not the one used
            "client_id": fhir_stack.client_id,
            "code_verifier": flow.verifier,
        },
    )
    assert token.status_code == 400 and token.json()["error"] == "invalid_grant"


def test_unknown_client_is_rejected(fhir_stack: FhirStack, browser_session: requests.Session) -> None:
    launch = ehr_launch(fhir_stack, browser_session, PATIENT)
    _, challenge = pkce_pair()
    params = authorize_params(fhir_stack, launch, challenge, "s", client_id="other-app")
    resp = browser_session.get(f"{fhir_stack.authorize_url}?{urlencode(params)}", allow_redirects=False)
    assert resp.status_code == 400 and "Location" not in resp.headers
    assert "invalid_client" in resp.text


def test_token_endpoint_cors_for_registered_origin(fhir_stack: FhirStack) -> None:
    origin = f"http://127.0.0.1:{fhir_stack.app_port}"
    with requests.Session() as anon:
        preflight = anon.options(
            fhir_stack.token_url,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == origin
        foreign = anon.post(
            fhir_stack.token_url,
            headers={"Origin": "http://127.0.0.1:1"},
            data={"grant_type": "authorization_code", "code": "x", "client_id": "smart-app"},
        )
        assert foreign.headers.get("Access-Control-Allow-Origin") != "http://127.0.0.1:1"


def test_denied_authorization_redirects_with_access_denied(
    fhir_stack: FhirStack, short_lived: FhirStack, browser_session: requests.Session
) -> None:
    for stack, patient, kwargs in (
        (fhir_stack, PATIENT, {"deny": True}),  # per-launch knob
        (short_lived, DENIED_PATIENT, {}),  # SMART_DENY_PATIENTS
    ):
        launch = ehr_launch(stack, browser_session, patient, **kwargs)
        _, challenge = pkce_pair()
        params = authorize_params(stack, launch, challenge, "deny-state")
        callback = follow_to_callback(
            browser_session,
            f"{stack.authorize_url}?{urlencode(params)}",
            stack.redirect_uris[0],
        )
        assert callback.params["error"] == "access_denied", callback
        assert callback.params["state"] == "deny-state"
        assert "code" not in callback.params


def test_expired_token_is_401(short_lived: FhirStack, browser_session: requests.Session) -> None:
    flow = run_authorization(short_lived, browser_session)
    resp = exchange(short_lived, browser_session, flow.code, flow.verifier)
    assert resp.status_code == 200, resp.text
    token = resp.json()
    assert token["expires_in"] == 1
    url = f"{short_lived.fhir_base}/Practitioner/smart-test-user"
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    with requests.Session() as app:
        assert app.get(url, headers=headers).status_code == 200
        deadline = time.monotonic() + 5
        status = 200
        while time.monotonic() < deadline:
            time.sleep(0.25)
            expired = app.get(url, headers=headers)
            status = expired.status_code
            if status == 401:
                assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]
                break
        assert status == 401, "the access token did not expire within 5 s"
