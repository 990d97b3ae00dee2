"""Real searches against the test FHIR server (tests/fhir_stack), no mocks.

Every test uses data it loads itself, with ids unique to this module, so it neither depends on nor
disturbs the fixtures/ seed data of the session stack.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.plugins.fhir_stack import FhirStack, FhirStackError

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
FERRITIN = "2276-4"
FIBRINOGEN = "3255-7"
HEMOGLOBIN = "718-7"

RUN = uuid.uuid4().hex[:8]
PAT = f"fs-{RUN}-123"
OTHER = f"fs-{RUN}-456"


def oid(name: str) -> str:
    return f"fs-{RUN}-{name}"


# id, patient, system, code, effectiveDateTime, value
OBSERVATIONS: list[tuple[str, str, str, str, str, float]] = [
    (oid("o1"), PAT, LOINC, FERRITIN, "2023-06-01T10:00:00Z", 20),
    (oid("o2"), PAT, LOINC, FERRITIN, "2024-02-01T10:00:00Z", 25),
    (oid("o3"), PAT, LOINC, FERRITIN, "2024-05-01T10:00:00Z", 30),
    (oid("o4"), PAT, LOINC, FIBRINOGEN, "2024-03-15T10:00:00Z", 300),
    (oid("o5"), PAT, LOINC, FIBRINOGEN, "2025-01-10T10:00:00Z", 350),
    (oid("o6"), PAT, LOINC, HEMOGLOBIN, "2024-04-01T10:00:00Z", 12),
    (oid("o7"), PAT, SNOMED, FERRITIN, "2024-04-01T10:00:00Z", 1),
    (oid("o8"), OTHER, LOINC, FERRITIN, "2024-06-01T10:00:00Z", 99),
    (oid("o9"), PAT, LOINC, FERRITIN, "2024-01-01T00:00:00Z", 22),
]
MAIN_QUERY = {
    "patient": PAT,
    "code": f"{LOINC}|{FERRITIN},{LOINC}|{FIBRINOGEN}",
    "date": "ge2024-01-01",
    "_sort": "-date",
    "_count": "500",
}
MAIN_EXPECTED = [oid("o5"), oid("o3"), oid("o4"), oid("o2"), oid("o9")]


def put(resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "fullUrl": f"{resource['resourceType']}/{resource['id']}",
        "resource": resource,
        "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
    }


def observation(id_: str, patient: str, system: str, code: str, when: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id_,
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": "ng/mL",
            "system": "http://unitsofmeasure.org",
            "code": "ng/mL",
        },
    }


def seed_bundle() -> dict[str, Any]:
    entries = [
        put({"resourceType": "Patient", "id": PAT, "name": [{"family": "Ferro", "given": ["Test"]}]}),
        put({"resourceType": "Patient", "id": OTHER, "name": [{"family": "Other", "given": ["Test"]}]}),
    ]
    entries += [put(observation(*row)) for row in OBSERVATIONS]
    med = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1657981"}]}
    entries += [
        put(
            {
                "resourceType": "MedicationAdministration",
                "id": oid("ma1"),
                "status": "completed",
                "medicationCodeableConcept": med,
                "subject": {"reference": f"Patient/{PAT}"},
                "effectiveDateTime": "2024-03-01T08:00:00Z",
            }
        ),
        put(
            {
                "resourceType": "MedicationAdministration",
                "id": oid("ma2"),
                "status": "completed",
                "medicationCodeableConcept": med,
                "subject": {"reference": f"Patient/{OTHER}"},
                "effectiveDateTime": "2024-03-01T08:00:00Z",
            }
        ),
        put(
            {
                "resourceType": "Condition",
                "id": oid("c1"),
                "code": {"coding": [{"system": SNOMED, "code": "87522002"}]},
                "subject": {"reference": f"Patient/{PAT}"},
            }
        ),
        put(
            {
                "resourceType": "Procedure",
                "id": oid("p1"),
                "status": "completed",
                "code": {"coding": [{"system": SNOMED, "code": "116859006"}]},
                "subject": {"reference": f"Patient/{PAT}"},
            }
        ),
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def link(bundle: dict[str, Any], relation: str) -> str | None:
    for item in bundle.get("link", []):
        if item.get("relation") == relation:
            url: str = item["url"]
            return url
    return None


def search_all(sess: requests.Session, url: str, params: dict[str, str] | None = None) -> list[str]:
    """Follows Bundle.link next until the end; returns ids in order."""
    found: list[str] = []
    next_url: str | None = url
    first = True
    pages = 0
    while next_url:
        resp = sess.get(next_url, params=params if first else None, timeout=30)
        assert resp.status_code == 200, resp.text
        bundle = resp.json()
        found += ids(bundle)
        next_url = link(bundle, "next")
        first = False
        pages += 1
        assert pages < 10_000, "paging does not terminate"
    return found


@pytest.fixture(scope="module")
def stack(fhir_stack: FhirStack) -> FhirStack:
    result = fhir_stack.load_bundle(seed_bundle())
    assert result["type"] == "transaction-response"
    return fhir_stack


@pytest.fixture(scope="module")
def fhir(stack: FhirStack) -> Iterator[requests.Session]:
    with stack.session() as sess:
        yield sess


@pytest.fixture(scope="module")
def empty_stack(fhir_stack: FhirStack) -> Iterator[FhirStack]:
    """A second, unseeded instance for bulk data and destructive checks."""
    with fhir_stack.start_extra({}, seeds=[]) as extra:
        yield extra


def test_read_and_404(stack: FhirStack, fhir: requests.Session) -> None:
    resp = fhir.get(f"{stack.fhir_base}/Patient/{PAT}")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/fhir+json")
    body = resp.json()
    assert body["resourceType"] == "Patient" and body["id"] == PAT
    assert body["name"][0]["family"] == "Ferro"
    assert resp.headers["ETag"] == f'W/"{body["meta"]["versionId"]}"'

    missing = fhir.get(f"{stack.fhir_base}/Patient/{oid('nope')}")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


def test_token_system_code_with_comma_or_excludes_decoys(stack: FhirStack, fhir: requests.Session) -> None:
    resp = fhir.get(f"{stack.fhir_base}/Observation", params=MAIN_QUERY)
    assert resp.status_code == 200, resp.text
    bundle = resp.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert ids(bundle) == MAIN_EXPECTED  # o6 (Hb), o7 (SNOMED), o8 (other patient), o1 (2023) out
    assert bundle["total"] == 5
    for entry in bundle["entry"]:
        assert entry["search"] == {"mode": "match"}
        assert entry["fullUrl"] == f"{stack.fhir_base}/Observation/{entry['resource']['id']}"


def test_unencoded_query_string_works_too(stack: FhirStack, fhir: requests.Session) -> None:
    raw = "&".join(f"{k}={v}" for k, v in MAIN_QUERY.items())
    resp = fhir.get(f"{stack.fhir_base}/Observation?{raw}")
    assert resp.status_code == 200, resp.text
    assert ids(resp.json()) == MAIN_EXPECTED


def test_token_system_is_honoured(stack: FhirStack, fhir: requests.Session) -> None:
    snomed = fhir.get(
        f"{stack.fhir_base}/Observation", params={"patient": PAT, "code": f"{SNOMED}|{FERRITIN}"}
    ).json()
    assert ids(snomed) == [oid("o7")]

    code_only = fhir.get(
        f"{stack.fhir_base}/Observation",
        params={"patient": PAT, "code": FERRITIN, "_sort": "date"},
    ).json()
    # both systems, ascending by date (o7 is the SNOMED decoy on 2024-04-01)
    assert ids(code_only) == [oid("o1"), oid("o9"), oid("o2"), oid("o7"), oid("o3")]

    not_fer = fhir.get(
        f"{stack.fhir_base}/Observation",
        params={"patient": PAT, "code:not": f"{LOINC}|{FERRITIN}", "_sort": "_id"},
    ).json()
    assert ids(not_fer) == sorted([oid("o4"), oid("o5"), oid("o6"), oid("o7")])


def test_date_prefixes_include_the_boundary(stack: FhirStack, fhir: requests.Session) -> None:
    base = {"patient": PAT, "code": f"{LOINC}|{FERRITIN}", "_sort": "date"}
    ge = fhir.get(f"{stack.fhir_base}/Observation", params={**base, "date": "ge2024-01-01"}).json()
    assert ids(ge) == [oid("o9"), oid("o2"), oid("o3")]  # o9 is exactly 2024-01-01T00:00:00Z

    gt = fhir.get(f"{stack.fhir_base}/Observation", params={**base, "date": "gt2024-01-01"}).json()
    assert ids(gt) == [oid("o2"), oid("o3")]  # gt excludes the whole day of the boundary

    le = fhir.get(f"{stack.fhir_base}/Observation", params={**base, "date": "le2023-12-31"}).json()
    assert ids(le) == [oid("o1")]

    le_boundary = fhir.get(f"{stack.fhir_base}/Observation", params={**base, "date": "le2024-01-01"}).json()
    assert ids(le_boundary) == [oid("o1"), oid("o9")]

    window = fhir.get(
        f"{stack.fhir_base}/Observation",
        params=[
            ("patient", PAT),
            ("date", "ge2024-03-01"),
            ("date", "le2024-04-30"),
            ("_sort", "date,_id"),
        ],
    ).json()
    assert ids(window) == [oid("o4"), oid("o6"), oid("o7")]


def test_sort_descending_by_date(stack: FhirStack, fhir: requests.Session) -> None:
    bundle = fhir.get(
        f"{stack.fhir_base}/Observation", params={"patient": PAT, "_sort": "-date", "_count": "50"}
    ).json()
    by_date = sorted((row for row in OBSERVATIONS if row[1] == PAT), key=lambda row: (row[4], row[0]))
    dates = [e["resource"]["effectiveDateTime"] for e in bundle["entry"]]
    assert dates == sorted(dates, reverse=True)
    assert set(ids(bundle)) == {row[0] for row in by_date}
    assert ids(bundle)[0] == oid("o5") and ids(bundle)[-1] == oid("o1")


def test_bare_patient_id_is_expanded(stack: FhirStack, fhir: requests.Session) -> None:
    expected = sorted(row[0] for row in OBSERVATIONS if row[1] == PAT)
    variants: list[dict[str, str]] = [
        {"patient": PAT},
        {"patient": f"Patient/{PAT}"},
        {"patient": f"{stack.fhir_base}/Patient/{PAT}"},
        {"subject": PAT},
        {"subject": f"Patient/{PAT}"},
        {"subject:Patient": PAT},
    ]
    for params in variants:
        resp = fhir.get(f"{stack.fhir_base}/Observation", params={**params, "_sort": "_id"})
        assert resp.status_code == 200, (params, resp.text)
        assert ids(resp.json()) == expected, params

    for rtype, own in (
        ("MedicationAdministration", [oid("ma1")]),
        ("Condition", [oid("c1")]),
        ("Procedure", [oid("p1")]),
    ):
        bundle = fhir.get(f"{stack.fhir_base}/{rtype}", params={"patient": PAT}).json()
        assert ids(bundle) == own, rtype
    other = fhir.get(f"{stack.fhir_base}/MedicationAdministration", params={"patient": OTHER}).json()
    assert ids(other) == [oid("ma2")]


def test_post_search_form_matches_get(stack: FhirStack, fhir: requests.Session) -> None:
    resp = fhir.post(f"{stack.fhir_base}/Observation/_search", data=MAIN_QUERY)
    assert resp.status_code == 200, resp.text
    assert ids(resp.json()) == MAIN_EXPECTED


def test_default_page_size_and_count_zero(stack: FhirStack, fhir: requests.Session) -> None:
    default_count = int(stack.info["default_count"])
    assert default_count == 20
    counted = fhir.get(f"{stack.fhir_base}/Observation", params={"patient": PAT, "_summary": "count"}).json()
    assert counted["total"] == 8 and "entry" not in counted
    one = fhir.get(
        f"{stack.fhir_base}/Observation", params={"patient": PAT, "_count": "1", "_sort": "-date"}
    ).json()
    assert ids(one) == [oid("o5")] and one["total"] == 8
    assert link(one, "next") is not None and link(one, "previous") is None


def test_paging_with_max_count_follows_next(stack: FhirStack) -> None:
    with stack.start_extra({"FHIR_MAX_COUNT": "2"}, seeds=[]) as paged, paged.session() as sess:
        paged.load_bundle(seed_bundle())
        first = sess.get(f"{paged.fhir_base}/Observation", params=MAIN_QUERY).json()
        assert len(first["entry"]) == 2 and first["total"] == 5
        assert link(first, "previous") is None
        second_url = link(first, "next")
        assert second_url is not None and "_offset=2" in second_url
        second = sess.get(second_url).json()
        assert link(second, "previous") is not None

        pages: list[int] = []
        found: list[str] = []
        url: str | None = f"{paged.fhir_base}/Observation"
        params: dict[str, str] | None = MAIN_QUERY
        while url:
            bundle = sess.get(url, params=params).json()
            params = None
            pages.append(len(bundle.get("entry", [])))
            found += ids(bundle)
            url = link(bundle, "next")
        assert pages == [2, 2, 1]
        assert found == MAIN_EXPECTED  # same ids, same order as the one-page answer


def test_transaction_with_urn_uuid_references(stack: FhirStack, fhir: requests.Session) -> None:
    patient_ref = f"urn:uuid:{uuid.uuid4()}"
    marker = oid("tx")
    obs = observation("unused", "unused", LOINC, FERRITIN, "2024-07-01T00:00:00Z", 5)
    del obs["id"]
    obs["subject"] = {"reference": patient_ref}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_ref,
                "resource": {"resourceType": "Patient", "name": [{"family": marker}]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": obs,
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    resp = fhir.post(stack.fhir_base, json=bundle)
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert all(s.startswith("201") for s in statuses), statuses
    new_patient_id = result["entry"][0]["resource"]["id"]

    found = fhir.get(f"{stack.fhir_base}/Observation", params={"patient": new_patient_id}).json()
    assert len(ids(found)) == 1
    assert found["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{new_patient_id}"
    by_name = fhir.get(f"{stack.fhir_base}/Patient", params={"family": marker}).json()
    assert ids(by_name) == [new_patient_id]


def test_plain_create_assigns_id_and_location(stack: FhirStack, fhir: requests.Session) -> None:
    body = {"resourceType": "Patient", "id": "client-chosen", "name": [{"family": oid("create")}]}
    resp = fhir.post(f"{stack.fhir_base}/Patient", json=body)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["id"] != "client-chosen"
    assert resp.headers["Location"].startswith(f"{stack.fhir_base}/Patient/{created['id']}/_history/")


def test_auth_required(stack: FhirStack) -> None:
    url = f"{stack.fhir_base}/Patient/{PAT}"
    with requests.Session() as anon:
        missing = anon.get(url)
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert missing.json()["resourceType"] == "OperationOutcome"

        bogus = anon.get(url, headers={"Authorization": "Bearer not-a-real-token"})
        assert bogus.status_code == 401
        assert 'error="invalid_token"' in bogus.headers["WWW-Authenticate"]

        search = anon.get(f"{stack.fhir_base}/Observation", params={"patient": PAT})
        assert search.status_code == 401

        ok = anon.get(url, headers={"Authorization": f"Bearer {stack.token}"})
        assert ok.status_code == 200


def test_metadata_and_cors_are_public(stack: FhirStack) -> None:
    with requests.Session() as anon:
        meta = anon.get(f"{stack.fhir_base}/metadata")
        assert meta.status_code == 200
        cap = meta.json()
        assert cap["resourceType"] == "CapabilityStatement" and cap["fhirVersion"] == "4.0.1"
        security = cap["rest"][0]["security"]
        assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
        oauth = security["extension"][0]
        assert oauth["url"].endswith("/oauth-uris")
        uris = {e["url"]: e["valueUri"] for e in oauth["extension"]}
        assert uris == {"authorize": stack.authorize_url, "token": stack.token_url}
        assert meta.headers["Access-Control-Allow-Origin"] == "*"

        preflight = anon.options(
            f"{stack.fhir_base}/Observation",
            headers={
                "Origin": "http://127.0.0.1:9999",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == "*"
        assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()


@pytest.mark.parametrize(
    ("rtype", "params"),
    [
        ("Observation", {"foo": "bar"}),
        ("Observation", {"value-quantity": "gt10"}),
        ("Observation", {"_include": "Observation:subject"}),
        ("Observation", {"_revinclude": "Provenance:target"}),
        ("Observation", {"_elements": "id"}),
        ("Observation", {"_summary": "true"}),
        ("Observation", {"subject.name": "Ferro"}),
        ("Observation", {"_sort": "value-quantity"}),
        ("Observation", {"_sort": "no-such-param"}),
        ("Observation", {"code:text": "ferritin"}),
        ("Observation", {"date:missing": "maybe"}),
        ("Patient", {"family:exact": "Ferro"}),
        ("Patient", {"_has:Observation:patient:code": FERRITIN}),
        ("NoSuchType", {}),
    ],
)
def test_unsupported_search_is_400_not_empty(
    stack: FhirStack, fhir: requests.Session, rtype: str, params: dict[str, str]
) -> None:
    resp = fhir.get(f"{stack.fhir_base}/{rtype}", params=params)
    assert resp.status_code == 400, resp.text
    oo = resp.json()
    assert oo["resourceType"] == "OperationOutcome"
    assert oo["issue"][0]["severity"] == "error"
    assert oo["issue"][0]["code"] in ("not-supported", "invalid"), oo


def test_bad_count_and_date_are_400(stack: FhirStack, fhir: requests.Session) -> None:
    for params in ({"_count": "-1"}, {"_count": "abc"}, {"date": "ge2024-13-45"}):
        resp = fhir.get(f"{stack.fhir_base}/Observation", params=params)
        assert resp.status_code == 400, (params, resp.text)


def test_large_transaction_and_reset(empty_stack: FhirStack) -> None:
    marker = uuid.uuid4().hex[:6]
    entries = [
        put({"resourceType": "Patient", "id": f"big-{marker}-{i}", "gender": "female"}) for i in range(60)
    ]
    result = empty_stack.load_bundle({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert len(result["entry"]) == 60
    with empty_stack.session() as sess:
        count = sess.get(
            f"{empty_stack.fhir_base}/Patient", params={"gender": "female", "_summary": "count"}
        ).json()
        assert count["total"] >= 60
        assert empty_stack.stats()["Patient"] >= 60

        bad = sess.post(
            empty_stack.fhir_base,
            json={"resourceType": "Bundle", "type": "batch", "entry": [{"resource": {}}]},
        )
        assert bad.status_code == 200, bad.text
        assert bad.json()["entry"][0]["response"]["status"].startswith("400")
        with pytest.raises(FhirStackError, match="entries failed"):
            empty_stack.load_bundle({"resourceType": "Bundle", "type": "batch", "entry": [{"resource": {}}]})

        assert empty_stack.reset(seed=False) == 0
        after = sess.get(
            f"{empty_stack.fhir_base}/Patient", params={"gender": "female", "_summary": "count"}
        ).json()
        assert after["total"] == 0
    with pytest.raises(FhirStackError):
        empty_stack.load_bundle({"resourceType": "Patient"})


def test_large_search_matches_python_reference(
    empty_stack: FhirStack, request: pytest.FixtureRequest
) -> None:
    """A few thousand Observations: the server's answer equals a Python filter over the same data.

    Timings are recorded as user properties (a benchmark, not asserted).
    """

    def record_property(name: str, value: float) -> None:
        request.node.user_properties.append((name, value))

    rng = random.Random(20241124)
    marker = uuid.uuid4().hex[:6]
    patients = [f"bulk-{marker}-{p}" for p in range(12)]
    codes = [(LOINC, FERRITIN), (LOINC, FIBRINOGEN), (LOINC, HEMOGLOBIN), (SNOMED, FERRITIN)]
    start = datetime(2023, 1, 1, tzinfo=UTC)
    rows: list[tuple[str, str, str, str, str, float]] = []
    for patient in patients:
        for i in range(250):
            system, code = rng.choice(codes)
            when = start + timedelta(minutes=rng.randrange(0, 3 * 365 * 24 * 60))
            stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
            rows.append((f"{patient}-o{i}", patient, system, code, stamp, rng.uniform(1, 5000)))
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [put({"resourceType": "Patient", "id": p}) for p in patients]
        + [put(observation(*row)) for row in rows],
    }
    t0 = time.perf_counter()
    empty_stack.load_bundle(bundle)
    record_property("load_seconds", round(time.perf_counter() - t0, 3))
    assert len(rows) == 3000

    with empty_stack.session() as sess:
        for patient in patients[:4]:
            params = {
                "patient": patient,
                "code": f"{LOINC}|{FERRITIN},{LOINC}|{FIBRINOGEN}",
                "date": "ge2024-01-01",
                "_sort": "-date",
                "_count": "100",
            }
            t0 = time.perf_counter()
            got = search_all(sess, f"{empty_stack.fhir_base}/Observation", params)
            record_property(f"search_seconds_{patient}", round(time.perf_counter() - t0, 3))
            reference = sorted(
                (
                    row
                    for row in rows
                    if row[1] == patient
                    and (row[2], row[3]) in ((LOINC, FERRITIN), (LOINC, FIBRINOGEN))
                    and row[4] >= "2024-01-01"
                ),
                key=lambda row: row[4],
                reverse=True,
            )
            assert len(got) == len(reference) and len(got) > 50
            assert len(set(got)) == len(got)
            assert set(got) == {row[0] for row in reference}
            date_of = {row[0]: row[4] for row in reference}
            got_dates = [date_of[i] for i in got]
            assert got_dates == sorted(got_dates, reverse=True)


def test_seed_files_default_count_and_reset(stack: FhirStack, tmp_path: Path) -> None:
    """Seed files given to a stack are loaded at start (non-batch Bundles converted) and reloaded
    by reset(); FHIR_DEFAULT_COUNT pages a search that has no _count."""
    transaction = tmp_path / "scenario.json"
    transaction.write_text(json.dumps(seed_bundle()), encoding="utf-8")
    collection = tmp_path / "population.json"
    extra_patients = [{"resourceType": "Patient", "id": oid(f"pop{i}")} for i in range(4)]
    collection.write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": p} for p in extra_patients],
            }
        ),
        encoding="utf-8",
    )
    env = {"FHIR_DEFAULT_COUNT": "3"}
    with stack.start_extra(env, seeds=[transaction, collection]) as seeded, seeded.session() as s:
        assert seeded.info["seeded_entries"] == len(seed_bundle()["entry"]) + 4
        assert s.get(f"{seeded.fhir_base}/Patient/{oid('pop3')}").status_code == 200
        page = s.get(f"{seeded.fhir_base}/Observation", params={"patient": PAT}).json()
        assert len(page["entry"]) == 3 and page["total"] == 8
        assert search_all(s, f"{seeded.fhir_base}/Observation", {"patient": PAT}) == [
            row[0] for row in OBSERVATIONS if row[1] == PAT
        ]
        s.delete(f"{seeded.fhir_base}/Patient/{oid('pop3')}").raise_for_status()
        assert s.get(f"{seeded.fhir_base}/Patient/{oid('pop3')}").status_code in (404, 410)
        assert seeded.reset() == len(seed_bundle()["entry"]) + 4
        assert s.get(f"{seeded.fhir_base}/Patient/{oid('pop3')}").status_code == 200


def test_failing_seed_stops_start_with_the_stack_log(stack: FhirStack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [{"resource": {"resourceType": "Patient"}, "request": {"method": "GET"}}],
            }
        ),
        encoding="utf-8",
    )
    with pytest.raises(FhirStackError, match=r"(?s)failed to start.*stack stderr.*seed"):
        stack.start_extra({}, seeds=[bad])

    not_a_bundle = tmp_path / "notes.json"
    not_a_bundle.write_text(json.dumps({"expected": "cards"}), encoding="utf-8")
    with pytest.raises(FhirStackError, match="not a FHIR Bundle"):
        stack.start_extra({}, seeds=[not_a_bundle])
