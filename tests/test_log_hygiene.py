"""Log hygiene of a realistic run: a real gunicorn server with client JWT verification, every fixture
scenario patient sent with full prefetch, completed from the real FHIR server with its bearer token, as
order-select with draft orders, and as feedback whose comment names the patient; auth failures of every
kind; a FHIR server refusing a token. Then the server's whole output (gunicorn and JSON lines) is scanned:
no patient id, name, identifier, birth date, lab value, access token or JWT may appear."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.auth_client import SigningKey, bearer, claims, client_entry, hs256_with_public_key, token
from tests.cds_helpers import sandbox_draft_orders, searchset
from tests.gunicorn_process import ServerProcess, start_server
from tests.plugins.fhir_stack import FhirStack, free_port
from tests.plugins.log_hygiene import KNOWN_TOKENS, _bundles, find_phi, fixture_phi

KEY = SigningKey.ec("hygiene-key")
TIMING_KEYS = {"ts", "request_id", "duration_ms", "phases"}  # numbers and hex that are not patient data


def scenario_bundles() -> list[dict[str, Any]]:
    paths = sorted(Path(__file__).parent.parent.glob("fixtures/scenarios/*.json"))
    return [json.loads(p.read_text()) for p in paths if not p.name.endswith(".expected.json")]


def lab_values() -> set[str]:
    """Distinctive Observation values (4+ digits: 9800, 12.75) of every fixture patient, as text."""
    values = set()
    for bundle in _bundles():
        for entry in bundle.get("entry", []):
            quantity = entry.get("resource", {}).get("valueQuantity", {})
            value = quantity.get("value")
            if isinstance(value, int | float) and len(re.sub(r"\D", "", repr(value))) >= 4:
                values.add(repr(value))
    return values


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fhir_stack: FhirStack) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("hygiene")
    clients = {"clients": [client_entry(KEY, fhir_servers=[fhir_stack.fhir_base])]}
    env = {
        "DATABASE_URL": f"sqlite:///{workdir / 'hygiene.sqlite3'}",
        "CDS_WORKERS": "2",
        "CDS_THREADS": "4",
        "CDS_TRUSTED_CLIENTS": json.dumps(clients),
    }
    running = start_server(workdir, free_port(), env, label="hygiene")
    try:
        yield running
    finally:
        running.stop()


class Client:
    """Signs a fresh JWT per call (aud = the exact endpoint URL) and remembers every token it used."""

    def __init__(self, server: ServerProcess) -> None:
        self.base = server.base_url
        self.jwts: list[str] = []

    def post(self, path: str, body: dict[str, Any], jwt_text: str | None = None) -> requests.Response:
        jwt_text = jwt_text or token(KEY, self.base + path)
        self.jwts.append(jwt_text)
        return requests.post(self.base + path, json=body, headers=bearer(jwt_text), timeout=15)

    def get(self, path: str, jwt_text: str) -> requests.Response:
        self.jwts.append(jwt_text)
        return requests.get(self.base + path, headers=bearer(jwt_text), timeout=15)


def hook(hook_name: str, patient: dict[str, Any], **extra: Any) -> dict[str, Any]:
    context = {"userId": "Practitioner/dr-1", "patientId": patient["id"], **extra.pop("context", {})}
    return {"hook": hook_name, "hookInstance": f"hygiene-{patient['id']}", "context": context, **extra}


def prefetch_of(resources: list[dict[str, Any]]) -> dict[str, Any]:
    def of(kind: str) -> dict[str, Any]:
        return searchset(r for r in resources if r["resourceType"] == kind)

    patient = next(r for r in resources if r["resourceType"] == "Patient")
    return {
        "patient": patient,
        "observations": of("Observation"),
        "conditions": of("Condition"),
        "procedures": of("Procedure"),
        "medicationAdministrations": of("MedicationAdministration"),
        "medicationRequests": of("MedicationRequest"),
    }


def realistic_run(client: Client, fhir_stack: FhirStack) -> None:
    screening, select = "/cds-services/iec-hs-screening", "/cds-services/iec-hs-order-select"
    authorization = {"token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read", "subject": "cds"}
    for bundle in scenario_bundles():
        resources = [entry["resource"] for entry in bundle["entry"]]
        patient = resources[0]
        full = client.post(screening, hook("patient-view", patient, prefetch=prefetch_of(resources)))
        assert full.status_code == 200, full.text
        fallback = hook(
            "patient-view",
            patient,
            fhirServer=fhir_stack.fhir_base,
            fhirAuthorization={**authorization, "access_token": fhir_stack.token, "patient": patient["id"]},
        )
        assert client.post(screening, fallback).status_code in (200, 412)
        orders = {
            "draftOrders": sandbox_draft_orders(patient["id"]),
            "selections": ["MedicationRequest/request-123"],
        }
        ordered = client.post(
            select, hook("order-select", patient, context=orders, prefetch=prefetch_of(resources))
        )
        assert ordered.status_code == 200
        name = patient["name"][0]
        comment = f"{name['given'][0]} {name['family']} ({patient['identifier'][0]['value']}) declined"
        item = {
            "card": f"card-{patient['id']}",
            "outcome": "overridden",
            "outcomeTimestamp": "2026-11-24T00:00:00Z",
            "overrideReason": {
                "reason": {"code": "x", "system": "http://example.org"},
                "userComment": comment,
            },
        }
        assert client.post(f"{screening}/feedback", {"feedback": [item]}).status_code == 200
        refused = {
            **fallback,
            "fhirAuthorization": {**fallback["fhirAuthorization"], "access_token": "stolen-token-value"},
        }
        assert client.post(screening, refused).status_code == 412


def auth_failures(client: Client) -> None:
    discovery = client.base + "/cds-services"
    replayed = token(KEY, discovery)
    attempts = [
        token(KEY, discovery, lifetime=-600),  # expired
        token(KEY, client.base + "/elsewhere"),  # wrong aud
        token(SigningKey.ec("unknown-kid"), discovery),
        token(KEY, discovery, iss="https://attacker.example.org"),
        hs256_with_public_key(KEY, claims(discovery)),
        replayed,
        replayed,
        "not-a-jwt-" + "x" * 40,
    ]
    statuses = [client.get("/cds-services", jwt_text).status_code for jwt_text in attempts]
    assert statuses == [401] * 5 + [200, 401, 401]


def test_no_phi_tokens_or_lab_values_in_the_logs(server: ServerProcess, fhir_stack: FhirStack) -> None:
    client = Client(server)
    realistic_run(client, fhir_stack)
    auth_failures(client)
    server.stop()  # flush and close: the whole output, shutdown included
    log = server.log()
    assert '"event":"request"' in log and "client authentication failed" in log
    secrets = fixture_phi() | set(KNOWN_TOKENS) | set(client.jwts)
    secrets |= {jwt_text.rsplit(".", 1)[-1] for jwt_text in client.jwts if jwt_text.count(".") == 2}
    assert find_phi(log.splitlines(), secrets) == []
    assert [hit for hit in lab_value_hits(server) if hit] == []


def lab_value_hits(server: ServerProcess) -> list[str]:
    """Fixture lab values appearing as numbers or words in any JSON log field except timings and ids."""
    values = lab_values()
    assert len(values) > 100  # the fixtures do hold distinctive values to look for
    hits = []
    for line in server.json_lines():
        for key, value in line.items():
            if key in TIMING_KEYS:
                continue
            hits += [f"{key}: {word}" for word in numbers_in(value) & values]
    return hits


# Random identifiers (UUIDs, hex digests) hold digit runs by chance ("...-1058-..."): not values.
_IDENTIFIERS = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b|\b[0-9a-fA-F]{16,}\b"
)


def numbers_in(value: Any) -> set[str]:
    """The numbers written in a log field, random identifiers left out."""
    return set(re.findall(r"-?\d+(?:\.\d+)?", _IDENTIFIERS.sub(" ", json.dumps(value))))


def test_random_identifiers_are_not_read_as_lab_values() -> None:
    reason = "replayed jti 3f2a9c1e-1058-4b7d-9e21-5c0d8f7a6b43, digest 9a1058be77c04d2f9a1058be77c04d2f"
    assert numbers_in(reason) == set()
    assert numbers_in("ferritin 1058 ng/mL") == {"1058"}


def test_the_detector_finds_planted_phi() -> None:
    patient = scenario_bundles()[0]["entry"][0]["resource"]
    planted = [
        f'{{"msg":"x","detail":"{patient["name"][0]["family"]}"}}',
        f"[INFO] looking up Patient/{patient['id']}",
        '{"msg":"fhir","token":"cds-test-token"}',
    ]
    assert len(find_phi(planted, fixture_phi() | set(KNOWN_TOKENS))) == 3
    assert find_phi(['{"service_id":"iec-hs-screening","status":200}'], fixture_phi()) == []
