"""Criterion labels and threshold texts state only numbers the data holds (engine.labels)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.engine import evaluate
from cds_service.engine.instruments.registry import IEC_HS, REGISTRY
from cds_service.engine.knowledge import Knowledge, load_knowledge
from cds_service.engine.labels import STANDALONE_NUMBER, fill
from cds_service.errors import DataFileError
from tests.engine_helpers import KB, criterion
from tests.fhir_builders import bundle, car_t, day, obs, patient

ROOT = Path(__file__).resolve().parents[1]


def _numbers(node: Any) -> Iterator[float]:
    if isinstance(node, bool):
        return
    if isinstance(node, int | float):
        yield float(node)
        if 0 < node < 1:
            yield round(float(node) * 100, 6)  # fractions are shown as percentages
    elif isinstance(node, str):
        yield from (float(n) for n in re.findall(r"\d+(?:\.\d+)?", node))  # e.g. unit 10*9/L
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _numbers(key)
            yield from _numbers(value)
    elif isinstance(node, list):
        yield float(len(node))
        for value in node:
            yield from _numbers(value)


def data_numbers(kb: Knowledge) -> set[float]:
    found = set(_numbers(kb.criteria)) | set(_numbers(kb.ctcae)) | set(_numbers(kb.engine_defaults))
    return {round(n, 6) for n in found}


def stated_numbers(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in STANDALONE_NUMBER.findall(text)]


def every_evaluation() -> Iterator[tuple[str, Any]]:
    for expected in sorted((ROOT / "fixtures" / "scenarios").glob("*.expected.json")):
        spec = json.loads(expected.read_text())
        bundle = json.loads((expected.parent / spec["bundle"]).read_text())
        yield spec["scenario"], evaluate(bundle, knowledge=KB, at=datetime.fromisoformat(spec["at"]))
    index = json.loads((ROOT / "fixtures" / "population" / "index.json").read_text())
    for row in index["patients"]:
        bundle = json.loads((ROOT / "fixtures" / "population" / row["file"]).read_text())
        yield row["id"], evaluate(bundle, knowledge=KB, at=datetime.fromisoformat(row["at"]))


def test_no_label_states_a_number_the_data_does_not_hold() -> None:
    allowed = data_numbers(KB)
    seen = 0
    for name, result in every_evaluation():
        for instrument in REGISTRY:
            for c in result.instruments[instrument.id].criteria:
                for text in (c.label, c.threshold or ""):
                    for value in stated_numbers(text):
                        seen += 1
                        assert round(value, 6) in allowed, f"{name} {instrument.id}.{c.id}: {text!r}"
    assert seen > 50  # the check looked at real numbers


def test_the_check_catches_a_number_written_into_prose() -> None:
    assert stated_numbers("Hypofibrinogenemia (< 150 mg/dL or < LLN)") == [150.0]
    assert stated_numbers("SpO2, CD25, HLH-2004, D89.83x, 10*9/L") == []
    assert stated_numbers("> 10,000 ng/mL") == [10000.0]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    directory = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", directory)
    return directory


def _edit(path: Path, change: Any) -> None:
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def test_editing_a_threshold_changes_its_label(site: Path) -> None:
    def lower(doc: dict[str, Any]) -> None:
        doc["most_common"]["hypofibrinogenemia"]["threshold"]["value"] = 140

    _edit(site / "criteria" / "iec_hs.yaml", lower)
    data = bundle(patient(), car_t(), obs("3255-7", 120, "mg/dL", day(12)))
    site_result = evaluate(data, knowledge=load_knowledge(site), at=day(13))
    edited = criterion(IEC_HS.result(site_result.instruments).criteria, "hypofibrinogenemia")
    assert edited.label == "Hypofibrinogenemia (< 140 mg/dL or < LLN)"
    default = criterion(
        IEC_HS.result(evaluate(data, knowledge=KB, at=day(13)).instruments).criteria, edited.id
    )
    assert default.label == "Hypofibrinogenemia (< 150 mg/dL or < LLN)"


def test_a_number_in_a_template_fails_at_load(site: Path) -> None:
    def prose(doc: dict[str, Any]) -> None:
        doc["labels"]["hypofibrinogenemia"] = "Hypofibrinogenemia (< 150 mg/dL or < LLN)"

    _edit(site / "criteria" / "iec_hs.yaml", prose)
    with pytest.raises(DataFileError) as info:
        load_knowledge(site)
    assert "labels.hypofibrinogenemia" in str(info.value) and "150" in str(info.value)


def test_a_placeholder_naming_no_data_fails_at_load(site: Path) -> None:
    def wrong(doc: dict[str, Any]) -> None:
        doc["labels"]["ldh"] = "LDH {most_common.ldh_typo}"

    _edit(site / "criteria" / "iec_hs.yaml", wrong)
    with pytest.raises(DataFileError, match="placeholder names no data"):
        load_knowledge(site)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{t}", "< 150 mg/dL"),
        ("{t|value}", "150"),
        ("{t|op}", "<"),
        ("{m}", "≥ 1.5"),
        ("{big}", "> 100,000 ug/L"),
        ("{days}", "0-5"),
        ("{f|percent}", "25%"),
        ("{counts.2}", "24"),
        ("{lineages|count}", "3"),
    ],
)
def test_placeholders_render_the_data(template: str, expected: str) -> None:
    doc = {
        "t": {"op": "<", "value": 150, "unit": "mg/dL"},
        "m": {"op": ">=", "value": 1.5},
        "big": {"op": ">", "value": 100000, "unit": "ug/L"},
        "days": [0, 5],
        "f": 0.25,
        "counts": {2: 24, 3: 34},
        "lineages": {"a": 1, "b": 2, "c": 3},
    }
    assert fill(template, doc) == expected
