"""Server-side request forgery and token handling of the FHIR fallback, through the real app in production
mode (client JWTs verified, per-client fhirServer allowlists, https only). Every refused URL points at a
loopback listener that records TCP connections: refused means not a single connection was opened. The
allowed server is a real https server on loopback (test CA)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cds_service import create_app
from tests.auth_client import (
    BASE,
    SCREENING_PATH,
    LoopbackCertificate,
    SigningKey,
    auth_config,
    bearer,
    client_entry,
    recording,
    self_signed,
    token,
    trusting_session,
    with_tls,
)
from tests.cds_helpers import car_t_patient, hook_body, searchset, stated_gaps
from tests.loopback_http import LoopbackServer, Reply, Seen

KEY, OTHER_KEY = SigningKey.ec("ssrf-1"), SigningKey.ec("ssrf-2")
OTHER_ISSUER = "https://other-ehr.example.org"
PID = "ssrf-patient"
RESOURCES = car_t_patient(PID)


def fhir_handler(seen: Seen) -> Reply:
    """A well-behaved FHIR server for PID (read Patient, searches by type)."""
    if seen.path.startswith("/fhir/Patient/"):
        return Reply(body=RESOURCES[0])
    kind = seen.path.rsplit("/", 1)[-1]
    return Reply(body=searchset(r for r in RESOURCES if r["resourceType"] == kind))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCertificate:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def ehr(certificate: LoopbackCertificate) -> Iterator[LoopbackServer]:
    with with_tls(LoopbackServer(fhir_handler), certificate) as server:
        yield server


def app_for(tmp_path: Path, certificate: LoopbackCertificate, *fhir_servers: str, **extra: Any) -> Flask:
    clients = (
        client_entry(KEY, fhir_servers=list(fhir_servers)),
        client_entry(OTHER_KEY, issuer=OTHER_ISSUER, fhir_servers=extra.pop("other_servers", [])),
    )
    timing = {"CDS_HOOK_DEADLINE_S": "6", "CDS_FHIR_TIMEOUT_S": "3"}  # generous: timing is not the point here
    config = auth_config(
        tmp_path, *clients, HTTP_SESSION=trusting_session(certificate), **{**timing, **extra}
    )
    return create_app(config)


def call(app: Flask, fhir_server: str | None, key: SigningKey = KEY, **body: Any) -> Any:
    issuer = OTHER_ISSUER if key is OTHER_KEY else "https://ehr.example.org"
    jwt_text = token(key, f"{BASE}{SCREENING_PATH}", iss=issuer)
    token_value = body.pop("access_token", "fhir-access-token-1")
    request = hook_body("patient-view", PID, fhir_server=fhir_server, token=token_value, **body)
    if "expires_in" in body:
        request["fhirAuthorization"]["expires_in"] = body["expires_in"]
        del request["context"]["expires_in"]
    return app.test_client().post(SCREENING_PATH, json=request, headers=bearer(jwt_text))


def test_an_allowlisted_https_server_is_used_with_the_token(
    tmp_path: Path, certificate: LoopbackCertificate, ehr: Any
) -> None:
    app = app_for(tmp_path, certificate, f"{ehr.https_base_url}/fhir")
    response = call(app, f"{ehr.https_base_url}/fhir/")  # a trailing slash is the same base
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["cards"]
    assert {s.headers.get("Authorization") for s in ehr.seen} == {"Bearer fhir-access-token-1"}


@pytest.mark.parametrize(
    "template",
    [
        "http://127.0.0.1:{port}/fhir/r4",  # the allowlisted base over http: not https outside dev
        "https://127.0.0.1:{port}/fhir",  # https, but not on the client's allowlist
        "https://127.0.0.1:{port}/fhir/r4-evil",  # an allowlisted base as a prefix is not enough
        "https://127.0.0.1:{port}/fhir/r4/../../admin",
        "https://user:pw@127.0.0.1:{port}/fhir/r4",  # credentials in the URL
        "https://127.0.0.1:{port}/fhir/r4?x=1",
        "https://localhost:{port}/fhir/r4",  # another spelling of the host is another URL
        "ftp://127.0.0.1:{port}/fhir/r4",
    ],
)
def test_refused_fhir_servers_are_never_contacted(
    tmp_path: Path, certificate: LoopbackCertificate, template: str
) -> None:
    with recording() as attacker:
        allowed = f"https://127.0.0.1:{attacker.port}/fhir/r4"
        app = app_for(tmp_path, certificate, allowed)
        response = call(app, template.format(port=attacker.port))
    assert attacker.connections == 0
    assert response.status_code in (400, 412)  # 400: the schema refuses non-http(s) URLs
    if response.status_code == 412:
        assert "fhirServer not allowed by policy" in response.get_json()["issue"][0]["diagnostics"]


def test_a_client_cannot_use_another_clients_fhir_server(
    tmp_path: Path, certificate: LoopbackCertificate
) -> None:
    with recording() as other_ehr:
        url = other_ehr.url("https", "/fhir")
        app = app_for(tmp_path, certificate, other_servers=[url])
        assert call(app, url).status_code == 412  # KEY's client has no FHIR servers
    assert other_ehr.connections == 0


def test_no_anonymous_fallback_outside_development(tmp_path: Path, certificate: LoopbackCertificate) -> None:
    with recording() as server:
        url = server.url("https", "/fhir")
        app = app_for(tmp_path, certificate, url)
        request = hook_body("patient-view", PID, fhir_server=url)  # no fhirAuthorization
        jwt_text = token(KEY, f"{BASE}{SCREENING_PATH}")
        response = app.test_client().post(SCREENING_PATH, json=request, headers=bearer(jwt_text))
    assert response.status_code == 412 and server.connections == 0


def test_redirects_are_not_followed(tmp_path: Path, certificate: LoopbackCertificate) -> None:
    with recording() as attacker:
        target = attacker.url("http", "/steal")
        redirecting = LoopbackServer(lambda seen: Reply(status=307, headers={"Location": target}))
        with with_tls(redirecting, certificate) as ehr:
            app = app_for(tmp_path, certificate, f"{ehr.https_base_url}/fhir")
            response = call(app, f"{ehr.https_base_url}/fhir")
    assert response.status_code == 412
    assert "HTTP 307" in response.get_json()["issue"][0]["diagnostics"]
    assert attacker.connections == 0


def test_next_links_to_another_host_are_not_followed(
    tmp_path: Path, certificate: LoopbackCertificate
) -> None:
    with recording() as attacker:

        def paging(seen: Seen) -> Reply:
            reply = fhir_handler(seen)
            if seen.path.endswith("/Observation") and isinstance(reply.body, dict):
                reply.body["link"] = [{"relation": "next", "url": attacker.url("https", "/fhir/Observation")}]
            return reply

        with with_tls(LoopbackServer(paging), certificate) as ehr:
            app = app_for(tmp_path, certificate, f"{ehr.https_base_url}/fhir")
            response = call(app, f"{ehr.https_base_url}/fhir")
    assert response.status_code == 200 and attacker.connections == 0
    assert "observations" in stated_gaps(response.get_json())  # the gap is stated in the card


def test_an_expired_access_token_is_never_sent(
    tmp_path: Path, certificate: LoopbackCertificate, ehr: Any
) -> None:
    app = app_for(tmp_path, certificate, f"{ehr.https_base_url}/fhir")
    response = call(app, f"{ehr.https_base_url}/fhir", expires_in=0)
    assert response.status_code == 412
    assert "access token expired" in response.get_json()["issue"][0]["diagnostics"]
    assert ehr.seen == []


def test_the_token_expires_between_pages(tmp_path: Path, certificate: LoopbackCertificate) -> None:
    """expires_in counts from the request's arrival: a page fetched after it is not requested."""
    ehr: Any  # the TLS-wrapped server, bound by the `with` below before any request reaches slow_paging

    def slow_paging(seen: Seen) -> Reply:
        reply = fhir_handler(seen)
        if seen.path.endswith("/Observation") and "page" not in seen.query:
            assert isinstance(reply.body, dict)
            reply.body["link"] = [
                {"relation": "next", "url": f"{ehr.https_base_url}/fhir/Observation?page=2"}
            ]
            reply.delay_s = 1.2
        return reply

    with with_tls(LoopbackServer(slow_paging), certificate) as ehr:
        app = app_for(tmp_path, certificate, f"{ehr.https_base_url}/fhir")
        start = time.monotonic()
        response = call(app, f"{ehr.https_base_url}/fhir", expires_in=1)
        assert time.monotonic() - start < 4.5  # the second page was not waited for either
    assert response.status_code == 200
    assert not any("page" in s.query for s in ehr.seen)
