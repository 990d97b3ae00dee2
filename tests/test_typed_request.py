"""The typed fast path (hooks.typed_request, engine.typed) reads requests exactly as the general path.

Equivalence is checked end to end (every hook fixture answered identically with the fast path on and off),
on the engine (every fixture patient evaluated identically from typed and plain input, and hypothesis-made
Observations with odd values), and structurally (the element list matches FHIR R4; every Observation
element the lenient normalizer reads is declared typed; the schema view loses nothing the schema checks).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service import create_app
from cds_service.engine import evaluate
from cds_service.engine.knowledge import load_knowledge
from cds_service.engine.observations import ObservationNormalizer
from cds_service.engine.serialize import to_json_bytes
from cds_service.engine.typed import Component, TypedObservation
from cds_service.hooks import typed_request
from cds_service.hooks.validation import SCHEMA_DIR
from scripts.fhir_elements import build
from tests.cds_helpers import dev_config, full_prefetch
from tests.engine_helpers import KB
from tests.fuzz_strategies import LOINC_CODES, UNITS, dates, mutated, observations, patient_data

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted((ROOT / "fixtures" / "hooks").glob("*.json"))
PATIENTS = [
    p for p in sorted((ROOT / "fixtures").glob("*/*.json")) if p.parent.name in {"scenarios", "population"}
]
PATIENTS = [p for p in PATIENTS if not p.name.endswith(".expected.json") and p.name != "index.json"]
AT = datetime(2026, 11, 24, 12, tzinfo=UTC)
HOOKS_AT = datetime(2026, 3, 15, 20, tzinfo=UTC)  # fixtures/hooks/ are built from classic-iec-hs
EQUIVALENCE = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def body_of(prefetch: dict[str, Any]) -> bytes:
    # json, not orjson: generated data may hold integers beyond 64 bits (orjson then reads them as floats)
    return json.dumps(
        {
            "hook": "patient-view",
            "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"userId": "Practitioner/dr-1", "patientId": "p-1"},
            "prefetch": prefetch,
        }
    ).encode()


def resources_of(path: Path) -> list[dict[str, Any]]:
    document = json.loads(path.read_text())
    if isinstance(document, dict) and document.get("resourceType") == "Bundle":
        return [e["resource"] for e in document["entry"]]
    return list(document)


def same_evaluation(prefetch: dict[str, Any]) -> bool | None:
    """Evaluate plain and typed input; None when the fast path declines the document."""
    body = body_of(prefetch)
    typed = typed_request.decode(body)
    if typed is None:
        return None
    plain = orjson.loads(body)["prefetch"]
    return to_json_bytes(evaluate(typed["prefetch"], at=AT, knowledge=KB)) == to_json_bytes(
        evaluate(plain, at=AT, knowledge=KB)
    )


# ---------------------------------------------------------------------------------- structure


def test_element_list_matches_fhir_r4() -> None:
    """schemas/fhir-r4-elements.json is what scripts/fhir_elements.py builds from fhir.resources (R4B)."""
    assert json.loads((SCHEMA_DIR / "fhir-r4-elements.json").read_text()) == build()


class Recording(dict[str, Any]):
    """A JSON object that records which of its keys were read."""

    def __init__(self, data: dict[str, Any], seen: set[str]) -> None:
        super().__init__(data)
        self.seen = seen

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.seen.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.seen.add(str(key))
        return super().__contains__(key)


def test_every_observation_element_the_normalizer_reads_is_declared() -> None:
    seen: set[str] = set()
    component_seen: set[str] = set()

    def recorded(resource: dict[str, Any]) -> Recording:
        parts = resource.get("component")
        if isinstance(parts, list):
            resource = {**resource, "component": [Recording(p, component_seen) for p in parts]}
        return Recording(resource, seen)

    observations_read = [
        recorded(r) for path in PATIENTS for r in resources_of(path) if r["resourceType"] == "Observation"
    ]
    ObservationNormalizer(load_knowledge()).normalize(observations_read)
    declared = set(TypedObservation.__struct_fields__) | {"resourceType"}
    assert {"code", "valueQuantity", "effectiveDateTime", "status", "component"} <= seen
    assert seen <= declared, seen - declared
    assert {"code", "valueQuantity"} <= component_seen
    assert component_seen <= set(Component.__struct_fields__), component_seen - set(
        Component.__struct_fields__
    )


def test_the_schema_checks_nothing_inside_a_prefetch_value_but_its_resource_type() -> None:
    """hook_request.schema_view cuts prefetch values to their resourceType: valid only while this holds."""
    schema = json.loads((SCHEMA_DIR / "cds-request.schema.json").read_text())
    value_schema = schema["properties"]["prefetch"]["additionalProperties"]
    assert set(value_schema) <= {"description", "type", "required", "properties"}
    assert set(value_schema["properties"]) == {"resourceType"}


# ---------------------------------------------------------------------------------- declined documents


@pytest.mark.parametrize(
    "body",
    [
        b'{"hook": "patient-view", "unexpected": 1}',  # unknown top-level field: the schema decides
        b'{"prefetch": {"x": {"resourceType": "Encounter", "id": "e"}}}',  # type outside the declared ones
        b'{"prefetch": {"x": {"resourceType": "Patient", "birthDate": "2000-01-01", "nickname": "x"}}}',
        b'{"prefetch": {"x": {"resourceType": "Observation", "status": 7}}}',  # wrong element type
        b'{"prefetch": {"x": {"resourceType": "Observation", "valueQuantity": {"value": true}}}}',
        b'{"prefetch": {"x": {"resourceType": "Bundle", "entry": [{"resource": null}]}}}',
        b'{"prefetch": {"x": "not a resource"}}',
        b'{"prefetch": null}',
        b'{"hook": "patient-view"',  # malformed JSON
        b'{"hook": "\xff"}',  # not UTF-8
        b'{"context": ' + b"[" * 3000 + b"]" * 3000 + b"}",  # nested beyond the decoder's recursion
        b'{"prefetch": {"x": {"resourceType": "Observation", "valueQuantity": {"value": 1e400}}}}',
    ],
)
def test_documents_outside_the_typed_shape_go_the_general_way(body: bytes) -> None:
    assert typed_request.decode(body) is None


def test_recognised_documents_keep_everything_the_engine_reads() -> None:
    body = body_of(
        {
            "patient": {"resourceType": "Patient", "id": "p-1", "birthDate": "1960-01-01", "_birthDate": {}},
            "observations": {
                "resourceType": "Bundle",
                "type": "searchset",
                "link": [{"relation": "next", "url": "https://ehr.example.org/fhir/Observation?page=2"}],
                "entry": [
                    {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Observation", "id": "o-1"}},
                    {"search": {"mode": "match"}},
                ],
            },
            "conditions": None,
        }
    )
    document = typed_request.decode(body)
    assert document is not None
    prefetch = document["prefetch"]
    assert prefetch["patient"] == {
        "resourceType": "Patient",
        "id": "p-1",
        "birthDate": "1960-01-01",
        "_birthDate": {},
    }
    bundle = prefetch["observations"]
    assert bundle["link"][0]["relation"] == "next" and bundle["type"] == "searchset"
    assert list(bundle["entry"][0]) == ["resource"]  # an entry keeps only its resource
    assert type(bundle["entry"][0]["resource"]) is TypedObservation
    assert bundle["entry"][1] == {}  # no resource: reported by the engine
    assert prefetch["conditions"] is None


# ---------------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("path", PATIENTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture_patients_evaluate_identically(path: Path) -> None:
    assert same_evaluation(full_prefetch(resources_of(path))) is True


@EQUIVALENCE
@given(data=patient_data())
def test_generated_patients_evaluate_identically(data: list[Any]) -> None:
    usable = [r for r in data if isinstance(r, dict) and isinstance(r.get("resourceType"), str)]
    prefetch = {
        "observations": {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r} for r in usable],
        }
    }
    assert same_evaluation(prefetch) in (True, None)


@EQUIVALENCE
@given(st.data())
def test_odd_observations_evaluate_identically(data: st.DataObject) -> None:
    items = data.draw(st.lists(observations(), min_size=1, max_size=8))
    items = [data.draw(mutated(o, 2)) if data.draw(st.booleans()) else o for o in items]
    entries = [{"resource": o} for o in items]
    result = same_evaluation({"observations": {"resourceType": "Bundle", "entry": entries}})
    assert result in (True, None)


quantities = st.fixed_dictionaries(
    {},
    optional={
        "value": st.one_of(st.integers(-(10**16), 10**16), st.floats(allow_nan=False, allow_infinity=False)),
        "unit": st.one_of(st.sampled_from(UNITS), st.text(max_size=6)),
        "code": st.one_of(st.sampled_from(UNITS), st.text(max_size=6)),
        "system": st.sampled_from(["http://unitsofmeasure.org", "http://example.org/units", ""]),
        "comparator": st.sampled_from(["<", "<=", ">", ">=", "ad", ""]),
    },
)
codings = st.fixed_dictionaries(
    {},
    optional={
        "system": st.sampled_from(["http://loinc.org", "http://snomed.info/sct", ""]),
        "code": st.one_of(st.sampled_from(LOINC_CODES), st.text(max_size=8)),
        "display": st.text(max_size=20),
    },
)


components = st.fixed_dictionaries(
    {
        "code": st.fixed_dictionaries(
            {}, optional={"coding": st.lists(codings, max_size=2), "text": st.text(max_size=8)}
        )
    },
    optional={
        "valueQuantity": quantities,
        "dataAbsentReason": st.just({"text": "not done"}),
        "referenceRange": st.lists(
            st.fixed_dictionaries({}, optional={"low": quantities, "high": quantities}), max_size=2
        ),
    },
)


@st.composite
def typed_observations(draw: st.DrawFn) -> dict[str, Any]:
    """Observations of every shape the typed decoder accepts: right element types, odd contents."""
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": draw(st.from_regex(r"[A-Za-z0-9\-.]{1,12}", fullmatch=True)),
        "code": {
            "coding": draw(st.lists(codings, max_size=3)),
            **draw(st.fixed_dictionaries({}, optional={"text": st.text(max_size=12)})),
        },
    }
    optional = {
        "status": st.sampled_from(
            ["final", "amended", "preliminary", "entered-in-error", "cancelled", "", "x"]
        ),
        "effectiveDateTime": dates,
        "effectivePeriod": st.fixed_dictionaries({}, optional={"start": dates, "end": dates}),
        "issued": dates,
        "valueQuantity": quantities,
        "dataAbsentReason": st.just({"text": "not done"}),
        "referenceRange": st.lists(
            st.fixed_dictionaries({}, optional={"low": quantities, "high": quantities}), max_size=2
        ),
        "component": st.lists(components, max_size=3),
        "meta": st.fixed_dictionaries({}, optional={"lastUpdated": dates}),
    }
    for name, strategy in optional.items():
        if draw(st.integers(0, 3)):
            observation[name] = draw(strategy)
    if draw(st.booleans()):
        observation["id"] = "dup"  # duplicate ids: the most recent version wins
    return observation


@EQUIVALENCE
@given(st.lists(typed_observations(), min_size=1, max_size=10))
def test_typed_shape_observations_evaluate_identically(items: list[dict[str, Any]]) -> None:
    entries = [{"resource": o} for o in items]
    assert same_evaluation({"observations": {"resourceType": "Bundle", "entry": entries}}) is True


def test_generated_examples_do_take_the_fast_path() -> None:
    """The equivalence properties above would pass vacuously if every example were declined."""
    quantity = {"value": 900, "unit": "ng/mL", "system": "http://unitsofmeasure.org", "code": "ng/mL"}
    plain = [
        {
            "resourceType": "Observation",
            "id": "o-1",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2276-4"}]},
            "effectiveDateTime": "2026-11-20T10:00:00Z",
            "valueQuantity": quantity,
        }
    ]
    assert same_evaluation(
        {"observations": {"resourceType": "Bundle", "entry": [{"resource": o} for o in plain]}}
    )


def _ferritin(**elements: Any) -> dict[str, Any]:
    quantity = {"value": 900, "unit": "ng/mL", "system": "http://unitsofmeasure.org", "code": "ng/mL"}
    return {
        "resourceType": "Observation",
        "id": f"o-{len(elements)}-{sorted(elements)}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2276-4"}]},
        "effectiveDateTime": "2026-11-20T10:00:00Z",
        "valueQuantity": quantity,
        **elements,
    }


@pytest.mark.parametrize(
    "odd",
    [
        {"code": {"coding": "2276-4"}},  # coding not an array
        {"code": {"coding": [{"system": "http://loinc.org", "code": 2276}]}},  # code not a string
        {"referenceRange": {"low": {"value": 30}}},  # not an array
        {"referenceRange": [{"low": {"value": "30"}}]},  # value not a number
        {"referenceRange": [{"low": {"value": 30}}, {"high": {"value": 400}}]},  # two ranges
        {"referenceRange": []},
        {
            "code": {"text": "blood pressure panel"},
            "valueQuantity": None,
            "component": [{"code": {"coding": [{"system": 7}]}, "valueQuantity": {"value": 120}}],
        },
    ],
    ids=["coding-object", "code-number", "range-object", "range-text", "two-ranges", "no-ranges", "panel"],
)
def test_an_odd_code_or_range_is_read_the_general_way_for_that_observation_only(odd: dict[str, Any]) -> None:
    """Codes and ranges are type-checked when first read, not while decoding: the request still takes
    the fast path, the odd Observation is read the lenient way, and the result is the general path's."""
    items = [_ferritin(), {k: v for k, v in _ferritin(**odd).items() if v is not None}]
    prefetch = {"observations": {"resourceType": "Bundle", "entry": [{"resource": o} for o in items]}}
    assert typed_request.decode(body_of(prefetch)) is not None
    assert same_evaluation(prefetch) is True


