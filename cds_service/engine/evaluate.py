"""The pipeline: resources -> normalized observations -> timeline -> instruments -> result."""

from __future__ import annotations

from bisect import bisect_right
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

from cds_service import __version__
from cds_service.engine.config import EngineConfig
from cds_service.engine.context import Context
from cds_service.engine.events import drug_events, findings_from_conditions, procedure_events
from cds_service.engine.instruments.registry import REGISTRY, evaluate_all
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import (
    DataIssue,
    DataQuality,
    EvaluationResult,
    Instruments,
    LabValue,
    MissingData,
)
from cds_service.engine.observations import ObservationNormalizer
from cds_service.engine.resources import collect
from cds_service.engine.timeline import (
    crs_episodes,
    find_therapy,
    patient_info,
    with_lymphodepletion,
)

_TIME = attrgetter("time")


def _drop_future(
    labs: dict[str, list[LabValue]],
    at: datetime,
    explicit_at: bool,
    tolerance: timedelta,
    issues: list[DataIssue],
) -> dict[str, list[LabValue]]:
    """Only data at or before `at` is used; data after `now` (+ tolerance) is a data-quality problem.
    Each series is sorted by time, so the cuts are found by bisection."""
    kept: dict[str, list[LabValue]] = {}
    later = 0
    for analyte, series in labs.items():
        cut = bisect_right(series, at, key=_TIME)
        kept[analyte] = series if cut == len(series) else series[:cut]
        later += len(series) - cut
        if not explicit_at and cut < len(series):
            issues.extend(
                DataIssue(lab.resource_id, "dated in the future: excluded", path="effective[x]")
                for lab in series[bisect_right(series, at + tolerance, key=_TIME) :]
            )
    if explicit_at and later:
        issues.append(
            DataIssue(f"{later} results", "dated after the evaluation instant: not used", severity="flagged")
        )
    return kept


def evaluate(
    data: Any,
    *,
    knowledge: Knowledge,
    at: datetime | None = None,
    config: EngineConfig | None = None,
) -> EvaluationResult:
    """Evaluate every registered instrument for the one patient in `data` at instant `at` (default: now).

    `data` is a FHIR Bundle (any type), a resource, a list of resources, or a CDS Hooks prefetch dict.
    `knowledge` is the caller's (the app's, the CLI's): there is no module-level default, so a site's own
    mappings are used on every path. Raises InputError if `data` is none of the above.
    """
    kb = knowledge
    config = config or EngineConfig.from_knowledge(kb)
    explicit_at = at is not None
    at = (at or datetime.now(UTC)).astimezone(UTC)
    resources = collect(data)
    issues = list(resources.issues)
    normalizer = ObservationNormalizer(kb)
    labs = normalizer.normalize(resources.by_type.get("Observation", []))
    issues += normalizer.issues
    labs = _drop_future(labs, at, explicit_at, timedelta(minutes=config.future_tolerance_minutes), issues)
    conditions = resources.by_type.get("Condition", [])
    drugs = drug_events(kb, resources, at, issues)
    procedures = procedure_events(kb, resources.by_type.get("Procedure", []), at)
    therapy = with_lymphodepletion(find_therapy(kb, resources, at), drugs, procedures)
    crs = crs_episodes(kb, conditions, at)
    ctx = Context(
        kb=kb,
        config=config,
        at=at,
        window_start=at - config.lookback,
        labs=labs,
        findings=findings_from_conditions(kb, conditions, at),
        drugs=drugs,
        procedures=procedures,
        therapy=therapy,
        crs=crs,
        patient=patient_info(resources.by_type.get("Patient", []), labs, at),
        supplied_types=frozenset(t for t, items in resources.by_type.items() if items),
    )
    instruments = evaluate_all(ctx)
    return EvaluationResult(
        engine_version=__version__,
        at=at,
        window_start=ctx.window_start,
        patient=ctx.patient,
        therapy=therapy,
        crs=tuple(crs),
        crs_status=crs[-1].status if crs else "none-recorded",
        instruments=instruments,
        missing_data=missing_data(kb, instruments),
        data_quality=DataQuality(
            resources_seen=resources.seen,
            observations_used=sum(len(v) for v in labs.values()),
            issues=tuple(issues),
            fallback_ranges=tuple(sorted(normalizer.fallback_analytes)),
        ),
        drugs=tuple(drugs),
        procedures=tuple(procedures),
        latest=tuple(series[-1] for series in labs.values() if series),
        unverified=unverified_items(kb, instruments),
        labs={analyte: tuple(series) for analyte, series in labs.items() if series},
    )


def missing_data(kb: Knowledge, instruments: Instruments) -> tuple[MissingData, ...]:
    """Analytes whose absence leaves a criterion undecided, with the LOINC code to order them by."""
    needed: dict[str, list[str]] = {}
    for instrument in REGISTRY:
        for criterion in instruments[instrument.id].criteria:
            if criterion.status != "unknown":
                continue
            for item in criterion.missing:
                if item in kb.analytes:
                    users = needed.setdefault(item, [])
                    if instrument.key not in users:
                        users.append(instrument.key)
    order = list(kb.analytes)
    return tuple(
        MissingData(analyte, kb.display(analyte), kb.first_loinc(analyte), tuple(users))
        for analyte, users in sorted(needed.items(), key=lambda item: order.index(item[0]))
    )


def unverified_items(kb: Knowledge, instruments: Instruments) -> tuple[str, ...]:
    """What this evaluation rests on that is UNVERIFIED, one line each (texts from the data files)."""
    items = [note for i in REGISTRY if (note := i.unverified_note(kb, instruments)) is not None]
    pulmonary = kb.ctcae["pulmonary"]  # the organ-toxicity proxies every evaluation uses
    spo2 = kb.threshold("spo2", pulmonary["spo2"]).describe()
    items.append(str(pulmonary["unverified_note"]).format(spo2=spo2))
    return tuple(items)
