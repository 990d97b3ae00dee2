"""Client JWT verification through the real app (production mode, inline JWKS): every failure mode is a 401
with the same body, its reason is logged without the token; the success paths (ES384, RS384, iat slightly
in the future, tenants, array aud) are 200 and identify the client in the request log line."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service import create_app
from cds_service.web.observability import JsonFormatter
from tests.auth_client import (
    BASE,
    DISCOVERY,
    ISSUER,
    SCREENING_PATH,
    SigningKey,
    auth_config,
    bearer,
    claims,
    client_entry,
    hs256_with_public_key,
    token,
    unsigned_token,
)

EC = SigningKey.ec("ec-key-1")
RSA = SigningKey.rsa("rsa-key-1")
OTHER = SigningKey.ec("ec-key-1")  # same kid, different key: a forged signature
ACCEPTED = {
    "card": "card-1",
    "outcome": "accepted",
    "acceptedSuggestions": [{"id": "s-1"}],
    "outcomeTimestamp": "2026-11-24T00:10:24Z",
}
GENERIC_401 = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "login", "diagnostics": "authentication required"}],
}


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    tenant_client = client_entry(EC, issuer="https://tenant-ehr.example.org", tenants=["hospital-a"])
    return create_app(auth_config(tmp_path, client_entry(EC, RSA), tenant_client))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def refused(
    client: FlaskClient,
    caplog: pytest.LogCaptureFixture,
    headers: dict[str, str],
    path: str = "/cds-services",
) -> str:
    """Assert a generic 401 and return the logged reason (checking the credential never reached the log)."""
    with caplog.at_level(logging.INFO, logger="cds_service"):
        response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.get_json() == GENERIC_401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    records = [r for r in caplog.records if r.getMessage() == "client authentication failed"]
    assert len(records) == 1
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    credential = headers.get("Authorization", "").partition(" ")[2]
    if len(credential) > 8:
        assert credential not in logged
    signature = credential.split(".")[-1]
    if len(signature) > 8:
        assert signature not in logged  # not even the signature part
    return str(records[0].__dict__["reason"])


# ----------------------------------------------------------------------------------- success paths


@pytest.mark.parametrize("key", [EC, RSA], ids=["ES384", "RS384"])
def test_a_valid_token_is_accepted_on_every_endpoint(
    client: FlaskClient, key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="cds_service.access"):
        assert client.get("/cds-services", headers=bearer(token(key))).status_code == 200
    line = next(r for r in caplog.records if r.name == "cds_service.access").__dict__
    assert line["client"] == ISSUER
    feedback = f"{BASE}{SCREENING_PATH}/feedback"
    response = client.post(
        f"{SCREENING_PATH}/feedback", json={"feedback": [ACCEPTED]}, headers=bearer(token(key, feedback))
    )
    assert response.status_code == 200
    hook = client.post(SCREENING_PATH, json={}, headers=bearer(token(key, f"{BASE}{SCREENING_PATH}")))
    assert hook.status_code == 400  # authenticated; the empty body is then refused by validation


def test_iat_half_a_second_in_the_future_is_within_the_leeway(client: FlaskClient) -> None:
    """The CDS Hooks Sandbox rounds iat to the nearest second: up to 0.5 s ahead of the service."""
    assert client.get("/cds-services", headers=bearer(token(EC, iat_offset=0.5))).status_code == 200
    assert client.get("/cds-services", headers=bearer(token(EC, iat_offset=45))).status_code == 200


def test_aud_may_be_an_array_holding_the_endpoint(client: FlaskClient) -> None:
    jwt_text = token(EC, aud=[DISCOVERY, "https://other.example.org"])  # type: ignore[arg-type]
    assert client.get("/cds-services", headers=bearer(jwt_text)).status_code == 200


def test_sub_is_not_required_and_extra_claims_are_ignored(client: FlaskClient) -> None:
    jwt_text = token(EC, nbf=int(time.time()) - 300, sub="client-id", custom={"x": 1})
    assert client.get("/cds-services", headers=bearer(jwt_text)).status_code == 200


def test_tenant_on_the_allowlist_is_accepted(client: FlaskClient) -> None:
    jwt_text = token(EC, iss="https://tenant-ehr.example.org", tenant="hospital-a")
    assert client.get("/cds-services", headers=bearer(jwt_text)).status_code == 200


# ----------------------------------------------------------------------------------- failure modes


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "no Authorization header"),
        ({"Authorization": ""}, "no Authorization header"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "not a Bearer token"),
        ({"Authorization": "Bearer"}, "not a Bearer token"),
        ({"Authorization": "Bearer not-a-jwt"}, "not a compact JWS"),
        ({"Authorization": "Bearer a.b"}, "not a compact JWS"),
        ({"Authorization": "Bearer aaaa.bbbb.cccc"}, "malformed JWT"),
        ({"Authorization": "Bearer " + "a" * 20000 + ".b.c"}, "longer than 16384 characters"),
        ({"Authorization": "Bearer e30.e30.e30"}, "unknown issuer"),  # {} . {} . {}
    ],
)
def test_missing_or_malformed_credentials(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, headers: dict[str, str], reason: str
) -> None:
    assert reason in refused(client, caplog, headers)


def test_alg_none_is_refused(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    header = {"alg": "none", "typ": "JWT", "kid": EC.kid}
    empty_signature = unsigned_token(header, claims())
    assert "not a compact JWS" in refused(client, caplog, bearer(empty_signature))
    caplog.clear()
    with_signature = unsigned_token(header, claims(), signature=b"forged")
    assert "alg 'none' not allowed" in refused(client, caplog, bearer(with_signature))


def test_hs256_signed_with_the_public_key_is_refused(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    for key in (EC, RSA):
        caplog.clear()
        forged = hs256_with_public_key(key, claims())
        assert "alg 'HS256' not allowed" in refused(client, caplog, bearer(forged))


def test_an_algorithm_the_key_cannot_verify_is_refused(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    """RS384 header with the EC key's kid: the key type, not the token, decides."""
    mislabeled = token(SigningKey("ec-key-1", "RS384", RSA.private))
    assert "cannot verify alg RS384" in refused(client, caplog, bearer(mislabeled))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: token(SigningKey.ec("unknown-kid")), "unknown kid 'unknown-kid'"),
        (lambda: token(OTHER), "signature verification failed"),
        (lambda: token(EC, headers={"kid": None}), "missing or malformed kid"),
        (lambda: token(EC, headers={"kid": ""}), "missing or malformed kid"),
        (lambda: token(EC, iat_offset=-400), "token expired"),
        (lambda: token(EC, lifetime=-120), "token expired"),
        (lambda: token(EC, iat_offset=120), "iat or nbf in the future beyond the leeway"),
        (lambda: token(EC, nbf=int(time.time()) + 300), "iat or nbf in the future beyond the leeway"),
        (lambda: token(EC, aud=f"{BASE}{SCREENING_PATH}"), "aud is not this endpoint"),
        (lambda: token(EC, aud="http://cds.example.org/cds-services"), "aud is not this endpoint"),
        (lambda: token(EC, aud=f"{DISCOVERY}/"), "aud is not this endpoint"),
        (lambda: token(EC, iss="https://evil.example.org"), "unknown issuer 'https://evil.example.org'"),
        (lambda: token(EC, drop=["jti"]), "a required claim is missing"),
        (lambda: token(EC, drop=["exp"]), "a required claim is missing"),
        (lambda: token(EC, drop=["iat"]), "a required claim is missing"),
        (lambda: token(EC, drop=["aud"]), "a required claim is missing"),
        (lambda: token(EC, jti=""), "jti must be a string"),
        (lambda: token(EC, lifetime=7200), "token lifetime exceeds 3600 s"),
        (lambda: token(EC, iss="https://tenant-ehr.example.org"), "tenant 'None' not allowed"),
        (
            lambda: token(EC, iss="https://tenant-ehr.example.org", tenant="hospital-b"),
            "tenant 'hospital-b' not allowed",
        ),
    ],
    ids=[
        "wrong-kid",
        "forged-signature",
        "no-kid",
        "empty-kid",
        "expired",
        "exp-before-iat",
        "iat-beyond-leeway",
        "nbf-in-the-future",
        "aud-other-endpoint",
        "aud-http",
        "aud-trailing-slash",
        "unknown-iss",
        "no-jti",
        "no-exp",
        "no-iat",
        "no-aud",
        "empty-jti",
        "lifetime-too-long",
        "tenant-missing",
        "tenant-mismatch",
    ],
)
def test_invalid_tokens_are_refused(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, make: Any, reason: str
) -> None:
    assert reason in refused(client, caplog, bearer(make()))


