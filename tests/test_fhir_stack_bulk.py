"""Bulk Data export (FHIR Bulk Data Access IG v2, asynchronous pattern) against the real test stack.

The module runs its own stack: no seeds, ``BULK_EXPORT_DELAY_MS=300`` (exports usually go through
202 polling before the manifest) and ``BULK_EXPORT_MAX_PER_FILE=3`` (one resource type spans several
files). The "still in progress" check has a stack with a 6 s delay of its own.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import requests

from tests.plugins.fhir_stack import FhirStack
from tests.plugins.smart_backend import BackendClient
from tests.test_smart_auth import exchange, run_authorization

RUN = uuid.uuid4().hex[:6]
P1, P2, P3 = (f"bk-{RUN}-p{i}" for i in (1, 2, 3))
GROUP = f"bk-{RUN}-g"
ASYNC = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
DELAY_MS = 300
PER_FILE = 3


def put(resource: dict[str, Any]) -> dict[str, Any]:
    rtype, rid = resource["resourceType"], resource["id"]
    return {"resource": resource, "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}


def subject(patient: str) -> dict[str, Any]:
    return {"subject": {"reference": f"Patient/{patient}"}}


def dataset() -> list[dict[str, Any]]:
    """3 patients; P1 has 7 Observations (3 files), one of each other compartment type."""
    code = {"coding": [{"system": "http://loinc.org", "code": "2276-4"}]}
    med = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1657981"}]}
    resources: list[dict[str, Any]] = [{"resourceType": "Patient", "id": p} for p in (P1, P2, P3)]
    for i in range(7):
        resources.append(
            {"resourceType": "Observation", "id": f"{P1}-o{i}", "status": "final", "code": code} | subject(P1)
        )
    resources += [
        {"resourceType": "Observation", "id": f"{P2}-o0", "status": "final", "code": code} | subject(P2),
        {"resourceType": "Observation", "id": f"{P3}-o0", "status": "final", "code": code} | subject(P3),
        {"resourceType": "Observation", "id": f"bk-{RUN}-orphan", "status": "final", "code": code},
        {"resourceType": "Condition", "id": f"{P1}-c", "code": code} | subject(P1),
        {"resourceType": "Procedure", "id": f"{P1}-pr", "status": "completed", "code": code} | subject(P1),
        {
            "resourceType": "MedicationAdministration",
            "id": f"{P1}-ma",
            "status": "completed",
            "medicationCodeableConcept": med,
            "effectiveDateTime": "2024-03-01T08:00:00Z",
        }
        | subject(P1),
        {
            "resourceType": "MedicationRequest",
            "id": f"{P2}-mr",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": med,
        }
        | subject(P2),
        {"resourceType": "Practitioner", "id": f"bk-{RUN}-dr"},
        {
            "resourceType": "Group",
            "id": GROUP,
            "type": "person",
            "actual": True,
            "member": [
                {"entity": {"reference": f"Patient/{P1}"}},
                {"entity": {"reference": f"Patient/{P3}"}},
            ],
        },
    ]
    return resources


@pytest.fixture(scope="module")
def bulk(fhir_stack: FhirStack) -> Iterator[FhirStack]:
    env = {"BULK_EXPORT_DELAY_MS": str(DELAY_MS), "BULK_EXPORT_MAX_PER_FILE": str(PER_FILE)}
    with fhir_stack.start_extra(env, seeds=[]) as extra:
        extra.load_bundle({"resourceType": "Bundle", "type": "batch", "entry": [put(r) for r in dataset()]})
        assert extra.info["bulk_export_delay_ms"] == DELAY_MS
        yield extra


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def kickoff(stack: FhirStack, url: str, token: str | None = None, **params: str) -> requests.Response:
    return requests.get(url, params=params, headers={**ASYNC, **auth(token or stack.token)}, timeout=30)


def wait_for_manifest(status_url: str, token: str, timeout: float = 60) -> dict[str, Any]:
    """Polls the status URL, honouring Retry-After, until the manifest arrives."""
    deadline = time.monotonic() + timeout
    while True:
        resp = requests.get(status_url, headers=auth(token), timeout=30)
        if resp.status_code == 200:
            assert resp.headers["Content-Type"].startswith("application/json")
            manifest: dict[str, Any] = resp.json()
            return manifest
        assert resp.status_code == 202, resp.text
        assert time.monotonic() < deadline, "export did not complete"
        time.sleep(min(float(resp.headers["Retry-After"]), 0.25))  # faster than asked: a test


def export(stack: FhirStack, url: str, token: str | None = None, **params: str) -> dict[str, Any]:
    started = kickoff(stack, url, token, **params)
    assert started.status_code == 202, started.text
    return wait_for_manifest(started.headers["Content-Location"], token or stack.token)


def download(manifest: dict[str, Any], token: str) -> dict[str, list[dict[str, Any]]]:
    """All resources of a manifest by type; checks every file's count and content type."""
    found: dict[str, list[dict[str, Any]]] = {}
    for item in manifest["output"]:
        resp = requests.get(item["url"], headers=auth(token), timeout=30)
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"].startswith("application/fhir+ndjson")
        lines = [json.loads(line) for line in resp.text.splitlines() if line.strip()]
        assert len(lines) == item["count"]
        assert {r["resourceType"] for r in lines} == {item["type"]}
        found.setdefault(item["type"], []).extend(lines)
    return found


