"""ASTCT 2019 CRS grade (Lee DW, et al. Biol Blood Marrow Transplant 2019;25:625-638), as widely
reproduced [R], from the CRS course (engine.crs): today's grade (the last 24 h), the maximum, the grade of
each day after infusion, and the evidence for fever, hypotension and hypoxia. A grade read from raw data
says so ("inferred from vital signs"); fever in a neutropenic patient may be infection.
"""

from __future__ import annotations

from datetime import timedelta

from cds_service.engine.context import Context
from cds_service.engine.crs.signs import Sign
from cds_service.engine.model import CriterionResult, CrsGradeResult, CrsSource, DayGrade, Evidence, Status

INSTRUMENT = "astct_crs"
KIND_OF = {"fever": ("fever",), "hypotension": ("hypotension", "vasopressor"), "hypoxia": ("oxygen",)}


def _days(ctx: Context) -> dict[int, DayGrade]:
    """The highest grade per calendar day after the first infusion, from every source (coded episodes give
    their grade to each of their days: a Condition does not say which day was worst)."""
    if not ctx.infusions:
        return {}
    day0 = ctx.infusions[0].date()
    days: dict[int, DayGrade] = {}

    def put(day: int, grade: int, source: CrsSource) -> None:
        if day >= 0 and (day not in days or grade > days[day].grade):
            date = (day0 + timedelta(days=day)).isoformat()
            days[day] = DayGrade(day=day, date=date, grade=grade, source=source)

    for episode in ctx.crs_course.inferred:
        for sign in episode.signs:
            put((sign.start.date() - day0).days, sign.grade, "inferred")
    for row in (r for r in ctx.documented if r.kind == "crs_grade"):
        put((row.time.date() - day0).days, row.value, "documented")
    for merged in ctx.crs:
        if merged.source == "condition" and merged.onset is not None and merged.max_grade:
            end = (merged.abatement or ctx.at).date()
            for offset in range((end - merged.onset.date()).days + 1):
                put((merged.onset.date() - day0).days + offset, merged.max_grade, "condition")
    return dict(sorted(days.items()))


def _criterion(ctx: Context, id: str, signs: list[Sign], citation: str) -> CriterionResult:
    kinds = KIND_OF[id]
    found = [s for s in signs if s.kind in kinds]
    label = ctx.kb.label(INSTRUMENT, id)
    threshold = ctx.kb.labels[INSTRUMENT][id].get("threshold")
    status: Status = "met" if found else ("not-met" if ctx.crs_course.inferred or signs else "unknown")
    worst = sorted(found, key=lambda s: (-s.grade, s.start))[:3]
    evidence = tuple(
        Evidence(
            "value",
            f"{s.description} (grade {s.grade}, inferred from vital signs)",
            s.resource_id,
            time=s.start,
        )
        for s in worst
    )
    return CriterionResult(
        id=id,
        label=label,
        status=status,
        threshold=threshold,
        citation=citation,
        evidence=evidence,
        unverified=True,
    )


def evaluate_astct_crs(ctx: Context) -> CrsGradeResult:
    doc = ctx.kb.criteria[INSTRUMENT]
    citation = str(doc["citation"])
    course = ctx.crs_course
    signs = [s for episode in course.inferred for s in episode.signs]
    days = _days(ctx)
    today = (ctx.at.date() - ctx.infusions[0].date()).days if ctx.infusions else None
    recent = [d.grade for d in days.values() if today is not None and today - 1 <= d.day <= today]
    max_grade = max((d.grade for d in days.values()), default=None)
    if max_grade is None and ctx.crs:
        max_grade = max((e.max_grade or 0 for e in ctx.crs), default=None) or None
    current = None if course.status in {"none", "unknown"} else (max(recent) if recent else 0)
    if course.status == "resolved":
        current = 0
    criteria = tuple(_criterion(ctx, id, signs, citation) for id in KIND_OF)
    return CrsGradeResult(
        status=course.status,
        current_grade=current,
        max_grade=max_grade,
        grade_by_day=tuple(days.values()),
        criteria=criteria,
        citation=citation,
        unverified=bool(doc.get("unverified", False)),
        summary=course.reason,
    )


def summarize(result: CrsGradeResult) -> str:
    if result.status in {"none", "unknown"}:
        return result.summary
    today = (
        f"grade {result.current_grade} today" if result.current_grade is not None else "grade today unknown"
    )
    return (
        f"{result.status}, maximum grade {result.max_grade if result.max_grade is not None else '?'}, {today}"
    )


def details(result: CrsGradeResult) -> tuple[str, ...]:
    if not result.grade_by_day:
        return ()
    days = ", ".join(f"d{d.day} {d.grade}" for d in result.grade_by_day)
    return (f"grade by day after infusion: {days}",)


def unverified(result: CrsGradeResult) -> bool:
    return result.unverified
