"""The synthetic FHIR fixtures: reproducible, valid-looking R4, coded as the mappings expect.

Checks that regenerating gives the checked-in bytes, that every Bundle is a PUT transaction of valid
R4 resources (sampled through ``fhir.resources.R4B``), that ids are unique, that every code is one the
engine's terminology data (``mappings/``) knows, that every expected file is consistent with its
scenario, and that the benchmark generator hits its Observation targets.
"""

from __future__ import annotations

import importlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.gen import as_batch, generate_course, split_transaction
from fixtures.gen import terminology as term
from fixtures.gen.facts import parse, summarize
from fixtures.gen.scenarios import SCENARIOS
from fixtures.gen.units import LOINC_TO_ANALYTE, unit_to_canonical
from fixtures.generate import FIXTURES_DIR, generate

REPO = Path(__file__).resolve().parents[1]
MAPPINGS = REPO / "mappings"
SCENARIO_DIR = FIXTURES_DIR / "scenarios"
POPULATION_DIR = FIXTURES_DIR / "population"
RAW_SCENARIO_DIR = FIXTURES_DIR / "scenarios-raw"
RAW_POPULATION_DIR = FIXTURES_DIR / "population-raw"
SUBDIRS = ("scenarios", "scenarios-raw", "population", "population-raw", "hooks")
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
Resource = dict[str, Any]


def bundle_paths(raw: bool = True) -> list[Path]:
    """Every Bundle; ``raw=False``: the coded ones only (a twin's values are its original's, which
    tests/test_fixtures_raw.py checks, so value-level checks need not read them twice)."""
    out: list[Path] = []
    for directory in (SCENARIO_DIR, RAW_SCENARIO_DIR) if raw else (SCENARIO_DIR,):
        out += sorted(p for p in directory.glob("*.json") if not p.name.endswith(".expected.json"))
    for directory in (POPULATION_DIR, RAW_POPULATION_DIR) if raw else (POPULATION_DIR,):
        out += sorted(directory.glob("patient-*.json"))
    return out


@cache
def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@cache
def mapping(name: str) -> Any:
    return yaml.safe_load((MAPPINGS / name).read_text(encoding="utf-8"))


def resources(path: Path) -> list[Resource]:
    return [e["resource"] for e in load(path)["entry"]]


def all_resources() -> Iterator[tuple[Path, Resource]]:
    for path in bundle_paths():
        for r in resources(path):
            yield path, r


BUNDLES = [pytest.param(p, id=f"{p.parent.name}/{p.name}") for p in bundle_paths()]
CODED_BUNDLES = [pytest.param(p, id=f"{p.parent.name}/{p.name}") for p in bundle_paths(raw=False)]
SCENARIO_NAMES = [s.name for s in SCENARIOS]
# Every expected file: (directory, name) of the coded scenarios and of their raw-only twins.
EXPECTED = [(SCENARIO_DIR, n) for n in SCENARIO_NAMES] + [
    (RAW_SCENARIO_DIR, f"{n}-raw") for n in SCENARIO_NAMES
]
EXPECTED_IDS = [n for _, n in EXPECTED]


# -- reproducibility ----------------------------------------------------------------------------
def test_regeneration_is_byte_identical(tmp_path: Path) -> None:
    written = generate(tmp_path)
    produced = {p.relative_to(tmp_path) for p in written}
    checked_in = {
        p.relative_to(FIXTURES_DIR)
        for sub in SUBDIRS
        for pattern in ("*.json", "*.csv")
        for p in (FIXTURES_DIR / sub).glob(pattern)
    }
    assert produced == checked_in, "run `python -m fixtures.generate` (stale or missing files)"
    different = [
        str(rel)
        for rel in sorted(produced)
        if (tmp_path / rel).read_bytes() != (FIXTURES_DIR / rel).read_bytes()
    ]
    assert not different, f"checked-in fixtures differ from the generator: {different}"


def test_benchmark_courses_are_reproducible() -> None:
    assert generate_course(7, 300) == generate_course(7, 300)
    assert generate_course(7, 300) != generate_course(8, 300)


