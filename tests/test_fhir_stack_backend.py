"""SMART Backend Services, system-scope enforcement and the test-only admin endpoints of the stack.

Everything runs against the real Node stack (oidc-provider's client_credentials grant with
private_key_jwt client authentication; the FHIR wrapper's scope checks). No mocks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
import requests

from tests.loopback_http import Reply, Seen, serving
from tests.plugins.fhir_stack import FhirStack, FhirStackError
from tests.plugins.smart_backend import (
    BackendClient,
    client_assertion,
    generate_backend_client,
    public_jwk,
    token_request_data,
)

RUN = uuid.uuid4().hex[:8]
PATIENT = f"be-{RUN}-pat"


@pytest.fixture(scope="module")
def rs(fhir_stack: FhirStack) -> BackendClient:
    """RS384 client that may be granted system/*.cruds (registered on the session stack)."""
    return fhir_stack.backend_client("backend-rs384")


@pytest.fixture(scope="module")
def es(fhir_stack: FhirStack) -> BackendClient:
    """ES384 client that may be granted system/*.rs only."""
    return fhir_stack.backend_client("backend-es384")


@pytest.fixture(scope="module")
def stack(fhir_stack: FhirStack) -> FhirStack:
    fhir_stack.load_bundle(
        {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {
                    "resource": {"resourceType": "Patient", "id": PATIENT},
                    "request": {"method": "PUT", "url": f"Patient/{PATIENT}"},
                },
                {
                    "resource": observation(PATIENT) | {"id": f"be-{RUN}-obs"},
                    "request": {"method": "PUT", "url": f"Observation/be-{RUN}-obs"},
                },
            ],
        }
    )
    return fhir_stack


@pytest.fixture(scope="module")
def admin(fhir_stack: FhirStack) -> Iterator[FhirStack]:
    """An empty stack with STACK_ADMIN=true (faults, token revocation); faults cleared per test."""
    with fhir_stack.start_extra({"STACK_ADMIN": "true"}, seeds=[]) as extra:
        yield extra


@pytest.fixture
def faults(admin: FhirStack) -> Iterator[FhirStack]:
    try:
        yield admin
    finally:
        admin.clear_faults()


def observation(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2276-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2024-05-01T10:00:00Z",
    }


def token_for(stack: FhirStack, client: BackendClient, scope: str) -> str:
    return str(stack.backend_token(client.client_id, client.private_key, scope)["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}


# ------------------------------------------------------------------ discovery


def test_smart_configuration_advertises_backend_services(stack: FhirStack) -> None:
    cfg = requests.get(stack.smart_configuration_url, timeout=10).json()
    assert "client_credentials" in cfg["grant_types_supported"]
    assert "authorization_code" in cfg["grant_types_supported"]
    assert "private_key_jwt" in cfg["token_endpoint_auth_methods_supported"]
    assert cfg["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert "client-confidential-asymmetric" in cfg["capabilities"]
    assert "client-public" in cfg["capabilities"]
    for scope in ("system/*.rs", "system/Observation.rs", "system/*.cud", "system/*.read", "system/*.write"):
        assert scope in cfg["scopes_supported"], scope
    assert cfg["token_endpoint"] == stack.token_url == stack.info["token_endpoint"]
    assert stack.info["backend_clients"] == ["backend-rs384", "backend-es384"]


# ------------------------------------------------------------------ token endpoint


@pytest.mark.parametrize("client_id", ["backend-rs384", "backend-es384"])
def test_rs384_and_es384_clients_get_working_tokens(stack: FhirStack, client_id: str) -> None:
    client = stack.backend_client(client_id)
    assert client.alg == ("RS384" if client_id.endswith("rs384") else "ES384")
    token = stack.backend_token(
        client.client_id, client.private_key, "system/Patient.rs system/Observation.rs"
    )
    assert token["token_type"] == "bearer"
    assert token["expires_in"] == stack.info["backend_token_ttl"] == 300
    assert token["scope"] == "system/Patient.rs system/Observation.rs"
    assert set(token) >= {"access_token", "token_type", "expires_in", "scope"}

    read = requests.get(
        f"{stack.fhir_base}/Patient/{PATIENT}", headers=bearer(token["access_token"]), timeout=10
    )
    assert read.status_code == 200, read.text
    assert read.json()["id"] == PATIENT
    search = requests.get(
        f"{stack.fhir_base}/Observation",
        params={"patient": PATIENT},
        headers=bearer(token["access_token"]),
        timeout=10,
    )
    assert search.status_code == 200 and search.json()["total"] == 1


def test_pem_private_key_and_explicit_kid_work(stack: FhirStack, es: BackendClient) -> None:
    token = stack.backend_token(es.client_id, es.private_key_pem(), "system/*.rs", kid=es.kid)
    assert token["scope"] == "system/*.rs"


def test_granted_scope_is_narrowed_to_the_registration(stack: FhirStack, es: BackendClient) -> None:
    token = stack.backend_token(es.client_id, es.private_key, "system/*.rs system/Observation.cud")
    assert token["scope"] == "system/*.rs"  # the write scope is not registered for this client

    refused = stack.request_backend_token(es.client_id, es.private_key, "system/Observation.cud")
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_scope"


@pytest.mark.parametrize(
    "scope",
    [
        "",
        "patient/*.rs",
        "user/Observation.read",
        "system/Observation.rs?category=laboratory",
        "system/Observation.sr",
        "system/Observation.x",
        "openid system/*.rs",
    ],
)
def test_malformed_or_non_system_scopes_are_invalid_scope(
    stack: FhirStack, rs: BackendClient, scope: str
) -> None:
    resp = stack.request_backend_token(rs.client_id, rs.private_key, scope)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "invalid_scope"


def _unsigned_kid_less(stack: FhirStack, client: BackendClient) -> str:
    claims = {
        "iss": client.client_id,
        "sub": client.client_id,
        "aud": stack.token_url,
        "exp": int(time.time()) + 120,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, client.private_key, algorithm="RS384", headers={"typ": "JWT"})


BAD_ASSERTIONS: dict[str, Callable[[FhirStack, BackendClient], str]] = {
    "signed with another key": lambda s, c: client_assertion(
        c.client_id, generate_backend_client(alg=c.alg).private_key, s.token_url, kid=c.kid
    ),
    "expired": lambda s, c: c.assertion(s.token_url, claims={"exp": int(time.time()) - 120}),
    "exp more than 5 minutes ahead": lambda s, c: c.assertion(s.token_url, lifetime_s=900),
    "aud is the issuer, not the token URL": lambda s, c: c.assertion(
        s.token_url, claims={"aud": s.auth_base}
    ),
    "sub differs from iss": lambda s, c: c.assertion(s.token_url, claims={"sub": "someone-else"}),
    "iss is another client": lambda s, c: c.assertion(
        s.token_url, claims={"iss": "backend-es384", "sub": "backend-es384"}
    ),
    "no kid header": _unsigned_kid_less,
    "typ header not JWT": lambda s, c: c.assertion(s.token_url, headers={"typ": "at+jwt"}),
    "RS256 is not allowed": lambda s, c: c.assertion(s.token_url, alg="RS256"),
}


@pytest.mark.parametrize("case", sorted(BAD_ASSERTIONS))
def test_bad_client_assertions_are_invalid_client(stack: FhirStack, rs: BackendClient, case: str) -> None:
    assertion = BAD_ASSERTIONS[case](stack, rs)
    resp = stack.request_backend_token(rs.client_id, rs.private_key, "system/*.rs", assertion=assertion)
    assert resp.status_code == 401, (case, resp.text)
    assert resp.json()["error"] == "invalid_client", case
    assert requests.post(
        stack.token_url, data=token_request_data(rs.assertion(stack.token_url), "system/*.rs"), timeout=30
    ).ok  # the client itself is fine


def test_unknown_client_is_invalid_client(stack: FhirStack) -> None:
    stranger = generate_backend_client("not-registered")
    resp = stack.request_backend_token(stranger.client_id, stranger.private_key, "system/*.rs")
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"

    garbage = stack.request_backend_token("x", stranger.private_key, "system/*.rs", assertion="not-a-jwt")
    assert garbage.status_code == 400  # no client can be identified: invalid_request (RFC 6749 5.2)
    assert garbage.json()["error"] == "invalid_request"


def test_replayed_jti_is_rejected(stack: FhirStack, rs: BackendClient) -> None:
    assertion = rs.assertion(stack.token_url, jti=f"once-{uuid.uuid4().hex}")
    first = requests.post(stack.token_url, data=token_request_data(assertion, "system/*.rs"), timeout=30)
    assert first.status_code == 200, first.text
    again = requests.post(stack.token_url, data=token_request_data(assertion, "system/*.rs"), timeout=30)
    assert again.status_code == 401
    assert again.json()["error"] == "invalid_client"
    assert "only be used once" in again.json()["error_description"]


def test_public_jwk_thumbprint_kid_is_stable(rs: BackendClient) -> None:
    assert public_jwk(rs.private_key)["kid"] == rs.kid == rs.public_jwk()["kid"]
    assert "d" not in rs.public_jwk() and rs.public_jwk()["alg"] == "RS384"


def test_jwks_uri_registration(fhir_stack: FhirStack) -> None:
    """A client registered by jwks_uri: the authorization server fetches the key from there."""
    client = generate_backend_client("backend-jwks-uri", alg="ES384", scope="system/*.rs")
    fetched: list[Seen] = []

    def jwks(seen: Seen) -> Reply:
        fetched.append(seen)
        return Reply(body=client.jwks(), content_type="application/json")

    with serving(jwks) as server:
        registered = BackendClient(
            client.client_id, client.private_key, client.scope, jwks_uri=f"{server.base_url}/jwks.json"
        )
        with fhir_stack.start_extra({}, seeds=[], backend_clients=[registered]) as extra:
            token = extra.backend_token(client.client_id, client.private_key, "system/Patient.rs")
            assert token["scope"] == "system/Patient.rs"
    assert [s.path for s in fetched][:1] == ["/jwks.json"]


def test_registry_with_private_key_material_fails_start(fhir_stack: FhirStack) -> None:
    client = generate_backend_client("leaky")
    leaked = {"client_id": "leaky", "jwks": {"keys": [client.public_jwk() | {"d": "secret"}]}}
    with pytest.raises(FhirStackError, match="public keys only"):
        fhir_stack.start_extra({}, seeds=[], backend_clients=[leaked])


# ------------------------------------------------------------------ scope enforcement


def test_read_scope_allows_reads_not_writes(stack: FhirStack, rs: BackendClient) -> None:
    token = token_for(stack, rs, "system/*.rs")
    assert (
        requests.get(f"{stack.fhir_base}/Patient/{PATIENT}", headers=bearer(token), timeout=10).status_code
        == 200
    )
    created = requests.post(
        f"{stack.fhir_base}/Observation", json=observation(PATIENT), headers=bearer(token), timeout=10
    )
    assert created.status_code == 403, created.text
    oo = created.json()
    assert oo["resourceType"] == "OperationOutcome" and oo["issue"][0]["code"] == "forbidden"
    assert "create Observation" in oo["issue"][0]["diagnostics"]
    challenge = created.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer") and 'error="insufficient_scope"' in challenge


def test_per_type_v2_scopes(stack: FhirStack, rs: BackendClient) -> None:
    token = token_for(stack, rs, "system/Observation.rs system/Observation.cu system/Communication.c")
    headers = bearer(token)
    base = stack.fhir_base
    assert requests.get(f"{base}/Observation", params={"patient": PATIENT}, headers=headers, timeout=10).ok
    assert requests.get(f"{base}/Patient/{PATIENT}", headers=headers, timeout=10).status_code == 403
    assert requests.get(f"{base}/Patient", headers=headers, timeout=10).status_code == 403

    created = requests.post(f"{base}/Observation", json=observation(PATIENT), headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    obs = created.json()
    obs["status"] = "amended"
    updated = requests.put(f"{base}/Observation/{obs['id']}", json=obs, headers=headers, timeout=10)
    assert updated.status_code == 200, updated.text
    deleted = requests.delete(f"{base}/Observation/{obs['id']}", headers=headers, timeout=10)
    assert deleted.status_code == 403  # no "d"

    communication = {
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": f"Patient/{PATIENT}"},
    }
    sent = requests.post(f"{base}/Communication", json=communication, headers=headers, timeout=10)
    assert sent.status_code == 201, sent.text
    assert (
        requests.get(f"{base}/Communication/{sent.json()['id']}", headers=headers, timeout=10).status_code
        == 403
    )


def test_read_without_search_permission(stack: FhirStack, rs: BackendClient) -> None:
    token = token_for(stack, rs, "system/Patient.r")
    assert (
        requests.get(f"{stack.fhir_base}/Patient/{PATIENT}", headers=bearer(token), timeout=10).status_code
        == 200
    )
    assert requests.get(f"{stack.fhir_base}/Patient", headers=bearer(token), timeout=10).status_code == 403


def test_v1_read_and_write_scopes(stack: FhirStack, rs: BackendClient) -> None:
    reader = bearer(token_for(stack, rs, "system/*.read"))
    assert requests.get(
        f"{stack.fhir_base}/Observation", params={"patient": PATIENT}, headers=reader, timeout=10
    ).ok
    no_write = requests.post(
        f"{stack.fhir_base}/Observation", json=observation(PATIENT), headers=reader, timeout=10
    )
    assert no_write.status_code == 403

    writer = bearer(token_for(stack, rs, "system/*.write"))
    created = requests.post(
        f"{stack.fhir_base}/Observation", json=observation(PATIENT), headers=writer, timeout=10
    )
    assert created.status_code == 201, created.text
    assert requests.get(f"{stack.fhir_base}/Patient/{PATIENT}", headers=writer, timeout=10).status_code == 403


def test_bundle_entries_are_checked_one_by_one(stack: FhirStack, rs: BackendClient) -> None:
    headers = bearer(token_for(stack, rs, "system/Observation.cud"))

    def bundle(*entries: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}

    obs_entry = {"resource": observation(PATIENT), "request": {"method": "POST", "url": "Observation"}}
    ok = requests.post(stack.fhir_base, json=bundle(obs_entry), headers=headers, timeout=10)
    assert ok.status_code == 200, ok.text
    assert ok.json()["entry"][0]["response"]["status"].startswith("201")

    patient_entry = {
        "resource": {"resourceType": "Patient", "id": f"be-{RUN}-tx"},
        "request": {"method": "PUT", "url": f"Patient/be-{RUN}-tx"},
    }
    refused = requests.post(
        stack.fhir_base, json=bundle(obs_entry, patient_entry), headers=headers, timeout=10
    )
    assert refused.status_code == 403
    assert "update Patient" in refused.json()["issue"][0]["diagnostics"]
    read_entry = {"request": {"method": "GET", "url": f"Patient/{PATIENT}"}}
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [read_entry]}
    assert requests.post(stack.fhir_base, json=batch, headers=headers, timeout=10).status_code == 403


def test_static_token_is_not_scope_limited(stack: FhirStack) -> None:
    with stack.session() as sess:
        created = sess.post(f"{stack.fhir_base}/Patient", json={"resourceType": "Patient"}, timeout=10)
        assert created.status_code == 201
        assert sess.delete(f"{stack.fhir_base}/Patient/{created.json()['id']}", timeout=10).ok


def test_backend_session_helper(stack: FhirStack, es: BackendClient) -> None:
    with stack.backend_session(es) as sess:
        assert sess.get(f"{stack.fhir_base}/Patient/{PATIENT}", timeout=10).status_code == 200
        assert (
            sess.post(f"{stack.fhir_base}/Patient", json={"resourceType": "Patient"}, timeout=10).status_code
            == 403
        )


def test_short_lived_backend_tokens_expire(fhir_stack: FhirStack, rs: BackendClient) -> None:
    with fhir_stack.start_extra({"SMART_BACKEND_TOKEN_TTL": "3"}, seeds=[]) as short:
        issued = time.monotonic()
        token = short.backend_token(rs.client_id, rs.private_key, "system/*.rs")
        assert token["expires_in"] == 3
        url = f"{short.fhir_base}/Practitioner/smart-test-user"
        assert requests.get(url, headers=bearer(token["access_token"]), timeout=10).status_code == 200
        deadline = issued + 30
        while True:
            resp = requests.get(url, headers=bearer(token["access_token"]), timeout=10)
            if resp.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert resp.status_code == 401
        assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
        assert time.monotonic() - issued >= 1.0  # it did work for a while (TTL 3 s, 1 s margin)


# ------------------------------------------------------------------ admin: revocation and faults


def test_admin_endpoints_are_off_by_default(stack: FhirStack) -> None:
    assert stack.info["admin"] is False
    resp = requests.post(
        f"{stack.admin_url}/faults", json={"path_prefix": "/fhir", "status": 500}, timeout=10
    )
    assert resp.status_code == 404
    assert "STACK_ADMIN" in resp.json()["error"]
    assert requests.post(f"{stack.admin_url}/revoke-tokens", timeout=10).status_code == 404
    with pytest.raises(FhirStackError):
        stack.set_fault("/fhir", status=500)


def test_revoked_backend_tokens_are_refused(admin: FhirStack, rs: BackendClient) -> None:
    old = token_for(admin, rs, "system/*.rs")
    url = f"{admin.fhir_base}/Practitioner/smart-test-user"
    assert requests.get(url, headers=bearer(old), timeout=10).status_code == 200
    assert admin.revoke_backend_tokens() >= 1
    refused = requests.get(url, headers=bearer(old), timeout=10)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    fresh = token_for(admin, rs, "system/*.rs")
    assert requests.get(url, headers=bearer(fresh), timeout=10).status_code == 200
    assert requests.get(url, headers=bearer(admin.token), timeout=10).status_code == 200  # static unaffected


def test_fault_fails_the_next_n_matching_requests(faults: FhirStack) -> None:
    fault = faults.set_fault("/fhir/Practitioner", status=503, count=2, retry_after_s=7)
    assert fault["remaining"] == 2 and fault["status"] == 503
    with faults.session() as sess:
        url = f"{faults.fhir_base}/Practitioner/smart-test-user"
        for _ in range(2):
            failed = sess.get(url, timeout=10)
            assert failed.status_code == 503
            assert failed.headers["Retry-After"] == "7"
            assert failed.json()["resourceType"] == "OperationOutcome"
        assert sess.get(f"{faults.fhir_base}/Patient", timeout=10).status_code == 200  # other path
        assert sess.get(url, timeout=10).status_code == 200  # count used up
    (listed,) = faults.faults()
    assert listed["hits"] == 2 and listed["remaining"] == 0
    assert faults.clear_faults() == 1 and faults.faults() == []


def test_fault_401_looks_like_a_rejected_token(faults: FhirStack) -> None:
    with faults.injected_fault("/fhir/", status=401, method="GET"), faults.session() as sess:
        refused = sess.get(f"{faults.fhir_base}/Patient", timeout=10)
        assert refused.status_code == 401
        assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
        assert refused.json()["issue"][0]["code"] == "login"
    with faults.session() as sess:
        assert sess.get(f"{faults.fhir_base}/Patient", timeout=10).status_code == 200


def test_fault_method_filter_and_403(faults: FhirStack) -> None:
    faults.set_fault("/fhir/Observation", status=403, method="POST")
    with faults.session() as sess:
        assert sess.get(f"{faults.fhir_base}/Observation", timeout=10).status_code == 200
        refused = sess.post(f"{faults.fhir_base}/Observation", json=observation("x"), timeout=10)
        assert refused.status_code == 403 and refused.json()["issue"][0]["code"] == "forbidden"


def test_slow_fault_delays_then_answers_normally(faults: FhirStack) -> None:
    faults.set_fault("/fhir/Patient", delay_ms=1500)
    with faults.session() as sess:
        t0 = time.monotonic()
        resp = sess.get(f"{faults.fhir_base}/Patient", timeout=30)
        elapsed = time.monotonic() - t0
    assert resp.status_code == 200
    assert elapsed >= 1.4  # the injected delay (deliberate timing assertion)


def test_reset_connection_fault(faults: FhirStack) -> None:
    faults.set_fault("/fhir/Patient", reset_connection=True)
    with faults.session() as sess:
        with pytest.raises(requests.ConnectionError):
            sess.get(f"{faults.fhir_base}/Patient", timeout=10)
        assert sess.get(f"{faults.fhir_base}/Patient", timeout=10).status_code == 200


def test_token_endpoint_fault(faults: FhirStack, rs: BackendClient) -> None:
    faults.set_fault("/token", status=503, server="auth")
    failed = faults.request_backend_token(rs.client_id, rs.private_key, "system/*.rs")
    assert failed.status_code == 503
    assert failed.json()["error"] == "temporarily_unavailable"
    assert faults.backend_token(rs.client_id, rs.private_key, "system/*.rs")["access_token"]


@pytest.mark.parametrize(
    "spec",
    [
        {"status": 500},
        {"path_prefix": "fhir", "status": 500},
        {"path_prefix": "/fhir", "status": 200},
        {"path_prefix": "/fhir"},
        {"path_prefix": "/fhir", "status": 500, "count": -1},
        {"path_prefix": "/fhir", "status": 500, "server": "db"},
        {"path_prefix": "/fhir", "status": 500, "colour": "red"},
    ],
)
def test_invalid_fault_specs_are_400(faults: FhirStack, spec: dict[str, Any]) -> None:
    resp = requests.post(f"{faults.admin_url}/faults", json=spec, timeout=10)
    assert resp.status_code == 400, resp.text
    assert faults.faults() == []
