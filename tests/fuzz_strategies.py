"""Hypothesis strategies for fuzzing the service: structured CDS Hooks requests carrying realistic FHIR data
(a CAR-T patient) with random mutations at random paths, generated FHIR Observations with odd codes, values,
units and dates, feedback bodies, and raw garbage (bytes, broken JSON, non-standard literals, deep
nesting). Each example is one HTTP request: (method, path, headers, body bytes)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from hypothesis import strategies as st

from cds_service.datafiles import PROJECT_ROOT
from tests.cds_helpers import PREFETCH_KEYS, car_t_patient, full_prefetch, sandbox_draft_orders

SERVICES = {
    "iec-hs-screening": "patient-view",
    "iec-hs-order-select": "order-select",
    "iec-hs-order-sign": "order-sign",
}
PID = "fuzz-patient"
NOW = datetime.now(UTC)
BASE_RESOURCES = car_t_patient(PID, NOW)
LOINC_CODES = sorted(
    {
        coding["code"]
        for analyte in yaml.safe_load((PROJECT_ROOT / "mappings" / "analytes.yaml").read_text())[
            "analytes"
        ].values()
        for coding in analyte.get("codes", [])
    }
)
UNITS = [
    "ng/mL",
    "ug/L",
    "mg/dL",
    "g/L",
    "U/L",
    "ukat/L",
    "10*9/L",
    "/uL",
    "g/dL",
    "kg",
    "Cel",
    "[degF]",
    "%",
]
ODD_STRINGS = ["", " ", "\u0000", "\u202e", "\ufeff", "\U0001f600", "a" * 300, "null", "NaN", "-0", "1e999"]


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    content_type: str | None
    body: bytes

    def __repr__(self) -> str:  # shorter failure reports
        return f"Call({self.method} {self.path} {self.content_type!r} {self.body[:300]!r}...)"


# ------------------------------------------------------------------------------------ JSON values

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(ODD_STRINGS),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, document: Any, max_mutations: int = 3) -> Any:
    """`document` with a few random subtrees replaced by random JSON or removed."""
    result = copy.deepcopy(document)
    for _ in range(draw(st.integers(0, max_mutations))):
        paths = [p for p in _paths(result) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = result
        for part in path[:-1]:
            parent = parent[part]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return result


# ------------------------------------------------------------------------------------ FHIR content

dates = st.one_of(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)).map(
        lambda d: d.isoformat()
    ),
    st.integers(-240, 48).map(lambda h: (NOW + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.sampled_from(["2026-13-45", "2026-02-30T25:61:00Z", "yesterday", "2026", "2026-11", "+2026-01-01"]),
)


@st.composite
def observations(draw: st.DrawFn) -> dict[str, Any]:
    quantity = {
        "value": draw(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(), scalars)),
        "unit": draw(st.one_of(st.sampled_from(UNITS), st.text(max_size=8))),
        "system": "http://unitsofmeasure.org",
    }
    quantity["code"] = draw(st.one_of(st.just(quantity["unit"]), st.sampled_from(UNITS)))
    return {
        "resourceType": "Observation",
        "id": draw(st.from_regex(r"[A-Za-z0-9\-.]{1,20}", fullmatch=True)),
        "status": draw(
            st.sampled_from(["final", "amended", "preliminary", "entered-in-error", "cancelled", ""])
        ),
        "code": {"coding": [{"system": "http://loinc.org", "code": draw(st.sampled_from(LOINC_CODES))}]},
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": draw(dates),
        "valueQuantity": quantity,
    }


@st.composite
def patient_data(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Some of the realistic CAR-T resources (possibly mutated) plus generated Observations."""
    chosen = [r for r in BASE_RESOURCES if draw(st.integers(0, 4)) > 0]
    chosen = [draw(mutated(r, 2)) if draw(st.integers(0, 3)) == 0 else r for r in chosen]
    return chosen + draw(st.lists(observations(), max_size=6))