# -- bundle shape ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", BUNDLES)
def test_bundle_is_a_put_transaction_for_one_patient(path: Path) -> None:
    b = load(path)
    assert b["resourceType"] == "Bundle" and b["type"] == "transaction"
    assert TIMESTAMP.match(b["timestamp"])
    entries = b["entry"]
    first = entries[0]["resource"]
    assert first["resourceType"] == "Patient"
    pid = first["id"]
    assert first["name"][0]["family"].startswith("Testpatient-")
    assert first["identifier"][0]["system"].startswith("https://fixtures.example.org/")
    for e in entries:
        r = e["resource"]
        url = f"{r['resourceType']}/{r['id']}"
        assert e["request"] == {"method": "PUT", "url": url}
        assert e["fullUrl"] == f"https://fixtures.example.org/fhir/{url}"
        assert r["id"].startswith(pid) and len(r["id"]) <= 64
        assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", r["id"])
        if r["resourceType"] != "Patient":
            assert r["subject"] == {"reference": f"Patient/{pid}"}
    assert "urn:uuid:" not in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", CODED_BUNDLES)
def test_timestamps_share_one_format(path: Path) -> None:
    keys = (
        "effectiveDateTime",
        "issued",
        "onsetDateTime",
        "abatementDateTime",
        "recordedDate",
        "performedDateTime",
    )
    for r in resources(path):
        for key in keys:
            if key in r:
                assert TIMESTAMP.match(r[key]), (r["id"], key, r[key])
        for key in ("effectivePeriod", "performedPeriod"):
            for v in r.get(key, {}).values():
                assert TIMESTAMP.match(v), (r["id"], key, v)


