"""`cds-service replay` end to end on the 39-patient population export (written by the generator at test
time): the replay reproduces the hook at the same instants, labels give lead times and counts, a cluster run
and a gzip multi-file export give the same patients.csv, malformed lines are reported with file and line,
--set changes a setting, and the report renders in Chromium (its screenshot is the README's)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from distributed import LocalCluster
from playwright.sync_api import Page

from cds_service import create_app
from cds_service.cli import main
from cds_service.datafiles import PROJECT_ROOT
from cds_service.engine.evaluate import evaluate
from cds_service.engine.instruments.registry import IEC_HS
from cds_service.engine.knowledge import load_knowledge
from cds_service.replay import collect
from cds_service.replay.groups import GroupResult, PatientSummary, ReplaySettings
from cds_service.replay.labels import Label, metrics
from cds_service.replay.refs import patient_of
from tests.cds_helpers import dev_config, full_prefetch, hook_body
from tests.replay_helpers import (
    by_patient,
    ndjson_files,
    population_export,
    replay,
    resources_by_patient,
    rows,
    subset_export,
)

DEFAULT = ReplaySettings()  # every 6 h and every data arrival, to day 100
SCREENSHOT = PROJECT_ROOT / "docs" / "images" / "replay-report.png"
TINY = ("pop-01", "pop-14", "pop-17")  # no IEC-HS; IEC-HS grade 1; grade 2


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return population_export(tmp_path_factory.mktemp("replay-export"))


@pytest.fixture(scope="module")
def default_run(population: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The population replayed with the default settings and the generator's labels."""
    out = tmp_path_factory.mktemp("replay-default")
    return replay(population, out, settings=DEFAULT, labels=population / "labels.csv")


@pytest.fixture(scope="module")
def timeline(default_run: Path) -> list[dict[str, Any]]:
    table: list[dict[str, Any]] = pq.read_table(default_run / "timeline.parquet").to_pylist()
    return table


@pytest.fixture(scope="module")
def resources(population: Path) -> dict[str, list[dict[str, Any]]]:
    return resources_by_patient(population)


def _instants(timeline: list[dict[str, Any]], patient: str) -> list[dict[str, Any]]:
    return [row for row in timeline if row["patientId"] == patient]