def ids(found: dict[str, list[dict[str, Any]]]) -> dict[str, set[str]]:
    return {rtype: {r["id"] for r in resources} for rtype, resources in found.items()}


def test_status_is_in_progress_until_the_delay_has_passed(fhir_stack: FhirStack) -> None:
    """A stack with a 6 s delay: the first poll (wide margin) is 202 with X-Progress and Retry-After."""
    with fhir_stack.start_extra({"BULK_EXPORT_DELAY_MS": "6000"}, seeds=[]) as slow:
        started = kickoff(slow, slow.bulk_export_url(), _type="Practitioner")
        assert started.status_code == 202, started.text
        status_url = started.headers["Content-Location"]
        first = requests.get(status_url, headers=auth(slow.token), timeout=30)
        assert first.status_code == 202, first.text
        assert first.headers["X-Progress"].endswith("% complete")
        assert 1 <= int(first.headers["Retry-After"]) <= 6
        assert (
            requests.get(
                f"{status_url.replace('/status/', '/files/')}/Practitioner-1.ndjson",
                headers=auth(slow.token),
                timeout=30,
            ).status_code
            == 404
        )  # not ready yet
        assert requests.delete(status_url, headers=auth(slow.token), timeout=30).status_code == 202


def test_async_kickoff_manifest_and_files(bulk: FhirStack) -> None:
    started = kickoff(bulk, bulk.bulk_export_url(), _type="Observation,Patient")
    assert started.status_code == 202, started.text
    status_url = started.headers["Content-Location"]
    assert status_url.startswith(bulk.fhir_origin)

    manifest = wait_for_manifest(status_url, bulk.token)
    assert manifest["requiresAccessToken"] is True
    assert manifest["error"] == []
    assert manifest["request"] == started.url
    kicked = time.time()
    transaction_time = manifest["transactionTime"]
    assert transaction_time.endswith("Z") and abs(_epoch(transaction_time) - kicked) < 120

    observation_files = [o for o in manifest["output"] if o["type"] == "Observation"]
    assert [o["count"] for o in observation_files] == [3, 3, 3, 1]  # 10 Observations, 3 per file
    assert len({o["url"] for o in observation_files}) == 4
    found = ids(download(manifest, bulk.token))
    assert found["Patient"] == {P1, P2, P3}
    assert len(found["Observation"]) == 10
    assert set(found) == {"Observation", "Patient"}


def _epoch(instant: str) -> float:
    return datetime.fromisoformat(instant.replace("Z", "+00:00")).timestamp()


def test_system_export_includes_everything(bulk: FhirStack) -> None:
    found = ids(download(export(bulk, bulk.bulk_export_url()), bulk.token))
    assert f"bk-{RUN}-dr" in found["Practitioner"]  # not in any patient compartment
    assert f"bk-{RUN}-orphan" in found["Observation"]
    assert GROUP in found["Group"]
    assert {"Condition", "Procedure", "MedicationAdministration", "MedicationRequest"} <= set(found)


def test_patient_export_is_the_patient_compartment(bulk: FhirStack) -> None:
    found = ids(download(export(bulk, bulk.bulk_export_url("patient")), bulk.token))
    assert found["Patient"] == {P1, P2, P3}
    assert found["Observation"] == {f"{P1}-o{i}" for i in range(7)} | {f"{P2}-o0", f"{P3}-o0"}
    assert found["Condition"] == {f"{P1}-c"}
    assert found["Procedure"] == {f"{P1}-pr"}
    assert found["MedicationAdministration"] == {f"{P1}-ma"}
    assert found["MedicationRequest"] == {f"{P2}-mr"}
    assert "Practitioner" not in found  # outside the compartment
    assert f"bk-{RUN}-orphan" not in found["Observation"]


