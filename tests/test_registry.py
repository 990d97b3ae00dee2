"""The instrument registry is the one list of instruments: data files, schema and outputs follow it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from cds_service.engine.instruments.registry import REGISTRY, by_id, title_of
from cds_service.engine.knowledge import NOT_INSTRUMENTS
from cds_service.engine.report import text_report
from cds_service.engine.schema import FRAGMENTS, evaluation_schema, main
from cds_service.engine.serialize import to_jsonable
from tests.engine_helpers import KB, run
from tests.fhir_builders import car_t, day, obs

MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"


def test_ids_and_keys_are_unique() -> None:
    assert len({i.id for i in REGISTRY}) == len(REGISTRY)
    assert len({i.key for i in REGISTRY}) == len(REGISTRY)
    assert by_id("hscore").key == "hscore"


def test_every_criteria_file_is_registered_and_every_instrument_has_one() -> None:
    files = {p.stem for p in (MAPPINGS / "criteria").glob("*.yaml")} - NOT_INSTRUMENTS
    assert files == {i.id for i in REGISTRY}
    for instrument in REGISTRY:
        assert instrument.title(KB) and instrument.version(KB)
        assert instrument.citation(KB) in KB.citations


def test_every_instrument_has_a_result_schema_and_no_fragment_is_orphaned() -> None:
    assert {p.name.removesuffix(".schema.json") for p in FRAGMENTS.glob("*.schema.json")} == {
        i.key for i in REGISTRY
    }


def test_the_checked_in_evaluation_schema_is_current() -> None:
    assert main(["--check"]) == 0


def test_outputs_list_every_registered_instrument_in_registry_order() -> None:
    result = run(car_t(), obs("2276-4", 9000, "ng/mL", day(12)))
    document = to_jsonable(result)
    assert list(document["instruments"]) == [i.key for i in REGISTRY]
    jsonschema.validate(document, evaluation_schema())
    report = text_report(result, KB)
    positions = [report.index(f"\n{i.title(KB)}: ") for i in REGISTRY]
    assert positions == sorted(positions)
    for key in {key for m in document["missingData"] for key in m["neededBy"]}:
        assert title_of(KB, key) != key  # every needed-by key names a registered instrument


def test_unverified_notes_come_from_the_data_files() -> None:
    result = run(car_t(), obs("2276-4", 9000, "ng/mL", day(12)))
    notes = [i.unverified_note(KB, result.instruments) for i in REGISTRY]
    for instrument, note in zip(REGISTRY, notes, strict=True):
        if note is not None:
            assert note == KB.criteria[instrument.id]["unverified_note"]
            assert note in result.unverified
    assert json.dumps(result.unverified)  # plain strings