def _empty_or_null(value: Any, path: str) -> Iterator[str]:
    if value is None or value == [] or value == {} or value == "":
        yield path
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _empty_or_null(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _empty_or_null(v, f"{path}[{i}]")


@pytest.mark.parametrize("path", CODED_BUNDLES)
def test_no_empty_or_null_json_values(path: Path) -> None:
    """FHIR JSON never has null, empty strings, empty arrays or empty objects."""
    bad = list(_empty_or_null(load(path), path.name))
    assert not bad, bad[:5]


def _model(resource_type: str) -> Any:
    module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
    return getattr(module, resource_type)


@pytest.mark.parametrize("path", CODED_BUNDLES)
def test_sampled_resources_validate_as_fhir_r4(path: Path) -> None:
    by_type: dict[str, list[Resource]] = {}
    for r in resources(path):
        by_type.setdefault(r["resourceType"], []).append(r)
    for rtype, items in by_type.items():
        step = max(1, len(items) // 40)
        sample = items[::step] + items[-3:]
        if rtype != "Observation":
            sample = items
        for r in sample:
            _model(rtype).model_validate(r)


def test_whole_bundles_validate_as_fhir_r4() -> None:
    bundle_model = _model("Bundle")
    for name in ("classic-iec-hs", "messy-data", "pediatric-ball", "active-crs-grade-3"):
        bundle_model.model_validate(load(SCENARIO_DIR / f"{name}.json"))
    for name in ("crs-inferred-then-iec-hs-raw", "late-bcma-raw"):
        bundle_model.model_validate(load(RAW_SCENARIO_DIR / f"{name}.json"))
    bundle_model.model_validate(load(RAW_POPULATION_DIR / "patient-11.json"))


def test_ids_are_unique_across_files() -> None:
    owner: dict[str, str] = {}
    for path in bundle_paths():
        seen: dict[str, Resource] = {}
        for r in resources(path):
            key = f"{r['resourceType']}/{r['id']}"
            if key in seen:
                # Only the deliberate exact-duplicate trap may repeat an id, and byte-identically.
                assert seen[key] == r, f"{path.name}: {key} repeated with different content"
                continue
            seen[key] = r
            assert owner.setdefault(key, path.name) == path.name, f"{key} in {owner[key]} and {path.name}"


# -- codes match the engine's terminology data -------------------------------------------------
def _analyte_codes() -> set[str]:
    data = mapping("analytes.yaml")
    return {c["code"] for a in data["analytes"].values() for c in a["codes"]}


BP_PANEL = "85354-9"


def _row_codes() -> set[tuple[str, str]]:
    """Codes of flowsheet rows that are not measurements: oxygen device and documented grades."""
    oxygen = mapping("oxygen_support.yaml")["observation_codes"]
    documented = [c for rows in mapping("site_flowsheets.yaml")["documented"].values() for c in rows]
    return {(c["system"], c["code"]) for c in [*oxygen, *documented]}


def test_every_observation_code_is_in_analytes_yaml() -> None:
    """Every coded value maps to an analyte; the BP panel code is allowed as a carrier of components;
    device and documented-grade rows use the codes of oxygen_support.yaml and site_flowsheets.yaml."""
    known = _analyte_codes()
    rows = _row_codes()
    unknown: Counter[str] = Counter()
    for _, r in all_resources():
        if r["resourceType"] != "Observation":
            continue
        codings = list(r["code"]["coding"])
        if (codings[0]["system"], codings[0]["code"]) in rows:
            continue
        for c in codings:
            assert c["system"] == LOINC
        if codings[0]["code"] == BP_PANEL:
            assert "valueQuantity" not in r and len(r["component"]) == 2
            codings = [c for comp in r["component"] for c in comp["code"]["coding"]]
        for c in codings:
            assert c["system"] == LOINC
            if c["code"] not in known:
                unknown[c["code"]] += 1
    assert not unknown, f"LOINC codes missing from mappings/analytes.yaml: {dict(unknown)}"


def test_observation_units_and_categories() -> None:
    analytes = mapping("analytes.yaml")["analytes"]
    for _, r in all_resources():
        if r["resourceType"] != "Observation":
            continue
        cat = r["category"][0]["coding"][0]
        assert cat["system"] == "http://terminology.hl7.org/CodeSystem/observation-category"
        assert cat["code"] in ("laboratory", "vital-signs", "survey")
        if "valueCodeableConcept" in r or "valueInteger" in r:
            continue  # device and documented-grade rows: test_flowsheet_rows_use_mapping_codes
        q = r.get("valueQuantity")
        if q is None:
            assert "component" in r or r["status"] == "cancelled"
            continue
        assert q["system"] == "http://unitsofmeasure.org"
        code = r["code"]["coding"][0]["code"]
        assert any(code in {c["code"] for c in a["codes"]} for a in analytes.values())
        if "-dq-" not in r["id"]:
            analyte = LOINC_TO_ANALYTE[code]
            assert code in {c["code"] for c in analytes[analyte]["codes"]}
            assert unit_to_canonical(analyte, q["code"]) is not None, (r["id"], q["code"])
            for rr in r.get("referenceRange", []):
                for bound in rr.values():
                    assert bound["code"] == q["code"]


def test_medications_procedures_and_conditions_use_mapping_codes() -> None:
    therapies = mapping("therapies.yaml")
    meds = mapping("medications.yaml")["classes"]
    procs = mapping("procedures.yaml")["kinds"]
    crs_codes = set(mapping("conditions.yaml")["crs"]["codes"])
    product_rx = {c["code"] for p in therapies["products"] for c in p["rxnorm"]}
    product_names = [n for p in therapies["products"] for n in p["names"]]
    drug_rx = {c["code"] for m in meds.values() for c in m["rxnorm"]}
    proc_codes = {c["code"] for k in procs.values() for c in k["codes"]}
    proc_codes |= {p["code"] for p in therapies["procedures"]}
    for _, r in all_resources():
        if r["resourceType"] == "MedicationAdministration":
            med = r["medicationCodeableConcept"]
            if "effectivePeriod" in r:  # an infusion row: in progress (no end) or completed
                assert r["status"] == ("completed" if "end" in r["effectivePeriod"] else "in-progress")
            else:
                assert r["status"] == "completed" and TIMESTAMP.match(r["effectiveDateTime"])
            for c in med.get("coding", []):
                assert c["system"] == RXNORM and c["code"] in product_rx | drug_rx, c
            text = med["text"].lower()
            if any(c["code"] in drug_rx for c in med.get("coding", [])):
                klass = next(
                    m for m in meds.values() if med["coding"][0]["code"] in {c["code"] for c in m["rxnorm"]}
                )
                assert any(name in text for name in klass["names"]), text
            if any(c["code"] in product_rx for c in med.get("coding", [])):
                assert any(name in text for name in product_names), text
        elif r["resourceType"] == "Procedure":
            for c in r["code"]["coding"]:
                assert c["code"] in proc_codes, c
        elif r["resourceType"] == "Condition" and r["code"]["coding"][0]["code"].startswith("D89.83"):
            assert r["code"]["coding"][0]["code"] in crs_codes
            assert r["code"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-10-cm"
            if "abatementDateTime" in r:
                assert r["clinicalStatus"]["coding"][0]["code"] == "resolved"


def test_generator_terminology_is_copied_from_mappings() -> None:
    """Every code in fixtures/gen/terminology.py that the engine must know is in mappings/."""
    meds = mapping("medications.yaml")["classes"]
    for drug in term.DRUGS.values():
        if drug.rxnorm:
            klass = next(m for m in meds.values() if drug.rxnorm in {c["code"] for c in m["rxnorm"]})
            assert any(name in drug.text for name in klass["names"]), drug
    levels = mapping("oxygen_support.yaml")["levels"]
    assert [(c["system"], c["code"]) for c in mapping("oxygen_support.yaml")["observation_codes"]] == [
        (term.LOINC, term.OXYGEN_DELIVERY[0])
    ]
    for device in term.OXYGEN_DEVICES.values():
        level = levels[device.level]
        assert level["grade"] == device.grade
        if device.code:
            assert {"system": term.SNOMED, "code": device.code} in [
                {"system": c["system"], "code": c["code"]} for c in level["codes"]
            ]
        assert any(p in device.text.lower() for p in level["text_patterns"]), device
    documented = mapping("site_flowsheets.yaml")["documented"]
    for kind, (code, _) in term.FLOWSHEET_ROWS.items():
        assert (term.FLOWSHEET_SYSTEM, code) in {(c["system"], c["code"]) for c in documented[kind]}
    conditions = mapping("conditions.yaml")
    coded = {(c["system"], c["code"]) for f in conditions["findings"].values() for c in f["codes"]}
    coded |= {(conditions["crs"]["system"], code) for code in conditions["crs"]["codes"]}
    assert term.CODED_FINDINGS <= coded
    procs = {c["code"] for k in mapping("procedures.yaml")["kinds"].values() for c in k["codes"]}
    assert {p.code for p in term.PROCEDURES.values()} <= procs


def test_flowsheet_rows_use_mapping_codes() -> None:
    """Device rows name a device of oxygen_support.yaml (code or a text its patterns match); documented
    rows carry an integer in range."""
    levels = mapping("oxygen_support.yaml")["levels"]
    device_codes = {(c["system"], c["code"]): name for name, lv in levels.items() for c in lv["codes"]}
    documented = {
        (c["system"], c["code"]): kind
        for kind, rows in mapping("site_flowsheets.yaml")["documented"].items()
        for c in rows
    }
    seen: Counter[str] = Counter()
    for _, r in all_resources():
        if r["resourceType"] != "Observation":
            continue
        coding = r["code"]["coding"][0]
        key = (coding["system"], coding["code"])
        if coding["code"] == "107117-4":
            concept = r["valueCodeableConcept"]
            text = concept["text"].lower()
            matched = [n for n, lv in levels.items() if any(p in text for p in lv["text_patterns"])]
            assert matched, text
            for c in concept.get("coding", []):
                name = device_codes[(c["system"], c["code"])]
                # the text's highest level is the code's level (oxygen_support.yaml: highest wins)
                assert max(matched, key=lambda n: levels[n]["grade"]) == name, (text, name)
            seen["device"] += 1
        elif key in documented:
            kind = documented[key]
            assert r["category"][0]["coding"][0]["code"] == "survey"
            assert 0 <= r["valueInteger"] <= (10 if kind == "ice_score" else 4), r["id"]
            seen[kind] += 1
    assert set(seen) == {"device", "crs_grade", "icans_grade", "ice_score"}


# -- expected files --------------------------------------------------------------------------------
@pytest.mark.parametrize(("directory", "name"), EXPECTED, ids=EXPECTED_IDS)
def test_expected_file_matches_its_scenario(directory: Path, name: str) -> None:
    doc = load(directory / f"{name}.expected.json")
    bundle_path = directory / doc["bundle"]
    assert doc["scenario"] == name and bundle_path.exists()
    at = parse(doc["at"])
    assert load(bundle_path)["timestamp"] == doc["at"]
    assert doc["patient"] == f"Patient/{resources(bundle_path)[0]['id']}"
    assert doc["expect"], "an expected file must assert something"
    for key in doc["expect"]:
        assert key.startswith("therapy.") or key in doc["why"], f"no explanation for {key}"
    trap_ids = {t["id"] for t in doc.get("traps", []) if t["kind"] == "future"}
    for r in resources(bundle_path):
        moment = r.get("effectiveDateTime") or r.get("performedDateTime")
        if moment and r["id"] not in trap_ids:
            assert parse(moment) <= at, f"{r['id']} is after `at`"


def _schema_node(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in path.split("."):
        if node is None:
            return None
        many = part.endswith("[]")
        node = node.get("properties", {}).get(part.removesuffix("[]"))
        if node is not None and "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        if many and node is not None:
            node = node.get("items")
    return node


@pytest.mark.parametrize(("directory", "name"), EXPECTED, ids=EXPECTED_IDS)
def test_expect_keys_are_paths_of_the_evaluation_schema(directory: Path, name: str) -> None:
    """Keys resolve in cds_service/schemas/evaluation.schema.json (read as data, not imported)."""
    schema_path = REPO / "cds_service" / "schemas" / "evaluation.schema.json"
    assert schema_path.exists(), "cds_service/schemas/evaluation.schema.json is the documented output"
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    doc = load(directory / f"{name}.expected.json")
    for key, value in doc["expect"].items():
        path, _, op = key.partition(" ")
        assert op in ("", ">=", "<", "includes", "excludes"), key
        assert _schema_node(schema, path) is not None, f"{key} is not a path of the evaluation result"
        if op in (">=", "<"):
            assert isinstance(value, int | float)
        if op in ("includes", "excludes"):
            assert isinstance(value, list)


@pytest.mark.parametrize(("directory", "suffix"), [(SCENARIO_DIR, ""), (RAW_SCENARIO_DIR, "-raw")])
def test_every_scenario_bundle_has_an_expected_file(directory: Path, suffix: str) -> None:
    bundles = {p.name for p in directory.glob("*.json") if not p.name.endswith(".expected.json")}
    expected = {p.name.replace(".expected", "") for p in directory.glob("*.expected.json")}
    assert bundles == expected == {f"{n}{suffix}.json" for n in SCENARIO_NAMES}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=SCENARIO_NAMES)
@pytest.mark.parametrize(("directory", "suffix"), [(SCENARIO_DIR, ""), (RAW_SCENARIO_DIR, "-raw")])
def test_expectation_premises_hold_in_checked_in_data(scenario: Any, directory: Path, suffix: str) -> None:
    name = f"{scenario.name}{suffix}"
    doc = load(directory / f"{name}.expected.json")
    facts = summarize(resources(directory / f"{name}.json"), parse(doc["at"]))
    expected_why = dict(doc["why"])
    if suffix:
        assert expected_why.pop("raw twin").startswith(f"raw-only twin of {scenario.name}:")
    assert scenario.check(facts, scenario.spec) == expected_why


def test_messy_data_traps_are_in_the_bundle() -> None:
    doc = load(SCENARIO_DIR / "messy-data.expected.json")
    items = resources(SCENARIO_DIR / "messy-data.json")
    ids = Counter(r["id"] for r in items)
    kinds = {t["kind"] for t in doc["traps"]}
    assert {
        "entered-in-error",
        "cancelled",
        "exact-duplicate",
        "duplicate-different-id",
        "preliminary",
        "comparator",
        "effective-period",
        "issued-only",
        "unit-lowercase",
        "future",
        "unit-badunit",
        "unit-molar",
    } <= kinds
    for t in doc["traps"]:
        assert t["id"] in ids
    dup = next(t for t in doc["traps"] if t["kind"] == "exact-duplicate")
    assert ids[dup["id"]] == 2
    eie = next(r for r in items if r["id"].endswith("-dq-ferritin-eie"))
    assert eie["status"] == "entered-in-error" and eie["valueQuantity"]["value"] == 900000


def test_si_units_is_classic_in_other_units() -> None:
    classic = summarize(resources(SCENARIO_DIR / "classic-iec-hs.json"), parse("2026-03-15T20:00:00Z"))
    si = summarize(resources(SCENARIO_DIR / "si-units.json"), parse("2026-03-15T20:00:00Z"))
    si_units = {
        r["valueQuantity"]["code"]
        for r in resources(SCENARIO_DIR / "si-units.json")
        if r["resourceType"] == "Observation" and r["category"][0]["coding"][0]["code"] == "laboratory"
    }
    assert not si_units & {"mg/dL", "ng/mL", "10*3/uL", "g/dL", "U/L"}
    assert set(classic.values) == set(si.values)
    for analyte, series in classic.values.items():
        other = si.values[analyte]
        assert len(series) == len(other)
        for a, b in zip(series, other, strict=True):
            assert a.time == b.time
            assert b.value == pytest.approx(a.value, rel=0.03, abs=0.6), analyte


# -- population --------------------------------------------------------------------------------------
@pytest.mark.parametrize("directory", [POPULATION_DIR, RAW_POPULATION_DIR], ids=["coded", "raw"])
def test_population_index_describes_every_patient(directory: Path) -> None:
    index = load(directory / "index.json")
    patients = index["patients"]
    assert len(patients) >= 39
    assert {p["file"] for p in patients} == {p.name for p in directory.glob("patient-*.json")}
    assert sum(p["ageYears"] < 18 for p in patients) >= 3
    assert {p["target"] for p in patients} >= {"CD19", "BCMA"}
    assert {p["course"] for p in patients} == set(index["courseTypes"])
    assert {p["hard"] for p in patients} - {None} == set(index["hardVariants"])
    assert {p["iecHs"]["grade"] for p in patients if p["iecHs"]} == {1, 2, 3, 4}
    assert {p["therapyCoding"] for p in patients} == {"medication", "procedure"}
    assert len({p["unitSystem"] for p in patients}) >= 3
    assert any(p["dataQuality"] for p in patients)
    for p in patients:
        items = resources(directory / p["file"])
        assert items[0]["id"] == p["id"]
        assert p["resourceCount"] == len(items)
        assert len(items) < 1500


@pytest.mark.parametrize("directory", [POPULATION_DIR, RAW_POPULATION_DIR], ids=["coded", "raw"])
def test_labels_csv_lists_every_iec_hs_patient(directory: Path) -> None:
    lines = (directory / "labels.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "patientId,onset,grade"
    rows = [line.split(",") for line in lines[1:]]
    patients = load(directory / "index.json")["patients"]
    expected = [[p["id"], p["iecHs"]["onset"], str(p["iecHs"]["grade"])] for p in patients if p["iecHs"]]
    assert rows == expected and len(rows) >= 18
    for _, onset, _ in rows:
        assert TIMESTAMP.match(onset)


def test_fixture_sizes_stay_reasonable() -> None:
    """The four data folders stay within the CI budget (the raw twins roughly double the coded data)."""
    subs = ("scenarios", "scenarios-raw", "population", "population-raw")
    files = [p for sub in subs for p in (FIXTURES_DIR / sub).glob("*.json")]
    assert sum(p.stat().st_size for p in files) < 100_000_000


# -- library API for loaders and benchmarks ---------------------------------------------------------
@pytest.mark.parametrize("target", [100, 1_000, 3_000, 10_000])
def test_generate_course_hits_the_observation_target(target: int) -> None:
    items = generate_course(11, target)
    assert sum(r["resourceType"] == "Observation" for r in items) == target
    assert items[0]["resourceType"] == "Patient"
    assert len({(r["resourceType"], r["id"]) for r in items}) == len(items)


def test_generate_course_without_target_is_a_plain_course() -> None:
    items = generate_course(3)
    assert {r["resourceType"] for r in items} >= {"Patient", "Condition", "Observation"}


def test_as_batch_and_split_transaction() -> None:
    b = load(SCENARIO_DIR / "crs-only-early.json")
    batch = as_batch(b)
    assert batch["type"] == "batch" and b["type"] == "transaction"
    assert batch["entry"] == b["entry"]
    parts = split_transaction(b, 50)
    assert all(p["type"] == "transaction" and len(p["entry"]) <= 50 for p in parts)
    assert [e for p in parts for e in p["entry"]] == b["entry"]
    assert len({p["id"] for p in parts}) == len(parts)