def test_group_export_only_has_the_members(bulk: FhirStack) -> None:
    manifest = export(
        bulk, bulk.bulk_export_url("group", GROUP), _type="Patient,Observation,MedicationRequest"
    )
    found = ids(download(manifest, bulk.token))
    assert found["Patient"] == {P1, P3}
    assert found["Observation"] == {f"{P1}-o{i}" for i in range(7)} | {f"{P3}-o0"}
    assert "MedicationRequest" not in found  # only P2 has one: no file for an empty type

    missing = kickoff(bulk, bulk.bulk_export_url("group", "no-such-group"))
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


def test_since_exports_only_later_changes(bulk: FhirStack) -> None:
    marker = f"bk-{RUN}-marker"
    with bulk.session() as sess:
        written = sess.put(
            f"{bulk.fhir_base}/Practitioner/{marker}",
            json={"resourceType": "Practitioner", "id": marker},
            timeout=30,
        )
        before = written.json()["meta"]["lastUpdated"]  # everything so far is at or before this instant
        time.sleep(0.05)
        patient = sess.get(f"{bulk.fhir_base}/Patient/{P2}", timeout=30).json()
        patient["active"] = True
        assert sess.put(f"{bulk.fhir_base}/Patient/{P2}", json=patient, timeout=30).status_code == 200
    found = ids(download(export(bulk, bulk.bulk_export_url(), _since=before), bulk.token))
    assert found == {"Patient": {P2}}


@pytest.mark.parametrize("fmt", ["application/fhir+ndjson", "application/ndjson", "ndjson"])
def test_output_formats(bulk: FhirStack, fmt: str) -> None:
    manifest = export(bulk, bulk.bulk_export_url(), _type="Practitioner", _outputFormat=fmt)
    assert [o["type"] for o in manifest["output"]] == ["Practitioner"]


def test_export_is_a_snapshot_at_kickoff(bulk: FhirStack) -> None:
    started = kickoff(bulk, bulk.bulk_export_url(), _type="Practitioner")
    assert started.status_code == 202
    late = f"bk-{RUN}-late-{uuid.uuid4().hex[:4]}"
    with bulk.session() as sess:
        assert sess.put(
            f"{bulk.fhir_base}/Practitioner/{late}",
            json={"resourceType": "Practitioner", "id": late},
            timeout=30,
        ).ok
    found = ids(download(wait_for_manifest(started.headers["Content-Location"], bulk.token), bulk.token))
    assert f"bk-{RUN}-dr" in found["Practitioner"] and late not in found["Practitioner"]


def test_delete_cancels_the_job_and_its_files(bulk: FhirStack) -> None:
    manifest_url = kickoff(bulk, bulk.bulk_export_url(), _type="Practitioner").headers["Content-Location"]
    manifest = wait_for_manifest(manifest_url, bulk.token)
    file_url = manifest["output"][0]["url"]
    assert requests.get(file_url, headers=auth(bulk.token), timeout=30).status_code == 200

    cancelled = requests.delete(manifest_url, headers=auth(bulk.token), timeout=30)
    assert cancelled.status_code == 202
    assert requests.get(manifest_url, headers=auth(bulk.token), timeout=30).status_code == 404
    assert requests.get(file_url, headers=auth(bulk.token), timeout=30).status_code == 404
    assert requests.delete(manifest_url, headers=auth(bulk.token), timeout=30).status_code == 404

    running = kickoff(bulk, bulk.bulk_export_url()).headers["Content-Location"]
    assert (
        requests.delete(running, headers=auth(bulk.token), timeout=30).status_code == 202
    )  # while in progress
    assert requests.get(running, headers=auth(bulk.token), timeout=30).status_code == 404


def test_missing_prefer_respond_async_is_400(bulk: FhirStack) -> None:
    resp = requests.get(
        bulk.bulk_export_url(), headers={"Accept": "application/fhir+json", **auth(bulk.token)}, timeout=30
    )
    assert resp.status_code == 400
    oo = resp.json()
    assert oo["resourceType"] == "OperationOutcome" and "respond-async" in oo["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"_outputFormat": "text/csv"}, 400),
        ({"_since": "2024-01-01"}, 400),
        ({"_since": "yesterday"}, 400),
        ({"_type": "NoSuchType"}, 400),
        ({"_typeFilter": "Observation?code=x"}, 400),
        ({"patient": "Patient/x"}, 400),
    ],
)
def test_bad_kickoff_parameters(bulk: FhirStack, params: dict[str, str], status: int) -> None:
    resp = kickoff(bulk, bulk.bulk_export_url(), **params)
    assert resp.status_code == status, resp.text
    assert resp.json()["resourceType"] == "OperationOutcome"