def _searchset(resources: list[Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


@st.composite
def prefetch(draw: st.DrawFn) -> dict[str, Any]:
    resources = draw(patient_data())
    usable = [r for r in resources if isinstance(r, dict) and "resourceType" in r]
    if not any(r["resourceType"] == "Patient" for r in usable):
        usable.append(BASE_RESOURCES[0])
    full = full_prefetch(usable)
    result: dict[str, Any] = {}
    for key in PREFETCH_KEYS:
        state = draw(st.sampled_from(["given"] * 6 + ["null", "absent", "outcome", "junk"]))
        if state == "given":
            result[key] = full[key]
        elif state == "null":
            result[key] = None
        elif state == "outcome":
            result[key] = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "x"}]}
        elif state == "junk":
            result[key] = draw(json_values)
    return result


# ------------------------------------------------------------------------------------ requests


@st.composite
def hook_requests(draw: st.DrawFn, fhir_servers: tuple[str, ...]) -> Call:
    service = draw(st.sampled_from(sorted(SERVICES)))
    hook = SERVICES[service] if draw(st.integers(0, 9)) else draw(st.sampled_from([*SERVICES.values(), "x"]))
    context: dict[str, Any] = {"userId": "Practitioner/dr-1", "patientId": PID}
    if hook in ("order-select", "order-sign"):
        context["draftOrders"] = draw(mutated(sandbox_draft_orders(PID), 2))
        if hook == "order-select":
            context["selections"] = ["MedicationRequest/request-123"]
    body: dict[str, Any] = {"hook": hook, "hookInstance": "fuzz-instance", "context": context}
    if draw(st.booleans()):
        body["prefetch"] = draw(prefetch())
    if fhir_servers and draw(st.integers(0, 3)) == 0:
        body["fhirServer"] = draw(st.sampled_from(fhir_servers))
        body["fhirAuthorization"] = {
            "access_token": "fuzz-token",
            "token_type": "Bearer",
            "expires_in": draw(st.integers(0, 300)),
            "scope": "patient/*.read",
            "subject": "cds-service",
        }
    body = draw(mutated(body, 2)) if draw(st.integers(0, 4)) == 0 else body
    return Call("POST", f"/cds-services/{service}", "application/json", json.dumps(body).encode())


@st.composite
def feedback_requests(draw: st.DrawFn) -> Call:
    item: dict[str, Any] = {
        "card": draw(st.text(min_size=1, max_size=40)),
        "outcome": draw(st.sampled_from(["accepted", "overridden", "other"])),
        "outcomeTimestamp": draw(dates),
    }
    if item["outcome"] == "accepted":
        item["acceptedSuggestions"] = [{"id": draw(st.text(min_size=1, max_size=20))}]
    body = draw(mutated({"feedback": [item]}, 2))
    service = draw(st.sampled_from([*sorted(SERVICES), "unknown"]))
    return Call("POST", f"/cds-services/{service}/feedback", "application/json", json.dumps(body).encode())


def _deep(depth: int) -> bytes:
    return b'{"hook":' + b"[" * depth + b"]" * depth + b"}"


garbage_bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [
            b'{"hook": NaN}',
            b'{"hook": "patient-view", "hookInstance": "x", "context": {"patientId": 1e999}}',
            b'{"hook": "\\ud800"}',
            b"\xef\xbb\xbf{}",
            b"null",
            b"[]",
            b'"string"',
            b"12",
        ]
    ),
    st.integers(60, 1100).map(_deep),
    json_values.map(lambda v: json.dumps(v).encode()),
)


@st.composite
def garbage_requests(draw: st.DrawFn) -> Call:
    path = draw(
        st.sampled_from(
            [
                "/cds-services",
                *(f"/cds-services/{s}" for s in SERVICES),
                "/cds-services/iec-hs-screening/feedback",
                "/cds-services/nope",
                "/cds-services/%00",
            ]
        )
    )
    method = draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE"]))
    content_type = draw(
        st.sampled_from(
            [
                "application/json",
                "application/fhir+json",
                "text/plain",
                None,
                "application/json; charset=latin-1",
            ]
        )
    )
    return Call(method, path, content_type, draw(garbage_bodies))


def requests(fhir_servers: tuple[str, ...] = ()) -> st.SearchStrategy[Call]:
    """Any request: mostly structured hook calls, some feedback, some garbage."""
    return st.one_of(
        hook_requests(fhir_servers), hook_requests(fhir_servers), feedback_requests(), garbage_requests()
    )
