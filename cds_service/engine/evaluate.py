"""The pipeline: resources -> record (read once) -> the record at an instant -> instruments -> result.

`evaluate(data, at=...)` reads and evaluates one instant; `evaluate_course(record, instants)` evaluates
one record at many instants (a replay, a course report) for the cost of one read.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, Literal

from cds_service import __version__
from cds_service.engine.conditions import findings_at
from cds_service.engine.config import EngineConfig
from cds_service.engine.context import Context
from cds_service.engine.crs import CrsInputs, crs_course
from cds_service.engine.instruments.registry import REGISTRY, evaluate_all
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import (
    DataIssue,
    DataQuality,
    EvaluationResult,
    FindingRecord,
    Instruments,
    LabValue,
    MissingData,
)
from cds_service.engine.record import Record, read_record
from cds_service.engine.rows import Rows
from cds_service.engine.timeline import patient_at, therapy_at

_TIME = attrgetter("time")
MissingReason = Literal["no-value", "no-baseline"]
MISSING_REASONS: dict[str, MissingReason] = {"": "no-value", "baseline": "no-baseline"}


def _drop_future(
    labs: dict[str, list[LabValue]],
    lags: dict[str, timedelta],
    at: datetime,
    explicit_at: bool,
    tolerance: timedelta,
    issues: list[DataIssue],
) -> dict[str, list[LabValue]]:
    """Only data that existed at `at` is used: taken at or before `at` and, where the result says when it
    was released (issued), released by then. Data after `now` (+ tolerance) is a data-quality problem.
    Each series is sorted by time, so the cuts are found by bisection; only values taken within the
    series' longest release delay (`lags`) before `at` can still be unreleased, and only those are checked."""
    kept: dict[str, list[LabValue]] = {}
    later = 0
    for analyte, series in labs.items():
        cut = bisect_right(series, at, key=_TIME)
        mine = series if cut == len(series) else series[:cut]
        lag = lags.get(analyte)
        if lag is not None:
            start = bisect_right(mine, at - lag, key=_TIME)
            pending = [v for v in mine[start:] if v.issued is not None and v.issued > at]
            if pending:
                mine = mine[:start] + [v for v in mine[start:] if v.issued is None or v.issued <= at]
                later += len(pending)
        kept[analyte] = mine
        later += len(series) - cut
        if not explicit_at and cut < len(series):
            issues.extend(
                DataIssue(lab.resource_id, "dated in the future: excluded", path="effective[x]")
                for lab in series[bisect_right(series, at + tolerance, key=_TIME) :]
            )
    if explicit_at and later:
        issues.append(
            DataIssue(
                f"{later} results",
                "dated or released after the evaluation instant: not used",
                severity="flagged",
            )
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
    return evaluate_at(read_record(data, knowledge=knowledge, config=config), at)


def evaluate_course(record: Record, instants: Iterable[datetime]) -> Iterator[EvaluationResult]:
    """The record evaluated at each instant (each sees only what was on record then)."""
    for at in instants:
        yield evaluate_at(record, at)


def _documented_findings(rows: Rows, at: datetime) -> dict[str, FindingRecord]:
    """A documented ICANS grade > 0 is the ICANS finding (the site's flowsheet says so)."""
    icans = [r for r in rows.documented if r.kind == "icans_grade" and r.time <= at and r.value > 0]
    if not icans:
        return {}
    return {"icans": FindingRecord("icans", "present", icans[0].resource_id, icans[0].time)}


def evaluate_at(record: Record, at: datetime | None = None) -> EvaluationResult:
    """The record as it was at `at` (default: now), every registered instrument evaluated on it."""
    kb, config = record.kb, record.config
    explicit_at = at is not None
    at = (at or datetime.now(UTC)).astimezone(UTC)
    issues = list(record.issues)
    labs = _drop_future(
        record.labs,
        record.release_lags,
        at,
        explicit_at,
        timedelta(minutes=config.future_tolerance_minutes),
        issues,
    )
    drugs = [d for d in record.drugs if d.time <= at]
    procedures = [p for p in record.procedures if p.time <= at]
    therapy = therapy_at(kb, record.infusions, drugs, procedures, at)
    patient = patient_at(record.patients, labs, at)
    infused = tuple(i.time for i in record.infusions if i.time <= at)
    rows = Rows(
        devices=[r for r in record.rows.devices if r.time <= at and (r.issued is None or r.issued <= at)],
        documented=[
            r for r in record.rows.documented if r.time <= at and (r.issued is None or r.issued <= at)
        ],
    )
    course = crs_course(
        CrsInputs(
            kb=kb,
            at=at,
            infusions=infused,
            labs=labs,
            devices=rows.devices,
            procedures=procedures,
            drugs=drugs,
            documented=rows.documented,
            conditions=record.conditions,
            age_years=patient.age_years,
        )
    )
    findings = {**_documented_findings(rows, at), **findings_at(record.conditions, at)}
    ctx = Context(
        kb=kb,
        config=config,
        at=at,
        window_start=at - config.lookback,
        labs=labs,
        findings=findings,
        drugs=drugs,
        procedures=procedures,
        therapy=therapy,
        crs=list(course.episodes),
        patient=patient,
        crs_course=course,
        infusions=infused,
        devices=rows.devices,
        documented=rows.documented,
        supplied_types=record.supplied_types,
    )
    instruments = evaluate_all(ctx)
    return EvaluationResult(
        engine_version=__version__,
        at=at,
        window_start=ctx.window_start,
        patient=ctx.patient,
        therapy=therapy,
        crs=course.episodes,
        crs_status=course.status,
        instruments=instruments,
        missing_data=missing_data(kb, instruments),
        data_quality=DataQuality(
            resources_seen=record.resources_seen,
            observations_used=sum(len(v) for v in labs.values()),
            issues=tuple(issues),
            fallback_ranges=record.fallback_ranges,
        ),
        drugs=tuple(drugs),
        procedures=tuple(procedures),
        latest=tuple(series[-1] for series in labs.values() if series),
        unverified=unverified_items(kb, instruments),
        labs={analyte: tuple(series) for analyte, series in labs.items() if series},
    )


def missing_data(kb: Knowledge, instruments: Instruments) -> tuple[MissingData, ...]:
    """Analytes whose absence leaves a criterion undecided, with the LOINC code to order them by: either no
    value in the window ("no-value"), or a value but no baseline to judge it by ("no-baseline")."""
    needed: dict[tuple[str, MissingReason], list[str]] = {}
    for instrument in REGISTRY:
        for criterion in instruments[instrument.id].criteria:
            if criterion.status != "unknown":
                continue
            for item in criterion.missing:
                analyte, _, what = item.partition(" ")
                reason = MISSING_REASONS.get(what)
                if analyte in kb.analytes and reason is not None:
                    users = needed.setdefault((analyte, reason), [])
                    if instrument.key not in users:
                        users.append(instrument.key)
    order = list(kb.analytes)
    return tuple(
        MissingData(analyte, kb.display(analyte), kb.first_loinc(analyte), tuple(users), reason)
        for (analyte, reason), users in sorted(
            needed.items(), key=lambda item: (order.index(item[0][0]), item[0][1])
        )
    )


def unverified_items(kb: Knowledge, instruments: Instruments) -> tuple[str, ...]:
    """What this evaluation rests on that is UNVERIFIED, one line each (texts from the data files)."""
    items = [note for i in REGISTRY if (note := i.unverified_note(kb, instruments)) is not None]
    pulmonary = kb.ctcae["pulmonary"]  # the organ-toxicity proxies every evaluation uses
    spo2 = kb.threshold("spo2", pulmonary["spo2"]).describe()
    items.append(str(pulmonary["unverified_note"]).format(spo2=spo2))
    return tuple(items)
