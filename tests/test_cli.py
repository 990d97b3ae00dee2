"""`cds-service evaluate`: JSON document conforming to the shipped schema, text report, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from cds_service.cli import main
from tests.engine_helpers import lab
from tests.fhir_builders import bundle, car_t, crs, day, patient

SCHEMA = json.loads((Path(__file__).parent.parent / "cds_service/schemas/evaluation.schema.json").read_text())


@pytest.fixture
def classic_file(tmp_path: Path) -> Path:
    data = bundle(
        patient(),
        car_t(),
        crs(2, day(1), day(5)),
        lab("ferritin", 300, "ng/mL", -1, high=300),
        lab("ferritin", 1500, "ng/mL", 3, high=300),  # the CRS peak
        lab("ferritin", 700, "ng/mL", 8, high=300),  # falling after CRS
        lab("ferritin", 21000, "ng/mL", 12, high=300),  # rising again: the IEC-HS signal
        lab("fibrinogen", 110, "mg/dL", 12),
    )
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(data))
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_matches_the_schema_and_has_the_documented_fields(
    classic_file: Path, capsys: Any
) -> None:
    code, out, _ = run_cli(
        capsys, "evaluate", str(classic_file), "--at", "2026-03-14T12:00:00Z", "--format", "json"
    )
    assert code == 0
    document = json.loads(out)
    Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(document)
    hscore = document["instruments"]["hscore"]
    assert {"score", "scoreMin", "scoreMax", "probability", "probabilityBand"} <= hscore.keys()
    assert 0 <= hscore["probability"] <= 1
    assert {"metCount", "unknownCount", "fulfilled"} <= document["instruments"]["hlh2004"].keys()
    assert "fulfilled" in document["instruments"]["cartox"]
    iec = document["instruments"]["iecHs"]
    assert (iec["status"], iec["grade"]) == ("met", 1)
    assert iec["gradeBasis"]
    assert all({"id", "status", "evidence"} <= c.keys() for c in iec["criteria"])
    assert document["therapy"]["dayPostInfusion"] == 13
    assert isinstance(document["missingData"], list)


def test_at_excludes_later_data(classic_file: Path, capsys: Any) -> None:
    code, out, _ = run_cli(
        capsys, "evaluate", str(classic_file), "--at", "2026-03-05T00:00:00Z", "--format", "json"
    )
    document = json.loads(out)
    assert code == 0
    assert document["therapy"]["dayPostInfusion"] == 4
    assert document["instruments"]["iecHs"]["status"] != "met"  # the day 12 values are not visible yet


def test_text_report(classic_file: Path, capsys: Any) -> None:
    code, out, _ = run_cli(capsys, "evaluate", str(classic_file), "--at", "2026-03-14T12:00:00Z")
    assert code == 0
    assert "ASTCT IEC-HS: met, grade 1" in out
    assert "HScore:" in out and "HLH-2004:" in out and "CARTOX: [strict window]" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ('{"resourceType": "Patient", "id": "x"}', "not a FHIR Bundle"),
        ("[1, 2]", "not a FHIR Bundle"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: Any, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, out, err = run_cli(capsys, "evaluate", str(path))
    assert code == 2
    assert out == ""
    assert message in err and err.count("\n") == 1


def test_missing_file_exits_2(capsys: Any) -> None:
    code, _, err = run_cli(capsys, "evaluate", "/nonexistent/bundle.json")
    assert code == 2 and "cannot read" in err


def test_console_script_is_installed(classic_file: Path) -> None:
    exe = Path(sys.executable).parent / "cds-service"
    done = subprocess.run(
        [str(exe), "evaluate", str(classic_file), "--format", "json", "--at", "2026-03-14T12:00:00Z"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["instruments"]["iecHs"]["status"] == "met"
    bad = subprocess.run(
        [str(exe), "evaluate", "--help"], capture_output=True, text=True, check=False, timeout=60
    )
    assert "--at" in bad.stdout


def test_a_course_is_json_lines_one_document_per_instant(classic_file: Path, capsys: Any) -> None:
    code, out, _ = run_cli(
        capsys,
        "evaluate",
        str(classic_file),
        "--format",
        "json",
        "--from",
        "2026-03-09T00:00:00Z",
        "--to",
        "2026-03-14T00:00:00Z",
        "--every",
        "12h",
    )
    assert code == 0
    documents = [json.loads(line) for line in out.splitlines()]
    assert [d["at"] for d in documents][:2] == ["2026-03-09T00:00:00Z", "2026-03-09T12:00:00Z"]
    assert len(documents) == 11
    for document in documents:
        Draft202012Validator(SCHEMA).validate(document)
    statuses = [d["instruments"]["iecHs"]["status"] for d in documents]
    assert statuses[0] != "met" and statuses[-1] == "met"  # the course moves; each instant sees only its past


def test_each_instant_of_a_course_equals_a_single_evaluation_at_it(classic_file: Path, capsys: Any) -> None:
    span = ["--from", "2026-03-12T00:00:00Z", "--to", "2026-03-13T00:00:00Z", "--every", "P1D"]
    _, out, _ = run_cli(capsys, "evaluate", str(classic_file), "--format", "json", *span)
    lines = out.splitlines()
    for line in lines:
        at = json.loads(line)["at"]
        _, single, _ = run_cli(capsys, "evaluate", str(classic_file), "--format", "json", "--at", at)
        assert json.loads(line) == json.loads(single)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-03-09T00:00:00Z", "--every", "6h"], "--from, --to and --every go together"),
        (
            ["--from", "2026-03-09T00:00:00Z", "--to", "2026-03-08T00:00:00Z", "--every", "6h"],
            "--to is before",
        ),
        (["--at", "2026-03-09T00:00:00Z", "--from", "2026-03-09T00:00:00Z"], "cannot be combined"),
        (["--from", "2000-01-01T00:00:00Z", "--to", "2026-01-01T00:00:00Z", "--every", "1m"], "at most"),
    ],
)
def test_course_options_are_checked(classic_file: Path, capsys: Any, args: list[str], message: str) -> None:
    code, _, err = run_cli(capsys, "evaluate", str(classic_file), *args)
    assert code == 2
    assert message in err


def test_text_course_prints_one_line_per_instant(classic_file: Path, capsys: Any) -> None:
    span = ["--from", "2026-03-13T00:00:00Z", "--to", "2026-03-14T00:00:00Z", "--every", "1d"]
    code, out, _ = run_cli(capsys, "evaluate", str(classic_file), *span)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 and all("IEC-HS" in line and "CRS" in line for line in lines)
