"""The required criterion: elevated ferritin (> 2 x ULN or > 2 x baseline, and/or rapidly rising), read as
the IEC-HS signal it is only when it rises again after the CRS phase [D] (criteria/iec_hs.yaml
`second_rise`, clinical register): after CAR-T almost every patient with CRS keeps a ferritin above 2 x ULN
for days to weeks while it falls, which is the expected course, not IEC-HS (the seed's section 2).

The signal, by what is known of CRS:
* CRS episodes on record: a second rise (>= fold x the low that followed the course's peak, after a fall of
  >= min_fall), or a ferritin that first becomes elevated after CRS resolved;
* no CRS (known): a rise of >= fold from the lowest value since infusion, baseline included;
* CRS course unknown: the same rise from the lowest value (it cannot be told from a CRS rise, so the
  status stays at most "possible").
In each case the latest ferritin in the window must still be elevated.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cds_service.engine.context import Context, value_evidence
from cds_service.engine.ferritin import Rise, rise_from_low, rising_again
from cds_service.engine.instruments.iec_hs.window import window_start
from cds_service.engine.model import CriterionResult, Evidence, LabValue, Status
from cds_service.engine.units import scaled


@dataclass(frozen=True, slots=True)
class FerritinSignal:
    criterion: CriterionResult
    onset: datetime | None  # when the signal was first seen (the onset estimate)
    phase_start: datetime | None  # where the IEC-HS phase starts (the low before the rise)


def rapid_rise(values: list[LabValue], fold: float, hours: float) -> tuple[LabValue, LabValue] | None:
    """First pair (earlier, later) within `hours` where later >= fold x earlier.

    Linear time: a monotonic deque keeps the lowest positive value of the trailing window (values are
    sorted by time), so thousands of ferritin results cost one pass instead of every pair.
    """
    span = timedelta(hours=hours)
    window: deque[LabValue] = deque()
    for later in values:
        while window and later.time - window[0].time > span:
            window.popleft()
        if window and later.value >= scaled(fold, window[0].value):
            return window[0], later
        if later.value > 0:
            while window and window[-1].value >= later.value:
                window.pop()
            window.append(later)
    return None


def _elevated(ctx: Context, spec: dict[str, Any], lab: LabValue) -> str | None:
    """Why `lab` is elevated (> k x ULN or > k x baseline), or None."""
    uln_factor = float(spec["ferritin_uln_multiple"]["value"])
    base_factor = float(spec["ferritin_baseline_multiple"]["value"])
    if lab.high is not None and lab.value > scaled(uln_factor, lab.high):
        return f"> {uln_factor:g} x ULN {lab.high:g}"
    baseline = ctx.baseline("ferritin")
    if baseline is not None and baseline.value > 0 and lab.value > scaled(base_factor, baseline.value):
        return f"> {base_factor:g} x baseline {baseline.value:g}"
    return None


def _course_values(ctx: Context) -> list[LabValue]:
    """Ferritin from the baseline (the last value on or before infusion) to the instant."""
    baseline = ctx.baseline("ferritin")
    start = baseline.time if baseline is not None else (ctx.therapy.infusion_time or ctx.window_start)
    return ctx.values("ferritin", start, ctx.at)


def _since_phase(ctx: Context) -> list[LabValue]:
    """Ferritin since the CRS phase began (or since infusion without CRS): what a rise is judged on."""
    episodes = ctx.crs_course.episodes
    start = episodes[0].onset if episodes and episodes[0].onset else ctx.therapy.infusion_time
    return ctx.values("ferritin", start or ctx.window_start, ctx.at)


def _rise(ctx: Context, spec: dict[str, Any], values: list[LabValue]) -> tuple[Rise | None, str]:
    """The rise that makes the signal, and what kind of rise it is."""
    rule = spec["second_rise"]
    course = ctx.crs_course
    if not course.episodes:
        first = values[0].time if values else ctx.at
        found = rise_from_low(values, first, ctx.at, float(rule["fold"]))
        return found, "rise from the course's lowest value"
    onset = course.episodes[0].onset or (values[0].time if values else ctx.at)
    end = course.episodes[-1].abatement
    rising = rising_again(values, onset, end, ctx.at, rule, spec["rapid_rise"])
    if rising is not None:
        return rising
    return _first_elevated_after_crs(ctx, spec, values), "first elevated after CRS resolved"


def _first_elevated_after_crs(ctx: Context, spec: dict[str, Any], values: list[LabValue]) -> Rise | None:
    episode = ctx.crs_course.episodes[-1]
    if episode.abatement is None or episode.onset is None:
        return None
    during = [lab for lab in values if episode.onset <= lab.time <= episode.abatement]
    if not during or any(_elevated(ctx, spec, lab) for lab in during):
        return None  # without a value during CRS, "first elevated after it" cannot be told
    after = [lab for lab in values if lab.time > episode.abatement]
    first = next((lab for lab in after if _elevated(ctx, spec, lab)), None)
    if first is None:
        return None
    low = min(during or after[:1], key=lambda lab: lab.value)
    return Rise(low, first, None)


def _rapid_since(ctx: Context, spec: dict[str, Any], rise: Rise) -> tuple[LabValue, LabValue] | None:
    """A rapid rise (>= fold within the hours of `rapid_rise`) from the rise's low on: "rapidly rising"
    stands for "elevated" in the seed's Table 1 (> 2 x ULN or > 2 x baseline and/or rapidly rising)."""
    rule = spec["rapid_rise"]
    values = ctx.values("ferritin", rise.nadir.time, ctx.at)
    return rapid_rise(values, float(rule["fold"]), float(rule["within_hours"]))