def test_shared_lookups_keep_bytes_not_views_of_the_request() -> None:
    """Codes and ranges are remembered across hooks by a copy of their bytes: a cache entry must not
    hold a view (msgspec.Raw) that would keep a whole request body alive."""
    document = typed_request.decode(
        body_of({"observations": _ferritin(referenceRange=[{"high": {"value": 400}}])})
    )
    assert document is not None
    normalizer = ObservationNormalizer(load_knowledge())
    labs = normalizer.normalize([document["prefetch"]["observations"]])
    assert labs["ferritin"][0].high == 400
    lookups = normalizer._lookups
    tables: tuple[Any, ...] = (lookups.concepts, *(r.ranges for r in lookups.recipes.values()))
    keys = [key for table in tables for key in table]
    assert keys and all(type(key) is bytes for key in keys)


def answer(tmp_path: Path, path: Path) -> tuple[int, Any]:
    # Pinned uuids and clock (comparable), at the instant of the scenario the hook fixtures come from: the
    # screening card speaks inside the risk window after the infusion (cards/templates.yaml `speak`).
    app = create_app(dev_config(tmp_path, CLOCK=lambda: HOOKS_AT))
    service = path.name.split(".")[1]
    response = app.test_client().post(
        f"/cds-services/{service}", data=path.read_bytes(), content_type="application/json"
    )
    return response.status_code, response.get_json()


@pytest.mark.parametrize("path", [p for p in HOOKS if "no-prefetch" not in p.name], ids=lambda p: p.stem)
def test_hook_fixtures_are_answered_identically_on_both_paths(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert typed_request.decode(path.read_bytes()) is not None  # the fixtures are the plain shape
    fast = answer(tmp_path / "fast", path)
    monkeypatch.setattr(typed_request, "decode", lambda body: None)
    slow = answer(tmp_path / "slow", path)
    assert fast[0] == 200
    if "screening.full-prefetch" in path.name:
        assert fast[1]["cards"]
    assert fast == slow
