"""Typed, immutable results of each pipeline stage. Serialized to camelCase JSON by serialize.py."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Literal, Protocol

import msgspec

Status = Literal["met", "not-met", "unknown", "not-applicable"]
CrsStatus = Literal["none", "unknown", "active", "resolving", "resolved"]
CrsSource = Literal["condition", "documented", "inferred"]
IecStatus = Literal["met", "possible", "not-met", "indeterminate", "not-applicable"]
FindingState = Literal["present", "absent", "unknown"]


RangeSource = Literal["observation", "fallback", "none"]


class LabValue(msgspec.Struct, gc=False, kw_only=True):
    """One normalized measurement in its analyte's canonical unit.

    Treated as immutable. A msgspec struct, not a dataclass: thousands are built per hook, and a struct is
    built and freed in C (about a third of the time) and is not tracked by the cyclic collector (it holds
    only strings, numbers and a datetime, so it cannot be part of a cycle).
    """

    analyte: str
    value: float
    unit: str
    time: datetime
    resource_id: str
    code: str
    original_value: float
    original_unit: str
    comparator: str | None = None
    low: float | None = None
    high: float | None = None
    range_source: RangeSource = "none"
    preliminary: bool = False
    fasting: bool = False
    scale: float = 1.0  # canonical units per reported unit (not serialized: see NOT_SERIALIZED)
    # When the result was released (Observation.issued), kept only when later than `time`: until then
    # the value did not exist for anyone looking at the record (an evaluation at an earlier instant).
    issued: datetime | None = None

    NOT_SERIALIZED: ClassVar[frozenset[str]] = frozenset({"scale", "issued"})

    @property
    def increment(self) -> float:
        """One reporting increment in canonical units, inferred from the decimals of the reported value."""
        text = repr(self.original_value)
        decimals = 0 if "e" in text or text.endswith(".0") or "." not in text else len(text.split(".")[1])
        return abs(self.scale) * 10.0 ** (-decimals)


@dataclass(frozen=True, slots=True)
class DataIssue:
    """A resource (or element) that was excluded or flagged, and why."""

    resource: str
    problem: str
    path: str | None = None
    severity: Literal["excluded", "flagged"] = "excluded"
    # A result whose value could not be read: its analyte, effective time and release (issued), so a card
    # can say which decisive result it could not see, once it was on record (not in the JSON document: the
    # resource id is there).
    analyte: str | None = field(default=None, metadata={"json": False})
    time: datetime | None = field(default=None, metadata={"json": False})
    released: datetime | None = field(default=None, metadata={"json": False})


@dataclass(frozen=True, slots=True)
class FindingRecord:
    """A clinical finding from Conditions: present, explicitly absent (refuted) or unknown."""

    finding: str
    state: FindingState
    resource_id: str | None = None
    onset: datetime | None = None
    severity: str = ""  # the Condition's severity codes and text, lower case


@dataclass(frozen=True, slots=True, kw_only=True)
class DrugEvent:
    """A drug given (or ordered) at a time, by drug class; an infusion has an end (None while it runs)."""

    drug_class: str
    role: str
    time: datetime
    resource_id: str
    source: Literal["administration", "request", "statement"]
    text: str
    end: datetime | None = None
    period: bool = False  # an effectivePeriod (an infusion), not a single administration time
    status: str | None = None  # the resource's status code (an order's "active", "completed", ...)


@dataclass(frozen=True, slots=True)
class ProcedureEvent:
    kind: str
    time: datetime
    resource_id: str
    text: str
    end: datetime | None = None  # the end of a performedPeriod (None: a single time, or still running)
    period: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CrsEpisode:
    """A cytokine release syndrome episode as known at the evaluation instant, merged from its sources:
    coded Conditions, documented grades (flowsheet rows) and raw data (inferred by the ASTCT 2019 grading).
    `source` is the most authoritative one that contributed; `evidence` holds what each said."""

    onset: datetime | None
    abatement: datetime | None
    max_grade: int | None
    latest_grade: int | None
    status: Literal["active", "resolving", "resolved"]
    resource_ids: tuple[str, ...]
    source: CrsSource = "condition"
    evidence: tuple[Evidence, ...] = ()


@dataclass(frozen=True, slots=True)
class Therapy:
    """The immune effector cell therapy on record, if any."""

    found: bool
    product_id: str | None = None
    product: str | None = None
    target: str | None = None
    infusion_time: datetime | None = None
    day_post_infusion: int | None = None
    resource_id: str | None = None
    lymphodepletion_time: datetime | None = None
    match: str | None = None  # how the product was recognised (rxnorm, ndc, name, procedure)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a criterion was decided on: a value, a finding, a drug, or an explanation."""

    kind: Literal["value", "finding", "drug", "procedure", "note"]
    description: str
    resource_id: str | None = None
    analyte: str | None = None
    value: float | None = None
    unit: str | None = None
    time: datetime | None = None
    boundary: bool = False
    # In a criterion read over several analytes (cytopenias, transaminases, coagulation), the items that met
    # it, so a card shows a deciding value rather than the last one listed (not in the JSON document).
    decides: bool = field(default=False, metadata={"json": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class CriterionResult:
    id: str
    label: str
    status: Status
    threshold: str | None
    citation: str
    evidence: tuple[Evidence, ...] = ()
    missing: tuple[str, ...] = ()  # analytes or findings whose absence left this unknown
    points: int | None = None
    points_min: int | None = None
    points_max: int | None = None
    unverified: bool = False


@dataclass(frozen=True, slots=True)
class HScoreResult:
    score: int
    score_min: int
    score_max: int
    probability: float
    probability_qualifier: Literal["<", "=", ">"]
    probability_band: str
    probability_min: float
    probability_max: float
    above_cutoff: bool | None
    cutoff: int
    criteria: tuple[CriterionResult, ...]
    citation: str
    caveat: str


@dataclass(frozen=True, slots=True)
class CountResult:
    """HLH-2004 / HLH-94: n of N criteria, fulfilled true/false/null."""

    met_count: int
    unknown_count: int
    total: int
    required: int
    fulfilled: bool | None
    criteria: tuple[CriterionResult, ...]
    citation: str
    unverified: bool = False
    caveat: str | None = None


@dataclass(frozen=True, slots=True)
class FerritinOrganResult:
    """CARTOX / Shah: a ferritin requirement plus >= N organ criteria."""

    fulfilled: bool | None
    organ_met_count: int
    organ_unknown_count: int
    required_organ_count: int
    criteria: tuple[CriterionResult, ...]
    citation: str
    mode: str | None = None
    unverified: bool = False


@dataclass(frozen=True, slots=True)
class GradeFact:
    grade: int
    description: str
    resource_id: str | None = None
    time: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Gap:
    """What keeps a status from being decided further: a stable code (cards key on it) and its words."""

    code: str
    text: str
    analytes: tuple[str, ...] = ()  # the missing analytes, for a gap that names them


@dataclass(frozen=True, slots=True, kw_only=True)
class IecHsResult:
    status: IecStatus
    criteria: tuple[CriterionResult, ...]
    grade: int | None
    grade_label: str | None
    grade_basis: tuple[GradeFact, ...]
    grade_missing: tuple[str, ...]
    grade_is_minimum: bool
    onset: datetime | None
    citation: str
    grading_citation: str
    grading_unverified: bool
    alternatives: str
    summary: str
    gaps: tuple[Gap, ...] = ()  # what keeps the status from being decided further, most decisive first


@dataclass(frozen=True, slots=True)
class MissingData:
    analyte: str
    display: str
    loinc: str | None
    needed_by: tuple[str, ...]
    reason: Literal["no-value", "no-baseline"] = "no-value"  # no result in the window / no baseline value


@dataclass(frozen=True, slots=True, kw_only=True)
class DayGrade:
    """The highest CRS grade on one calendar day after infusion, and where it was read."""

    day: int
    date: str
    grade: int
    source: CrsSource


@dataclass(frozen=True, slots=True, kw_only=True)
class CrsGradeResult:
    """ASTCT 2019 CRS grade: today's (last 24 h), the maximum, per day, with each criterion's evidence."""

    status: CrsStatus
    current_grade: int | None
    max_grade: int | None
    grade_by_day: tuple[DayGrade, ...]
    criteria: tuple[CriterionResult, ...]
    citation: str
    unverified: bool
    summary: str


class InstrumentResult(Protocol):
    """What every instrument's result has: its criteria (with evidence) and its citation id."""

    @property
    def criteria(self) -> tuple[CriterionResult, ...]: ...

    @property
    def citation(self) -> str: ...


class Instruments(Mapping[str, InstrumentResult]):
    """Each registered instrument's result by instrument id, in registry order (see
    engine.instruments.registry; `Instrument.result()` gives a result back with its own type)."""

    __slots__ = ("_keys", "_results")

    def __init__(self, results: dict[str, InstrumentResult], keys: Mapping[str, str]) -> None:
        self._results = results
        self._keys = dict(keys)

    def __getitem__(self, instrument_id: str) -> InstrumentResult:
        return self._results[instrument_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    def json_items(self) -> Iterator[tuple[str, InstrumentResult]]:
        """(JSON key, result) pairs: the `instruments` object of the evaluation document."""
        return ((self._keys[name], result) for name, result in self._results.items())

    def replace(self, instrument_id: str, result: InstrumentResult) -> Instruments:
        """A copy with one result replaced (tests and what-if views)."""
        return Instruments({**self._results, instrument_id: result}, self._keys)


@dataclass(frozen=True, slots=True)
class PatientInfo:
    id: str | None
    age_years: float | None
    age_days: int | None
    gender: str | None
    deceased: bool | None
    deceased_time: datetime | None
    weight_kg: float | None
    weight_time: datetime | None
    pediatric: bool | None


@dataclass(frozen=True, slots=True)
class DataQuality:
    resources_seen: int
    observations_used: int
    issues: tuple[DataIssue, ...]
    fallback_ranges: tuple[str, ...]  # analytes whose ULN/LLN came from the fallback table


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """The engine's complete answer for one patient at one instant."""

    engine_version: str
    at: datetime
    window_start: datetime
    patient: PatientInfo
    therapy: Therapy
    crs: tuple[CrsEpisode, ...]
    crs_status: CrsStatus
    instruments: Instruments
    missing_data: tuple[MissingData, ...]
    data_quality: DataQuality
    drugs: tuple[DrugEvent, ...] = ()
    procedures: tuple[ProcedureEvent, ...] = ()
    latest: tuple[LabValue, ...] = ()  # the latest value of each analyte at or before `at`
    unverified: tuple[str, ...] = field(default=())
    # Every normalized value at or before `at`, by analyte: for trend charts and card logic.
    # Not part of the JSON document (it can hold thousands of values).
    labs: dict[str, tuple[LabValue, ...]] = field(default_factory=dict, metadata={"json": False})
