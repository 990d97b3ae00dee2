"""The watch list's HTTP surface in production mode, without any FHIR traffic: client JWTs on the JSON API
with the trusted clients' allowlists, the worklist's sign-in page, the Subscription endpoint's secret, and the
site's list of patients."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cds_service import create_app
from cds_service.watch.subscriptions import secret_hash
from tests.auth_client import BASE, SigningKey, auth_config, bearer, client_entry, token
from tests.plugins.smart_backend import generate_backend_client
from tests.watch_helpers import state_of

WATCHED = "https://ehr.example.org/fhir"
OTHER_ISSUER = "https://other-ehr.example.org"


@pytest.fixture
def keys() -> tuple[SigningKey, SigningKey]:
    return SigningKey.ec("watch-a"), SigningKey.ec("watch-b")


def servers(tmp_path: Path) -> Path:
    key = tmp_path / "watch-key.pem"
    key.write_text(generate_backend_client("w", alg="ES384").private_key_pem(), encoding="utf-8")
    path = tmp_path / "servers.yaml"
    path.write_text(
        f"servers:\n  - fhir_server: {WATCHED}\n    client_id: cds-watch\n    private_key_file: {key.name}\n",
        encoding="utf-8",
    )
    return path


def production_app(tmp_path: Path, keys: tuple[SigningKey, SigningKey], **extra: Any) -> Flask:
    allowed = client_entry(keys[0], fhir_servers=[WATCHED + "/"])
    other = client_entry(keys[1], issuer=OTHER_ISSUER, fhir_servers=["https://other-ehr.example.org/fhir"])
    return create_app(
        auth_config(tmp_path, allowed, other, CDS_WATCH_SERVERS_FILE=str(servers(tmp_path)), **extra)
    )


def headers(key: SigningKey, path: str, **kw: Any) -> dict[str, str]:
    return bearer(token(key, f"{BASE}{path}", **kw))


def test_the_api_needs_a_client_jwt_and_keeps_to_the_clients_allowlist(
    tmp_path: Path, keys: tuple[SigningKey, SigningKey]
) -> None:
    web = production_app(tmp_path, keys).test_client()
    body = {"patientId": "p-1", "fhirServer": WATCHED}
    assert web.get("/watch/api/patients").status_code == 401
    assert web.post("/watch/api/enroll", json=body).status_code == 401
    wrong_aud = web.post("/watch/api/enroll", json=body, headers=headers(keys[0], "/watch/api/patients"))
    assert wrong_aud.status_code == 401
    created = web.post("/watch/api/enroll", json=body, headers=headers(keys[0], "/watch/api/enroll"))
    assert created.status_code == 201 and created.get_json()["enrolled"] is True
    again = web.post("/watch/api/enroll", json=body, headers=headers(keys[0], "/watch/api/enroll"))
    assert again.status_code == 200
    refused = web.post(
        "/watch/api/enroll", json=body, headers=headers(keys[1], "/watch/api/enroll", iss=OTHER_ISSUER)
    )
    assert refused.status_code == 403 and refused.get_json()["issue"][0]["code"] == "forbidden"
    mine = web.get("/watch/api/patients", headers=headers(keys[0], "/watch/api/patients")).get_json()
    assert [p["patientId"] for p in mine["patients"]] == ["p-1"]
    theirs = web.get(
        "/watch/api/patients", headers=headers(keys[1], "/watch/api/patients", iss=OTHER_ISSUER)
    ).get_json()
    assert theirs == {"patients": []}
    unknown = {"patientId": "p-1", "fhirServer": "https://elsewhere.example.org/fhir"}
    assert (
        web.post("/watch/api/enroll", json=unknown, headers=headers(keys[0], "/watch/api/enroll")).status_code
        == 403
    )
    bad: Any
    for bad in (
        {"patientId": "p 1", "fhirServer": WATCHED},
        {"fhirServer": WATCHED},
        [],
        {"patientId": "p", "fhirServer": WATCHED, "infusionTime": "yesterday"},
    ):
        answer = web.post("/watch/api/enroll", json=bad, headers=headers(keys[0], "/watch/api/enroll"))
        assert answer.status_code == 400
    text = web.post(
        "/watch/api/enroll",
        data="x",
        content_type="text/plain",
        headers=headers(keys[0], "/watch/api/enroll"),
    )
    assert text.status_code == 415
    left = web.post("/watch/api/unenroll", json=body, headers=headers(keys[0], "/watch/api/unenroll"))
    assert left.status_code == 200 and left.get_json()["left"] is True
    gone = web.post("/watch/api/unenroll", json=body, headers=headers(keys[0], "/watch/api/unenroll"))
    assert gone.status_code == 404


def test_the_worklist_asks_for_a_sign_in_in_production(
    tmp_path: Path, keys: tuple[SigningKey, SigningKey]
) -> None:
    web = production_app(tmp_path, keys).test_client()
    page = web.get("/smart/worklist")
    assert page.status_code == 200 and 'id="signin-title"' in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    assert "form-action" not in page.headers["Content-Security-Policy"]  # the form leads to the EHR
    assert "script-src" not in page.headers["Content-Security-Policy"]
    assert web.get("/watch/").headers["Location"] == "/smart/worklist"
    unknown = web.get("/smart/worklist/open/abcdefghijklmnop")
    assert unknown.status_code == 404 and 'data-error-code="not-watched"' in unknown.get_data(as_text=True)


def test_subscription_notifications_need_the_subscriptions_secret(
    tmp_path: Path, keys: tuple[SigningKey, SigningKey]
) -> None:
    app = production_app(tmp_path, keys)
    state, web = state_of(app), app.test_client()
    entry, _ = state.enrol(WATCHED, "p-1", infusion_at=None, source="api")
    state.store.prepare_subscription(entry.id, "tok-1234567890", secret_hash("s3cret-value"))
    event = {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [
            {
                "resource": {
                    "resourceType": "Parameters",
                    "parameter": [{"name": "type", "valueCode": "event-notification"}],
                }
            }
        ],
    }
    assert web.post("/watch/notify/unknown-token", json=event).status_code == 404
    wrong = web.post("/watch/notify/tok-1234567890", json=event, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 404
    assert state.store.find(WATCHED, "p-1").notified_at is None  # type: ignore[union-attr]
    right = {"Authorization": "Bearer s3cret-value"}
    handshake = dict(
        event,
        entry=[
            {
                "resource": {
                    "resourceType": "Parameters",
                    "parameter": [{"name": "type", "valueCode": "handshake"}],
                }
            }
        ],
    )
    assert web.post("/watch/notify/tok-1234567890", json=handshake, headers=right).status_code == 200
    assert state.store.find(WATCHED, "p-1").notified_at is None  # type: ignore[union-attr]
    assert web.post("/watch/notify/tok-1234567890", json=event, headers=right).status_code == 200
    assert state.store.find(WATCHED, "p-1").notified_at is not None  # type: ignore[union-attr]


def test_the_sites_list_enrols_and_lets_go(tmp_path: Path, keys: tuple[SigningKey, SigningKey]) -> None:
    listing = tmp_path / "watch-list.json"

    def write(*patients: str) -> None:
        document = {"patients": [{"patientId": p, "fhirServer": WATCHED} for p in patients]}
        listing.write_text(json.dumps(document), encoding="utf-8")
        stamp = time.time() + len(patients)  # a new mtime even within the file system's resolution
        os.utime(listing, (stamp, stamp))

    write("p-1", "p-2")
    state = state_of(production_app(tmp_path, keys, CDS_WATCH_ENROLL_FILE=str(listing)))
    state.enrol(WATCHED, "p-api", infusion_at=None, source="api")
    state.sync_list()
    assert sorted((e.patient_id, e.source) for e in state.store.active()) == [
        ("p-1", "list"),
        ("p-2", "list"),
        ("p-api", "api"),
    ]
    write("p-2")
    state.sync_list()
    assert sorted(e.patient_id for e in state.store.active()) == ["p-2", "p-api"]
    left = state.store.find(WATCHED, "p-1")
    assert left is not None and left.left_reason == "removed-from-list"
    listing.write_text("{not json", encoding="utf-8")
    state.sync_list()  # a broken edit keeps the last list
    assert sorted(e.patient_id for e in state.store.active()) == ["p-2", "p-api"]
