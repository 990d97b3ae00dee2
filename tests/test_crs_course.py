"""The CRS course from raw data, documented grades and coded Conditions (engine.crs), at the boundaries of
the ASTCT 2019 grading [R] and of the project's course rules [D] (mappings/criteria/astct_crs.yaml)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from cds_service.engine import evaluate
from cds_service.engine.instruments.registry import ASTCT_CRS, IEC_HS
from cds_service.engine.model import CrsGradeResult, EvaluationResult
from tests.engine_helpers import KB, criterion
from tests.fhir_builders import (
    bundle,
    car_t,
    condition,
    crs,
    day,
    device_row,
    documented_grade,
    infusion,
    medication,
    obs,
    patient,
    procedure,
)

TEMPERATURE, SYSTOLIC, MEAN, O2_FLOW = "8310-5", "8480-6", "8478-0", "3151-8"
NASAL_CANNULA, NON_REBREATHER = "336623009", "427591007"


def temp(value: float, when: datetime) -> dict[str, Any]:
    return obs(TEMPERATURE, value, "Cel", when)


def afebrile_days(first: int, last: int, skip: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    return [temp(36.8, day(d, 2)) for d in range(first, last + 1) if d not in skip]


def febrile(start: float, hours: int, value: float = 38.6) -> list[dict[str, Any]]:
    """Fever every 4 h for `hours` from day `start`, then one afebrile reading 4 h after the last."""
    readings = [temp(value, day(start, h)) for h in range(0, hours, 4)]
    return [*readings, temp(37.0, day(start, hours))]


def run(*resources: dict[str, Any], at: datetime) -> EvaluationResult:
    return evaluate(bundle(patient(), car_t(), *resources), knowledge=KB, at=at)


def grade(result: EvaluationResult) -> CrsGradeResult:
    return ASTCT_CRS.result(result.instruments)


# --- fever ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "episode"), [(37.9, False), (38.0, True)])
def test_fever_starts_an_inferred_episode_at_38_0(value: float, episode: bool) -> None:
    result = run(*afebrile_days(0, 3), temp(value, day(3, 6)), at=day(3, 8))
    assert bool(result.crs) == episode
    if episode:
        assert result.crs[0].source == "inferred" and result.crs_status == "active"
        assert grade(result).max_grade == 1
        assert "inferred from vital signs" in result.crs[0].evidence[0].description


@pytest.mark.parametrize("site_code", ["8331-1", "8332-9", "8328-7", "8333-7"])
def test_a_temperature_coded_by_its_site_alone_counts(site_code: str) -> None:
    """Oral, rectal, axillary and tympanic codes sent instead of 8310-5: the fever and the afebrile days
    that make "none" knowable are read the same."""
    site_days = [obs(site_code, 36.8, "Cel", day(d, 2)) for d in range(0, 15)]
    assert run(*site_days, at=day(15)).crs_status == "none"
    febrile_at_site = run(*site_days[:4], obs(site_code, 38.0, "Cel", day(3, 6)), at=day(3, 8))
    assert febrile_at_site.crs_status == "active" and febrile_at_site.crs[0].source == "inferred"


def test_a_fever_after_the_onset_window_is_not_crs() -> None:
    result = run(*afebrile_days(0, 16), temp(39.0, day(16, 6)), at=day(16, 8))
    assert result.crs == () and result.crs_status == "none"


# --- hypotension and vasopressors ------------------------------------------------------------------------


@pytest.mark.parametrize(("systolic", "expected"), [(90, 1), (89, 2)])
def test_hypotension_below_90_systolic_is_grade_2(systolic: float, expected: int) -> None:
    result = run(*febrile(3, 12), obs(SYSTOLIC, systolic, "mm[Hg]", day(3, 5)), at=day(3, 10))
    assert grade(result).max_grade == expected


@pytest.mark.parametrize(("mean", "expected"), [(65, 1), (64, 2)])
def test_mean_pressure_below_65_is_hypotension(mean: float, expected: int) -> None:
    result = run(*febrile(3, 12), obs(MEAN, mean, "mm[Hg]", day(3, 5)), at=day(3, 10))
    assert grade(result).max_grade == expected


def test_pediatric_hypotension_follows_the_age_based_limit() -> None:
    child = patient(birth="2020-03-01")  # 6 years at infusion: systolic < 70 + 2 x 6 = 82
    for systolic, expected in ((82, 1), (81, 2)):
        data = bundle(child, car_t(), *febrile(3, 12), obs(SYSTOLIC, systolic, "mm[Hg]", day(3, 5)))
        assert ASTCT_CRS.result(evaluate(data, knowledge=KB, at=day(3, 10)).instruments).max_grade == expected


@pytest.mark.parametrize(
    ("pressors", "expected"),
    [
        (["norepinephrine"], 3),
        (["norepinephrine", "vasopressin"], 3),  # vasopressin never counts as a second agent
        (["norepinephrine", "epinephrine"], 4),
        (["vasopressin"], 3),
    ],
)
def test_vasopressors_running_together_grade_3_or_4(pressors: list[str], expected: int) -> None:
    drips = [infusion(f"{name} infusion", day(3, 4), day(3, 20)) for name in pressors]
    result = run(*febrile(3, 12), *drips, at=day(3, 22))
    assert grade(result).max_grade == expected
    assert criterion(grade(result).criteria, "hypotension").status == "met"


def test_agents_that_do_not_overlap_are_one_vasopressor_at_a_time() -> None:
    drips = [
        infusion("norepinephrine infusion", day(3, 4), day(3, 10)),
        infusion("epinephrine infusion", day(3, 10), day(3, 16)),
    ]
    assert grade(run(*febrile(3, 12), *drips, at=day(3, 18))).max_grade == 3


@pytest.mark.parametrize(("minutes_later", "expected"), [(360, 3), (359, 4)])
def test_an_administration_charted_at_one_instant_runs_for_the_configured_6_hours(
    minutes_later: int, expected: int
) -> None:
    """Two agents charted as single MAR rows overlap only when the second starts within 6 h [D]."""
    norepinephrine = medication(None, "norepinephrine", day(3, 4))
    epinephrine = medication(None, "epinephrine", day(3, 4) + timedelta(minutes=minutes_later))
    assert grade(run(*febrile(3, 12), norepinephrine, epinephrine, at=day(3, 22))).max_grade == expected


# --- oxygen ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flow", "expected"), [(6, 2), (6.5, 3)])
def test_oxygen_flow_up_to_6_l_min_is_low_flow(flow: float, expected: int) -> None:
    result = run(*febrile(3, 12), obs(O2_FLOW, flow, "L/min", day(3, 5)), at=day(3, 10))
    assert grade(result).max_grade == expected


@pytest.mark.parametrize(
    ("device", "code", "expected"),
    [
        ("Nasal cannula", NASAL_CANNULA, 2),
        ("Non-rebreather mask", NON_REBREATHER, 3),
        ("High flow nasal cannula", None, 3),  # by its text: high flow wins over "nasal cannula"
        ("BiPAP", None, 4),
        ("Room air", None, 1),
    ],
)
def test_the_oxygen_device_sets_the_level(device: str, code: str | None, expected: int) -> None:
    result = run(*febrile(3, 12), device_row(device, day(3, 5), code), at=day(3, 10))
    assert grade(result).max_grade == expected


def test_positive_pressure_ventilation_is_grade_4() -> None:
    result = run(*febrile(3, 12), procedure("Non-invasive ventilation (BiPAP)", day(3, 6)), at=day(3, 10))
    assert grade(result).max_grade == 4


def test_oxygen_the_patient_already_had_before_the_episode_does_not_grade_it() -> None:
    before = [obs(O2_FLOW, 2, "L/min", day(2, h)) for h in (12, 16, 20)]
    during = [obs(O2_FLOW, 2, "L/min", day(3, 6)), obs(O2_FLOW, 8, "L/min", day(3, 8))]
    assert grade(run(*before, *febrile(3, 12), during[0], at=day(3, 10))).max_grade == 1
    assert grade(run(*before, *febrile(3, 12), *during, at=day(3, 10))).max_grade == 3  # escalated


# --- fever no longer required, resolution -----------------------------------------------------------------


def test_after_tocilizumab_signs_without_fever_still_grade_the_episode() -> None:
    fever = febrile(3, 8)  # the last fever at day 3 + 4 h
    oxygen = [
        device_row("Nasal cannula", day(3, h), NASAL_CANNULA) for h in range(8, 44, 4)
    ]  # to day 4 + 16 h
    drip = infusion("norepinephrine infusion", day(4, 20), day(5, 4))  # 40 h after the last fever
    without = grade(run(*fever, *oxygen, drip, at=day(5, 6)))
    assert without.max_grade == 2  # hypotension > 24 h after the last fever, no CRS-directed therapy: not CRS
    toci = medication("612865", "tocilizumab", day(3, 6))
    assert grade(run(*fever, toci, *oxygen, drip, at=day(5, 6))).max_grade == 3  # fever no longer required


@pytest.mark.parametrize(("hours", "status"), [(23, "active"), (24, "resolved")])
def test_an_episode_resolves_after_24_quiet_hours(hours: int, status: str) -> None:
    last = day(3, 8)
    readings = [temp(38.5, day(3, h)) for h in (0, 4, 8)] + [temp(37.0, last + timedelta(hours=12))]
    result = run(*readings, at=last + timedelta(hours=hours))
    assert result.crs_status == status
    if status == "resolved":
        assert result.crs[0].abatement == last


def test_resolution_needs_an_afebrile_temperature_after_the_last_sign() -> None:
    readings = [temp(38.5, day(3, h)) for h in (0, 4, 8)]
    assert run(*readings, at=day(5)).crs_status != "resolved"
    assert run(*readings, temp(36.9, day(4)), at=day(5)).crs_status == "resolved"


# --- none and unknown ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("skipped", "status"), [((2, 5, 9), "none"), ((2, 5, 9, 11), "unknown")])
def test_no_crs_is_known_from_daily_temperatures_allowing_3_missing_days(
    skipped: tuple[int, ...], status: str
) -> None:
    result = run(*afebrile_days(0, 14, skipped), at=day(20))
    assert result.crs_status == status
    timing = criterion(IEC_HS.result(result.instruments).criteria, "onset")
    assert timing.status == ("not-applicable" if status == "none" else "unknown")


def test_a_crs_directed_drug_without_a_recorded_fever_leaves_crs_unknown() -> None:
    result = run(*afebrile_days(0, 14), medication("612865", "tocilizumab", day(3)), at=day(20))
    assert result.crs_status == "unknown"


def test_a_crs_directed_drug_after_the_onset_window_does_not_make_crs_unknown() -> None:
    """Anakinra on day 75 (IEC-HS treatment) says nothing about CRS in days 0-14."""
    result = run(*afebrile_days(0, 14), medication("1114877", "anakinra", day(75)), at=day(76))
    assert result.crs_status == "none"


# --- documented and coded, merged with the most recent evidence ------------------------------------------


def test_a_documented_grade_makes_an_episode_and_its_zero_row_resolves_it() -> None:
    rows = [documented_grade("crs_grade", 2, day(3)), documented_grade("crs_grade", 1, day(4))]
    resolving = run(*rows, at=day(4, 2))
    assert resolving.crs_status == "resolving" and resolving.crs[0].source == "documented"
    resolved = run(*rows, documented_grade("crs_grade", 0, day(5)), at=day(5, 2))
    assert resolved.crs_status == "resolved" and resolved.crs[0].abatement == day(5)


def test_quiet_vital_signs_outweigh_a_stale_active_crs_condition() -> None:
    stale = crs(2, day(3))  # never closed on the problem list
    result = run(stale, *febrile(3, 20), *afebrile_days(5, 9), at=day(9, 6))
    assert result.crs_status == "resolved"
    assert result.crs[0].source == "condition"  # the most authoritative source that contributed
    assert {e.description.split(":")[0] for e in result.crs[0].evidence} >= {"inferred from vital signs"}


def test_a_condition_is_read_as_it_was_at_the_instant() -> None:
    later = crs(2, day(3), day(8))  # abated on day 8, clinicalStatus resolved as recorded later
    assert run(later, at=day(6)).crs_status == "active"
    assert run(later, at=day(9)).crs_status == "resolved"
    retrospective = condition("http://hl7.org/fhir/sid/icd-10-cm", "D89.832", day(3))
    retrospective["recordedDate"] = day(10).isoformat()
    assert run(retrospective, at=day(6)).crs == ()  # not on record before day 10
    assert run(retrospective, at=day(11)).crs != ()


@pytest.mark.parametrize(("gap_hours", "episodes"), [(24, 1), (25, 2)])
def test_records_less_than_24_hours_apart_are_one_episode(gap_hours: int, episodes: int) -> None:
    """A coded CRS that abates on day 5 and is coded again 24 h later is one course [D]; 25 h later, two."""
    first = crs(1, day(2), day(5))
    again = crs(2, day(5, gap_hours), day(8))
    assert len(run(first, again, at=day(10)).crs) == episodes


# --- a fever after CRS ----------------------------------------------------------------------------------


def ferritin(value: float, when_day: float) -> dict[str, Any]:
    return obs("2276-4", value, "ng/mL", day(when_day), high=300)


def test_a_returning_fever_with_a_rising_ferritin_is_worsening_not_crs() -> None:
    course = [*febrile(3, 20), ferritin(400, -1), ferritin(2500, 4), ferritin(1200, 8), ferritin(4000, 11)]
    result = run(*course, *febrile(11.5, 24), at=day(12, 12))
    assert result.crs_status == "resolved"  # CRS did not come back: the fever belongs to the IEC-HS phase
    assert criterion(IEC_HS.result(result.instruments).criteria, "onset").status == "met"


def test_a_lone_fever_after_crs_resolved_is_not_a_new_episode() -> None:
    course = [*febrile(3, 20), ferritin(400, -1), ferritin(2500, 4), ferritin(1200, 8), ferritin(1000, 11)]
    result = run(*course, temp(38.3, day(10)), temp(37.0, day(10, 4)), at=day(10, 6))
    assert len(result.crs) == 1 and result.crs_status == "resolved"


def test_the_grade_of_each_day_and_today() -> None:
    drip = infusion("norepinephrine infusion", day(3, 4), day(3, 16))
    result = run(*febrile(3, 20), drip, *afebrile_days(5, 6), at=day(6, 6))
    crs_grade = grade(result)
    days = {d.day: d.grade for d in crs_grade.grade_by_day}
    assert days[3] == 3 and crs_grade.max_grade == 3
    assert crs_grade.current_grade == 0 and crs_grade.status == "resolved"