def test_a_replayed_jti_is_refused(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    jwt_text = token(EC)
    assert client.get("/cds-services", headers=bearer(jwt_text)).status_code == 200
    assert "replayed jti" in refused(client, caplog, bearer(jwt_text))
    # The same jti in a fresh token is still a replay: jtis are per issuer, not per token.
    jti = "fixed-jti-1"
    assert client.get("/cds-services", headers=bearer(token(EC, jti=jti))).status_code == 200
    caplog.clear()
    assert "replayed jti 'fixed-jti-1'" in refused(client, caplog, bearer(token(EC, jti=jti)))


def test_the_same_jti_from_two_issuers_is_not_a_replay(client: FlaskClient) -> None:
    tenant_token = token(EC, jti="shared", iss="https://tenant-ehr.example.org", tenant="hospital-a")
    assert client.get("/cds-services", headers=bearer(token(EC, jti="shared"))).status_code == 200
    assert client.get("/cds-services", headers=bearer(tenant_token)).status_code == 200


def test_preflight_needs_no_token_but_the_call_does(tmp_path: Path) -> None:
    app = create_app(auth_config(tmp_path, client_entry(EC), CDS_CORS_ORIGINS="https://ehr.example.org"))
    preflight = app.test_client().options(
        "/cds-services",
        headers={"Origin": "https://ehr.example.org", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 200
    assert app.test_client().get("/cds-services").status_code == 401


def test_leeway_is_configurable(tmp_path: Path) -> None:
    strict = create_app(auth_config(tmp_path, client_entry(EC), CDS_JWT_LEEWAY_S="0")).test_client()
    assert strict.get("/cds-services", headers=bearer(token(EC, iat_offset=5))).status_code == 401
    assert strict.get("/cds-services", headers=bearer(token(EC))).status_code == 200


def test_an_algorithm_outside_the_clients_list_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rs256 = SigningKey("rsa-256", "RS256", RSA.private)
    only_384 = create_app(auth_config(tmp_path, client_entry(rs256))).test_client()
    assert "alg 'RS256' not allowed" in refused(only_384, caplog, bearer(token(rs256)))
    allowed = create_app(
        auth_config(tmp_path, client_entry(rs256, algorithms=["RS256"]), DATABASE_URL="sqlite://")
    ).test_client()
    assert allowed.get("/cds-services", headers=bearer(token(rs256))).status_code == 200
