"""Property tests (hypothesis): monotonicity of scores and counts, unit round-trips, unknowns."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.engine.instruments.registry import HLH94, HLH2004, HSCORE
from cds_service.engine.knowledge import load_knowledge
from tests.engine_helpers import lab, run

KB = load_knowledge()
FAST = settings(max_examples=60, deadline=None)

# (analyte name for lab(), unit, more-abnormal direction)
ANALYTES = {
    "ferritin": ("ng/mL", 1),
    "temperature": ("Cel", 1),
    "triglycerides": ("mg/dL", 1),
    "ast": ("U/L", 1),
    "fibrinogen": ("mg/dL", -1),
    "hemoglobin": ("g/dL", -1),
    "platelets": ("10*9/L", -1),
    "wbc": ("10*9/L", -1),
    "anc": ("10*9/L", -1),
}
RANGES = {
    "ferritin": (10, 200000),
    "temperature": (35, 42),
    "triglycerides": (20, 1500),
    "ast": (5, 3000),
    "fibrinogen": (20, 800),
    "hemoglobin": (3, 18),
    "platelets": (1, 600),
    "wbc": (0.1, 50),
    "anc": (0.01, 30),
}


def values() -> st.SearchStrategy[dict[str, float]]:
    return st.fixed_dictionaries({name: st.floats(*RANGES[name], allow_nan=False) for name in ANALYTES})


def patient_with(values: dict[str, float]) -> list[dict[str, Any]]:
    return [lab(name, value, ANALYTES[name][0]) for name, value in values.items()]


def scores(values: dict[str, float]) -> tuple[int, int, int, int]:
    result = run(*patient_with(values))
    i = result.instruments
    return (
        HSCORE.result(i).score,
        HSCORE.result(i).score_max,
        HLH2004.result(i).met_count,
        HLH94.result(i).met_count,
    )


@FAST
@given(values(), st.sampled_from(sorted(ANALYTES)), st.floats(0.0, 1.0))
def test_a_more_abnormal_value_never_lowers_a_score_or_count(
    base: dict[str, float], name: str, step: float
) -> None:
    direction = ANALYTES[name][1]
    low, high = RANGES[name]
    worse = dict(base)
    worse[name] = (
        min(high, base[name] + step * (high - low))
        if direction > 0
        else max(low, base[name] - step * (high - low))
    )
    before, after = scores(base), scores(worse)
    assert all(a >= b for a, b in zip(after, before, strict=True))


@FAST
@given(values(), st.sets(st.sampled_from(sorted(ANALYTES))))
def test_unknowns_widen_the_range_and_never_change_the_score(
    base: dict[str, float], dropped: set[str]
) -> None:
    full = HSCORE.result(run(*patient_with(base)).instruments)
    partial = HSCORE.result(
        run(*patient_with({k: v for k, v in base.items() if k not in dropped})).instruments
    )
    assert partial.score_min <= full.score <= partial.score_max
    assert partial.score == partial.score_min
    assert full.score_max - full.score <= partial.score_max - partial.score  # never narrower


PAIRS = [
    ("fibrinogen", "g/L", "mg/dL"),
    ("triglycerides", "mmol/L", "mg/dL"),
    ("hemoglobin", "g/L", "g/dL"),
    ("hemoglobin", "mmol/L", "g/dL"),
    ("platelets", "/uL", "10*9/L"),
    ("temperature", "[degF]", "Cel"),
    ("creatinine", "umol/L", "mg/dL"),
    ("bilirubin_total", "umol/L", "mg/dL"),
]


@FAST
@given(st.sampled_from(PAIRS), st.floats(0.001, 1e6, allow_nan=False))
def test_unit_conversion_round_trips(pair: tuple[str, str, str], value: float) -> None:
    analyte, unit, canonical = pair
    forward = KB.units.conversion(analyte, unit)
    canonical_value = forward.scale * value + forward.offset
    back = (canonical_value - forward.offset) / forward.scale
    assert abs(back - value) <= 1e-9 * max(1.0, abs(value))
    identity = KB.units.convert(analyte, canonical_value, canonical)  # canonical unit converts to itself
    assert abs(identity - canonical_value) <= 1e-9 * max(1.0, abs(canonical_value))


@FAST
@given(st.lists(st.tuples(st.integers(0, 400), st.floats(0.0, 5000, allow_nan=False)), max_size=40))
def test_rapid_rise_matches_the_pairwise_definition(points: list[tuple[int, float]]) -> None:
    """The linear-time rapid-rise search finds a pair exactly when some pair satisfies the definition."""
    from datetime import timedelta

    from cds_service.engine.instruments.iec_hs.required import rapid_rise as _rapid_rise
    from cds_service.engine.model import LabValue
    from tests.fhir_builders import T0

    values = [
        LabValue(
            analyte="ferritin",
            value=v,
            unit="ng/mL",
            time=T0 + timedelta(hours=h),
            resource_id=f"o{i}",
            code="2276-4",
            original_value=v,
            original_unit="ng/mL",
        )
        for i, (h, v) in enumerate(sorted(points))
    ]
    brute = any(
        b.time - a.time <= timedelta(hours=72) and a.value > 0 and b.value >= 2.0 * a.value
        for j, b in enumerate(values)
        for a in values[:j]
    )
    found = _rapid_rise(values, 2.0, 72.0)
    assert (found is not None) == brute
    if found is not None:
        earlier, later = found
        assert later.time - earlier.time <= timedelta(hours=72) and later.value >= 2.0 * earlier.value