def _probes(course: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Instants worth checking: the first, the last, each status change and the instant before it."""
    picked = {0, len(course) - 1, len(course) // 2}
    for index in range(1, len(course)):
        if course[index]["status"] != course[index - 1]["status"]:
            picked |= {index - 1, index}
    return [course[i] for i in sorted(picked)]


def test_every_patient_is_replayed_from_infusion_with_the_outputs(default_run: Path) -> None:
    patients = rows(default_run / "patients.csv")
    assert [r["patientId"] for r in patients] == [f"pop-{n:02d}" for n in range(1, 40)]
    assert list(patients[0]) == [
        "patientId",
        "firstPossible",
        "firstMet",
        "maxGrade",
        "evaluations",
        "cardsShown",
        "labelOnset",
        "labelGrade",
        "leadTimeHours",
    ]
    summary = json.loads((default_run / "summary.json").read_text())
    assert summary["patients"] == 39 and summary["malformedLines"] == 0
    assert summary["evaluations"] == sum(int(r["evaluations"]) for r in patients)
    assert summary["timelineRows"] == summary["evaluations"]
    assert not (default_run / ".replay-work").exists()  # spill files removed


def test_the_timeline_has_every_arrival_and_step_and_nothing_before_infusion(
    timeline: list[dict[str, Any]],
) -> None:
    course = _instants(timeline, "pop-14")
    days = [row["dayPostInfusion"] for row in course]
    assert days == sorted(days) and days[0] == 0.0
    steps = {round(d, 4) for d in days if not course[days.index(d)]["newData"]}
    assert {0.25, 0.5, 1.0} <= steps | {round(d, 4) for d in days}  # every 6 h from infusion
    assert max(b - a for a, b in zip(days, days[1:], strict=False)) <= 0.25 + 1e-9
    assert any(row["newData"] for row in course)


def test_the_replay_gives_the_hooks_status_at_the_same_instants(
    timeline: list[dict[str, Any]], resources: dict[str, list[dict[str, Any]]]
) -> None:
    """For every patient, at each status change (and the instant before), the first and the last instant:
    the engine run as the hook runs it (prefetch in, explicit instant) gives the replay's status and grade."""
    kb = load_knowledge()
    checked = 0
    for patient, data in sorted(resources.items()):
        prefetch = full_prefetch(data)
        for row in _probes(_instants(timeline, patient)):
            result = IEC_HS.result(evaluate(prefetch, knowledge=kb, at=row["at"]).instruments)
            assert (result.status, result.grade) == (row["status"], row["grade"]), (patient, row["at"])
            checked += 1
    assert checked >= 39 * 3


def test_the_real_hook_endpoint_shows_the_replays_cards(
    timeline: list[dict[str, Any]], resources: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """patient-view through the Flask app, clock pinned at replay instants: the same card (or none)."""
    for patient in ("pop-01", "pop-17", "pop-31"):
        for row in _probes(_instants(timeline, patient))[:6]:
            at: datetime = row["at"]
            client = create_app(dev_config(tmp_path / f"{patient}-{at:%Y%m%d%H%M}", CLOCK=lambda at=at: at))
            body = hook_body("patient-view", patient, prefetch=full_prefetch(resources[patient]))
            answer = client.test_client().post("/cds-services/iec-hs-screening", json=body)
            assert answer.status_code == 200, answer.get_data(as_text=True)
            cards = answer.get_json()["cards"]
            assert len(cards) == row["cards"], (patient, at)
            if cards:
                assert (cards[0]["indicator"], cards[0]["summary"]) == (row["indicator"], row["summary"])


def test_nothing_from_the_future_changes_a_past_status(
    resources: dict[str, list[dict[str, Any]]], timeline: list[dict[str, Any]]
) -> None:
    """At each probe instant T, the replay's status (whole record, evaluated at T) equals the status of
    the same patient with every Observation released after T removed from the data."""
    kb = load_knowledge()
    data = resources["pop-17"]
    for row in _probes(_instants(timeline, "pop-17")):
        at: datetime = row["at"]
        cut = [r for r in data if r["resourceType"] != "Observation" or _released(r) <= at]
        result = IEC_HS.result(evaluate(full_prefetch(cut), knowledge=kb, at=at).instruments)
        assert (result.status, result.grade) == (row["status"], row["grade"]), at


def _released(resource: dict[str, Any]) -> datetime:
    stamp = resource.get("issued") or resource.get("effectiveDateTime")
    assert isinstance(stamp, str), resource["id"]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)


def test_labels_give_lead_time_sensitivity_and_ppv(
    default_run: Path, population: Path, tmp_path: Path
) -> None:
    """A tiny export (3 patients) with hand-made labels: one detected 30 h after its onset, one labelled
    and never met (a miss), one met and unlabelled (a false flag), one labelled and not in the export."""
    first_met = by_patient(default_run / "patients.csv")
    met14 = datetime.fromisoformat(first_met["pop-14"]["firstMet"].replace("Z", "+00:00"))
    labels = tmp_path / "labels.csv"
    onset = (met14 - timedelta(hours=30)).isoformat().replace("+00:00", "Z")
    labels.write_text(
        f"patientId,onset,grade\npop-14,{onset},1\npop-01,2026-01-10T00:00:00Z,\npop-99,2026-01-01T00:00:00Z,2\n"
    )
    tiny = subset_export(population, tmp_path / "tiny", TINY)
    out = replay(tiny, tmp_path / "out", settings=DEFAULT, labels=labels)
    got = by_patient(out / "patients.csv")
    assert got["pop-14"]["leadTimeHours"] == "30.0" and got["pop-14"]["labelGrade"] == "1"
    assert got["pop-01"]["labelOnset"] == "2026-01-10T00:00:00Z" and got["pop-01"]["leadTimeHours"] == ""
    assert got["pop-17"]["labelOnset"] == "" and got["pop-17"]["firstMet"] != ""
    assert {k: got[k]["firstMet"] for k in TINY} == {k: first_met[k]["firstMet"] for k in TINY}
    summary = json.loads((out / "summary.json").read_text())["labels"]
    assert summary == {
        "labelled": 2,
        "labelledNotReplayed": 1,
        "detected": 1,
        "flagged": 2,
        "flaggedLabelled": 1,
        "sensitivity": 0.5,
        "ppv": 0.5,
        "medianLeadTimeHours": 30.0,
    }


def test_the_generators_labels_are_all_met(default_run: Path) -> None:
    labels = json.loads((default_run / "summary.json").read_text())["labels"]
    assert labels["labelled"] == 19 and labels["detected"] == labels["labelled"]
    assert labels["ppv"] == labels["flaggedLabelled"] / labels["flagged"]


@pytest.fixture(scope="module")
def fast_run(population: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The population with cheaper settings (daily steps to day 14): the comparison runs use them too."""
    return replay(population, tmp_path_factory.mktemp("replay-fast"))


def test_a_cluster_run_gives_the_same_patients_csv(population: Path, fast_run: Path, tmp_path: Path) -> None:
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        out = replay(population, tmp_path / "cluster", scheduler=cluster.scheduler_address)
    assert (out / "patients.csv").read_bytes() == (fast_run / "patients.csv").read_bytes()
    assert pq.read_table(out / "timeline.parquet").equals(pq.read_table(fast_run / "timeline.parquet"))
    assert json.loads((out / "summary.json").read_text())["run"]["workers"] == 2


def test_a_gzip_multi_file_export_gives_the_same_patients_csv(fast_run: Path, tmp_path: Path) -> None:
    source = population_export(tmp_path / "gz", use_gzip=True, max_per_file=4000)
    names = [p.name for p in ndjson_files(source)]
    assert all(n.endswith(".ndjson.gz") for n in names) and len(names) > 8
    out = replay(source, tmp_path / "out")
    assert (out / "patients.csv").read_bytes() == (fast_run / "patients.csv").read_bytes()


def test_small_chunks_of_one_plain_file_give_the_same_patients_csv(
    population: Path, fast_run: Path, tmp_path: Path
) -> None:
    out = replay(population, tmp_path / "out", chunk_bytes=1_000_000)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["chunks"] > 20 and summary["malformedLines"] == 0
    assert (out / "patients.csv").read_bytes() == (fast_run / "patients.csv").read_bytes()


def test_a_malformed_line_is_reported_with_file_and_line_and_skipped(
    population: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = subset_export(population, tmp_path / "tiny", TINY)
    observations = tiny / "Observation.ndjson"
    lines = observations.read_bytes().splitlines(keepends=True)
    lines.insert(99, b'{"resourceType": "Observation", "id": "broken"\n')  # becomes line 100
    lines.insert(4, b"[1, 2]\n")  # line 5 (the broken one is now line 101)
    observations.write_bytes(b"".join(lines))
    with (tiny / "Practitioner.ndjson").open("wb") as handle:
        handle.write(b'{"resourceType":"Practitioner","id":"dr-1"}\n')
    conditions = (tiny / "Condition.ndjson").read_bytes()
    (tiny / "Condition.ndjson").unlink()
    with gzip.open(tiny / "Condition.ndjson.gz", "wb") as handle:
        handle.write(b"not json at all\n" + conditions)
    out = tmp_path / "out"
    code = main(["replay", str(tiny), "--out", str(out), "--workers", "1", "--step", "1d", "--no-progress"])
    assert code == 0
    problems = rows(out / "problems.csv")
    where = [(p["file"], p["line"]) for p in problems]
    assert where == [("Condition.ndjson.gz", "1"), ("Observation.ndjson", "5"), ("Observation.ndjson", "101")]
    assert problems[0]["problem"].startswith("malformed JSON")
    assert problems[1]["problem"] == "not a FHIR resource (no resourceType)"
    err = capsys.readouterr().err
    assert "3 malformed lines skipped" in err and "Observation.ndjson:101: malformed JSON" in err
    assert "1 resources without a patient reference (not replayed): Practitioner 1" in err
    assert [r["patientId"] for r in rows(out / "patients.csv")] == list(TINY)


def test_line_numbers_hold_across_chunks_of_one_file(population: Path, tmp_path: Path) -> None:
    tiny = subset_export(population, tmp_path / "tiny", TINY[:1])
    observations = tiny / "Observation.ndjson"
    lines = observations.read_bytes().splitlines(keepends=True)
    bad = [len(lines) // 3, len(lines) // 2, len(lines) - 2]
    for index in bad:
        lines[index] = b"{oops\n"
    observations.write_bytes(b"".join(lines))
    out = replay(tiny, tmp_path / "out", workers=1, chunk_bytes=20_000)
    assert json.loads((out / "summary.json").read_text())["run"]["chunks"] > 10
    assert [int(p["line"]) for p in rows(out / "problems.csv")] == [i + 1 for i in bad]


def test_set_changes_a_setting_and_the_result_where_expected(population: Path, tmp_path: Path) -> None:
    """Asking a 50-fold ferritin rise (second and rapid rise; shipped 1.5 and 2) leaves every IEC-HS course
    short of "possible"; a course without IEC-HS is unchanged."""
    tiny = subset_export(population, tmp_path / "tiny", TINY)
    daily = ReplaySettings(step=timedelta(hours=24), horizon=timedelta(days=20))
    base = by_patient(replay(tiny, tmp_path / "base", settings=daily) / "patients.csv")
    out = tmp_path / "changed"
    settings = [
        "criteria/iec_hs.yaml:required.second_rise.fold=50",
        "criteria/iec_hs:required.rapid_rise.fold=50",
    ]
    argv = ["replay", str(tiny), "--out", str(out), "--step", "24h", "--horizon", "20d", "--no-progress"]
    assert main([*argv, "--workers", "2", "--set", settings[0], "--set", settings[1]]) == 0
    changed = by_patient(out / "patients.csv")
    for patient in ("pop-14", "pop-17"):
        assert base[patient]["firstMet"] and base[patient]["firstPossible"]
        assert changed[patient]["firstMet"] == changed[patient]["firstPossible"] == ""
    assert changed["pop-01"] == base["pop-01"]
    edited = (out / "mappings" / "criteria" / "iec_hs.yaml").read_text()
    assert "fold: 50" in edited and "with_fever_hours: 72" in edited
    assert "fold: 1.5" in (PROJECT_ROOT / "mappings" / "criteria" / "iec_hs.yaml").read_text()
    assert json.loads((out / "summary.json").read_text())["overrides"] == settings
    assert settings[0] in (out / "report.html").read_text()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("criteria/iec_hs.yaml:required.second_rise.fould=3", "no key 'fould' at required.second_rise"),
        (
            "criteria/iec_hs:required.second_rise.fold=abc",
            "second_rise.fold is a number (now 1.5), got 'abc'",
        ),
        ("engine.yaml:baseline=sometimes", "baseline"),
        ("criteria/nope.yaml:a=1", "no file criteria/nope.yaml"),
        ("engine.yaml=1", "expected FILE:KEY=VALUE"),
    ],
)
def test_a_bad_setting_is_a_clear_error(
    population: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, message: str
) -> None:
    code = main(["replay", str(population), "--out", str(tmp_path / "out"), "--set", setting])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_input_errors_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no .ndjson or .ndjson.gz files" in capsys.readouterr().err
    assert main(["replay", "--out", str(tmp_path / "out")]) == 2
    assert "give INPUT" in capsys.readouterr().err
    (tmp_path / "Patient.ndjson").write_text("")
    (tmp_path / "labels.csv").write_text("id,when\n")
    assert (
        main(
            ["replay", str(tmp_path), "--out", str(tmp_path / "o"), "--labels", str(tmp_path / "labels.csv")]
        )
        == 2
    )
    assert "missing column(s) patientId, onset" in capsys.readouterr().err


def test_the_report_renders_swimlanes_histograms_and_the_silent_mode_warning(
    default_run: Path, page: Page
) -> None:
    summary = json.loads((default_run / "summary.json").read_text())
    page.set_viewport_size({"width": 1040, "height": 900})
    page.goto((default_run / "report.html").as_uri())
    assert page.locator("svg.lanes g.lane").count() == summary["patients"] == 39
    assert page.locator("svg.lanes g.lane rect.s-met").count() == summary["reachedMet"]
    assert page.locator("svg.lanes path.onset").count() == summary["labels"]["labelled"]
    leads = page.locator("svg.lead rect.bar")
    assert sum(int(leads.nth(i).get_attribute("data-count") or 0) for i in range(leads.count())) == 19
    per_day = page.locator("svg.per-day rect.bar")
    assert (
        sum(int(per_day.nth(i).get_attribute("data-count") or 0) for i in range(4)) == summary["patientDays"]
    )
    assert page.locator(".silent").inner_text().startswith("Silent mode, not for clinical use")
    assert page.title().endswith("(silent mode, not for clinical use)")
    box = page.locator("svg.lanes").bounding_box()
    assert box is not None and box["width"] > 800 and box["height"] > 39 * 10
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


@pytest.mark.parametrize(
    ("resource", "patient"),
    [
        ({"resourceType": "Patient", "id": "p1"}, "p1"),
        ({"resourceType": "Observation", "subject": {"reference": "Patient/p1"}}, "p1"),
        ({"resourceType": "Observation", "subject": {"reference": "Patient/p1/_history/3"}}, "p1"),
        (
            {"resourceType": "Observation", "subject": {"reference": "https://ehr.example/fhir/Patient/p1"}},
            "p1",
        ),
        (
            {"resourceType": "Observation", "subject": {"reference": "https://h/fhir/Patient/p1/_history/2"}},
            "p1",
        ),
        ({"resourceType": "Condition", "subject": {"reference": "urn:uuid:0f7c-11"}}, "0f7c-11"),
        ({"resourceType": "Condition", "subject": {"reference": "p1"}}, "p1"),
        ({"resourceType": "Coverage", "patient": {"reference": "Patient/p1"}}, "p1"),
        ({"resourceType": "Observation", "subject": {"reference": "Group/g1"}}, None),
        ({"resourceType": "Observation", "subject": {"display": "no reference"}}, None),
        ({"resourceType": "Practitioner", "id": "dr"}, None),
        ({"resourceType": "Patient"}, None),
    ],
)
def test_the_patient_of_a_resource(resource: dict[str, Any], patient: str | None) -> None:
    assert patient_of(resource) == patient


def test_metrics_by_hand() -> None:
    infusion = datetime(2026, 1, 1, tzinfo=UTC)

    def summary(patient: str, met_hours: float | None) -> PatientSummary:
        met = None if met_hours is None else infusion + timedelta(hours=met_hours)
        return PatientSummary(patient, infusion, met, met, None, 10, 0, (), ())

    labels = {
        "a": Label(infusion + timedelta(hours=100), 2),  # met at 90 h: -10 h
        "b": Label(infusion + timedelta(hours=100), None),  # met at 130 h: +30 h
        "c": Label(infusion, 1),  # never met
        "z": Label(infusion, 1),  # not replayed
    }
    found = metrics([summary("a", 90), summary("b", 130), summary("c", None), summary("d", 50)], labels)
    assert (found.labelled, found.labelled_missing, found.detected) == (3, 1, 2)
    assert (found.flagged, found.flagged_labelled, found.lead_hours) == (3, 2, (-10.0, 30.0))
    assert found.sensitivity == 2 / 3 and found.ppv == 2 / 3 and found.median_lead_hours == 10.0


def test_patients_csv_parts_merge_in_passes_when_there_are_many(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More parts than may be open at once: merged in passes, still one sorted file."""
    monkeypatch.setattr(collect, "FAN_IN", 3)
    collector = collect.Collector(tmp_path, None)
    infusion = datetime(2026, 1, 1, tzinfo=UTC)
    ids = [f"p{n:03d}" for n in range(40)]
    for group in range(10):
        members = [PatientSummary(i, infusion, None, None, None, 1, 0, (0,), ()) for i in ids[group::10]]
        collector.add(GroupResult(group, patients=members))
    collector.write_patients(tmp_path / "patients.csv")
    assert [r["patientId"] for r in rows(tmp_path / "patients.csv")] == ids
    assert collector.totals.patients == 40 and collector.totals.card_day_counts == [40, 0, 0, 0]
