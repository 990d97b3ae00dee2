"""Bulk FHIR exports (python -m fixtures.generate --export): NDJSON per resource type, a Bulk Data
manifest, labels; valid R4, references resolved within the export, labels matching the index,
gzip and multi-file output, deterministic for a seed."""

from __future__ import annotations

import gzip
import importlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fixtures.gen.cohort import DEFAULT_MIX, Cohort, parse_mix, profile_for
from fixtures.gen.export import TYPES, export
from fixtures.generate import FIXTURES_DIR, main

Resource = dict[str, Any]


def lines_of(path: Path) -> list[str]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode("utf-8").splitlines()


def read_export(directory: Path) -> tuple[dict[str, Any], dict[str, list[Resource]]]:
    """(manifest, resources by type) of an export folder, checking each file against the manifest."""
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    by_type: dict[str, list[Resource]] = {}
    for out in manifest["output"]:
        name = out["url"].rsplit("/", 1)[-1]
        lines = lines_of(directory / name)
        assert len(lines) == out["count"] and name.startswith(f"{out['type']}.")
        items = [json.loads(line) for line in lines]
        assert all(r["resourceType"] == out["type"] for r in items)
        by_type.setdefault(out["type"], []).extend(items)
    return manifest, by_type


def _model(resource_type: str) -> Any:
    module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
    return getattr(module, resource_type)


@pytest.fixture(scope="module")
def population_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("population")
    export(directory)
    return directory


def test_population_export_round_trips(population_export: Path) -> None:
    manifest, by_type = read_export(population_export)
    assert manifest["requiresAccessToken"] is False and manifest["error"] == []
    assert manifest["request"].endswith("/Patient/$export?_type=" + ",".join(TYPES))
    assert [o["type"] for o in manifest["output"]] == list(TYPES)
    assert {p.name for p in population_export.glob("*.ndjson")} == {f"{t}.ndjson" for t in TYPES}
    index = json.loads((FIXTURES_DIR / "population" / "index.json").read_text(encoding="utf-8"))
    entries = [json.loads(line) for line in lines_of(population_export / "index.jsonl")]
    assert entries == index["patients"]
    assert manifest["transactionTime"] == max(e["at"] for e in entries)
    labels = (FIXTURES_DIR / "population" / "labels.csv").read_text(encoding="utf-8")
    assert (population_export / "labels.csv").read_text(encoding="utf-8") == labels
    patients = {r["id"] for r in by_type["Patient"]}
    assert patients == {e["id"] for e in entries}
    ids: Counter[tuple[str, str]] = Counter()
    for rtype, items in by_type.items():
        for r in items:
            ids[(rtype, r["id"])] += 1
            for ref in (r.get("subject"), *r.get("performer", [])):
                if ref is not None:
                    assert ref["reference"].removeprefix("Patient/") in patients, r["id"]
    assert max(ids.values()) == 1, "an export has each resource once"


def test_population_export_resources_are_the_bundles(population_export: Path) -> None:
    _, by_type = read_export(population_export)
    exported = {(r["resourceType"], r["id"]): r for items in by_type.values() for r in items}
    for path in sorted((FIXTURES_DIR / "population").glob("patient-*.json")):
        bundle = json.loads(path.read_text(encoding="utf-8"))
        for e in bundle["entry"]:
            r = e["resource"]
            assert exported[(r["resourceType"], r["id"])] == r


def test_raw_only_population_export_matches_the_raw_index(tmp_path: Path) -> None:
    export(tmp_path, raw_only=True, use_gzip=True)
    assert not list(tmp_path.glob("*.ndjson"))
    _, by_type = read_export(tmp_path)
    raw = FIXTURES_DIR / "population-raw"
    assert (tmp_path / "labels.csv").read_text() == (raw / "labels.csv").read_text()
    assert {r["id"] for r in by_type["Patient"]} == {
        p["id"] for p in json.loads((raw / "index.json").read_text())["patients"]
    }
    assert all(r["id"].endswith("-raw") or "-raw-" in r["id"] for r in by_type["Observation"])


def test_cohort_export_is_valid_fhir_r4_with_resolved_references(tmp_path: Path) -> None:
    export(tmp_path, cohort=Cohort(5, 8, DEFAULT_MIX))
    manifest, by_type = read_export(tmp_path)
    assert manifest["extension"]["patients"] == 8 and manifest["extension"]["seed"] == 5
    patients = {r["id"] for r in by_type["Patient"]}
    for rtype, items in by_type.items():
        model = _model(rtype)
        for r in items:
            model.model_validate(r)
            if rtype != "Patient":
                assert r["subject"]["reference"].removeprefix("Patient/") in patients
    assert all(r["meta"]["tag"][0]["code"] == "HTEST" for r in by_type["Patient"])
    entries = [json.loads(line) for line in lines_of(tmp_path / "index.jsonl")]
    rows = lines_of(tmp_path / "labels.csv")
    assert rows[0] == "patientId,onset,grade"
    assert rows[1:] == [
        f"{e['id']},{e['iecHs']['onset']},{e['iecHs']['grade']}" for e in entries if e["iecHs"]
    ]


def test_gzip_and_multi_file_output_hold_the_same_data(tmp_path: Path) -> None:
    cohort = Cohort(9, 6, DEFAULT_MIX)
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    export(plain, cohort=cohort)
    export(packed, cohort=cohort, use_gzip=True, max_per_file=700)
    manifest, by_type = read_export(packed)
    observations = [o for o in manifest["output"] if o["type"] == "Observation"]
    assert len(observations) > 1 and all(o["count"] <= 700 for o in observations)
    assert observations[0]["url"].endswith("Observation.000.ndjson.gz")
    assert read_export(plain)[1] == by_type


def test_export_is_deterministic_for_a_seed_and_jobs(tmp_path: Path) -> None:
    def files(directory: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}

    export(tmp_path / "a", cohort=Cohort(3, 5, DEFAULT_MIX), use_gzip=True)
    export(tmp_path / "b", cohort=Cohort(3, 5, DEFAULT_MIX), use_gzip=True, jobs=2)
    export(tmp_path / "c", cohort=Cohort(4, 5, DEFAULT_MIX), use_gzip=True)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert files(tmp_path / "a")["Patient.ndjson.gz"] != files(tmp_path / "c")["Patient.ndjson.gz"]


def test_the_mix_gives_realistic_incidence() -> None:
    cohort = Cohort(1, 20_000, DEFAULT_MIX)
    courses = Counter(profile_for(cohort, i)[1] for i in range(cohort.size))
    share = {k: v / cohort.size for k, v in courses.items()}
    assert 0.27 <= share["no-crs"] <= 0.33
    assert 0.62 <= share["crs-only"] <= 0.71
    iec = sum(v for k, v in share.items() if "iechs" in k)
    assert 0.025 <= iec <= 0.045
    assert parse_mix("no-crs=1,crs-only=3") == {"no-crs": 0.25, "crs-only": 0.75}
    with pytest.raises(ValueError, match="unknown stratum"):
        parse_mix("flu=1")


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--export", str(tmp_path), "--cohort", "3", "--seed", "2", "--jobs", "1"]) == 0
    assert "exported 3 patients" in capsys.readouterr().out
    assert (tmp_path / "manifest.json").exists() and (tmp_path / "labels.csv").exists()
    with pytest.raises(SystemExit):
        main(["--export", str(tmp_path), "--mix", "no-crs=1"])
    with pytest.raises(SystemExit):
        main(["--export", str(tmp_path), "--cohort", "0"])