def test_patient_export_refuses_types_outside_the_compartment(bulk: FhirStack) -> None:
    resp = kickoff(bulk, bulk.bulk_export_url("patient"), _type="Practitioner")
    assert resp.status_code == 400


def test_post_kickoff_and_xml_accept_are_refused(bulk: FhirStack) -> None:
    post = requests.post(bulk.bulk_export_url(), headers={**ASYNC, **auth(bulk.token)}, timeout=30)
    assert post.status_code == 405
    xml = requests.get(
        bulk.bulk_export_url(),
        headers={"Accept": "application/fhir+xml", "Prefer": "respond-async", **auth(bulk.token)},
        timeout=30,
    )
    assert xml.status_code == 400


def test_tokens_are_required_everywhere(bulk: FhirStack) -> None:
    assert requests.get(bulk.bulk_export_url(), headers=ASYNC, timeout=30).status_code == 401
    status_url = kickoff(bulk, bulk.bulk_export_url(), _type="Practitioner").headers["Content-Location"]
    assert requests.get(status_url, timeout=30).status_code == 401
    manifest = wait_for_manifest(status_url, bulk.token)
    file_url = manifest["output"][0]["url"]
    assert requests.get(file_url, timeout=30).status_code == 401
    assert requests.get(file_url, headers=auth("bogus"), timeout=30).status_code == 401


def test_backend_token_with_read_scope_exports(bulk: FhirStack) -> None:
    client: BackendClient = bulk.backend_client("backend-es384")
    token = bulk.backend_token(client.client_id, client.private_key, "system/*.rs")["access_token"]
    found = ids(download(export(bulk, bulk.bulk_export_url("patient"), token, _type="Patient"), token))
    assert found == {"Patient": {P1, P2, P3}}


def test_backend_export_is_limited_to_readable_types(bulk: FhirStack) -> None:
    client = bulk.backend_client("backend-rs384")
    token = bulk.backend_token(client.client_id, client.private_key, "system/Observation.rs")["access_token"]
    manifest = export(bulk, bulk.bulk_export_url(), token)
    assert {o["type"] for o in manifest["output"]} == {"Observation"}

    denied = kickoff(bulk, bulk.bulk_export_url(), token, _type="Observation,Patient")
    assert denied.status_code == 403
    assert "Patient" in denied.json()["issue"][0]["diagnostics"]

    writer = bulk.backend_token(client.client_id, client.private_key, "system/*.cud")["access_token"]
    assert kickoff(bulk, bulk.bulk_export_url(), writer).status_code == 403


def test_jobs_belong_to_their_client(bulk: FhirStack) -> None:
    rs = bulk.backend_client("backend-rs384")
    es = bulk.backend_client("backend-es384")
    rs_token = bulk.backend_token(rs.client_id, rs.private_key, "system/*.rs")["access_token"]
    es_token = bulk.backend_token(es.client_id, es.private_key, "system/*.rs")["access_token"]
    status_url = kickoff(bulk, bulk.bulk_export_url(), rs_token, _type="Practitioner").headers[
        "Content-Location"
    ]
    manifest = wait_for_manifest(status_url, rs_token)
    assert requests.get(status_url, headers=auth(es_token), timeout=30).status_code == 404
    assert requests.get(manifest["output"][0]["url"], headers=auth(es_token), timeout=30).status_code == 404
    assert requests.get(status_url, headers=auth(bulk.token), timeout=30).status_code == 200  # static token


def test_smart_launch_tokens_cannot_export(bulk: FhirStack) -> None:
    with requests.Session() as browser:
        flow = run_authorization(bulk, browser)
        token = exchange(bulk, browser, flow.code, flow.verifier).json()["access_token"]
    assert requests.get(f"{bulk.fhir_base}/Patient/{P1}", headers=auth(token), timeout=30).status_code == 200
    refused = kickoff(bulk, bulk.bulk_export_url(), token)
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["code"] == "forbidden"


def test_capability_statement_lists_the_export_operations(bulk: FhirStack) -> None:
    cap = requests.get(f"{bulk.fhir_base}/metadata", timeout=30).json()
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in cap["instantiates"]
    names = {op["name"] for op in cap["rest"][0]["operation"]}
    assert names == {"export", "patient-export", "group-export"}