def ferritin_required(ctx: Context, spec: dict[str, Any], citation: str) -> FerritinSignal:
    """The required ferritin criterion as the IEC-HS signal, with its onset estimate and phase start."""
    label = ctx.kb.label("iec_hs", "ferritin")
    described = ctx.kb.label("iec_hs", "ferritin", "threshold")

    def result(status: Status, evidence: list[Evidence], missing: tuple[str, ...] = ()) -> CriterionResult:
        return CriterionResult(
            id="ferritin",
            label=label,
            status=status,
            threshold=described,
            citation=citation,
            evidence=tuple(evidence),
            missing=missing,
        )

    in_window = ctx.values("ferritin", window_start(ctx))
    if not in_window:
        note = Evidence("note", f"no ferritin result in the last {ctx.config.lookback_days:g} days")
        return FerritinSignal(result("unknown", [note], ("ferritin",)), None, None)
    latest = in_window[-1]
    rise, kind = _rise(ctx, spec, _course_values(ctx))
    elevated = _elevated(ctx, spec, latest)
    rapid = _rapid_since(ctx, spec, rise) if rise is not None else None
    if rise is not None and (elevated or rapid):
        why = elevated or ""
        if rapid is not None and not elevated:
            why = f"rose from {rapid[0].value:g} to {rapid[1].value:g}: rapidly rising"
        evidence = [
            value_evidence(ctx.kb, rise.nadir, "lowest value before the rise"),
            value_evidence(ctx.kb, rise.value, f"{kind} [D]"),
            value_evidence(ctx.kb, latest, f"latest ({why})"),
        ]
        return FerritinSignal(result("met", evidence), rise.value.time, rise.nadir.time)
    return FerritinSignal(_not_met(ctx, spec, in_window, rise, result), None, None)


def _not_met(
    ctx: Context,
    spec: dict[str, Any],
    in_window: list[LabValue],
    rise: Rise | None,
    result: Callable[..., CriterionResult],
) -> CriterionResult:
    latest = in_window[-1]
    peak = max(in_window, key=lambda lab: lab.value)
    evidence = [value_evidence(ctx.kb, peak, "peak in the window")]
    why = _elevated(ctx, spec, latest) or _elevated(ctx, spec, peak)
    if why is None:
        if ctx.baseline("ferritin") is None and peak.high is not None and peak.value > peak.high:
            evidence.append(
                Evidence("note", "no baseline ferritin: the > 2 x baseline test cannot be excluded")
            )
            return result("unknown", evidence, ("ferritin baseline",))
        return result("not-met", [*evidence, Evidence("note", "not elevated in the window")])
    if rise is None and len(_since_phase(ctx)) < 2:
        text = "a single ferritin since CRS began (or since infusion): whether it rises again cannot be told"
        return result("unknown", [*evidence, Evidence("note", text)], ("ferritin course",))
    if rise is not None:
        text = "rose earlier, no longer elevated"
    elif ctx.crs_course.episodes:
        text = "elevated but not rising again after the CRS phase: the expected course after CRS [D]"
    else:
        text = "elevated but not rising from its lowest value since infusion [D]"
    return result(
        "not-met", [*evidence, value_evidence(ctx.kb, latest, f"latest ({why})"), Evidence("note", text)]
    )
