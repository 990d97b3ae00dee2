"""The card detail, in the issue-17 order: what is happening, therapy given, the next step, what the service
could not see; then one line pointing to the dashboard and the short sources. No tables: EHR sidebars render
them poorly. Every statement carries its citation marker; the full evidence is on the dashboard.
"""

from __future__ import annotations

from cds_service.cards.common import CardContext, Env, crs_word, grade_phrase, timing, when
from cds_service.cards.content import Option
from cds_service.cards.course import Course
from cds_service.cards.dosing import Body, arithmetic, doses_for
from cds_service.cards.markdown import md
from cds_service.cards.plan import Step
from cds_service.engine.instruments.registry import IEC_HS
from cds_service.engine.model import CriterionResult, DataIssue, EvaluationResult, Evidence

MAX_FINDINGS = 4  # plus the status line: the 3-5 decisive findings
MAX_COURSES = 4
MAX_GAPS = 3
# The decisive criteria first: the required ferritin, the HLH-specific manifestations, then the rest.
ORDER = ("ferritin", "hypofibrinogenemia", "transaminases", "hemophagocytosis", "cytopenias")


def section(title: str, items: list[str]) -> list[str]:
    return [f"**{md(title)}**", *(f"- {item}" for item in items)] if items else []


def _value(criterion: CriterionResult) -> Evidence | None:
    """The value to show: the last one that met the criterion (of several analytes), else the last one."""
    values = [e for e in criterion.evidence if e.kind == "value" and e.value is not None]
    deciding = [e for e in values if e.decides]
    return (deciding or values)[-1] if values else None


def _finding(env: Env, result: EvaluationResult, criterion: CriterionResult) -> str:
    evidence = _value(criterion)
    cite = env.cite([criterion.citation])
    if evidence is None or evidence.analyte is None or evidence.unit is None:
        fact = next((e for e in criterion.evidence if e.kind != "note"), None)
        return f"{md(env.text(fact.description if fact else criterion.label))} {cite}"
    name = env.kb.display(evidence.analyte)
    shown = env.quantity(evidence.value or 0.0, evidence.unit)
    at = f" ({when(env, result, evidence.time)})" if evidence.time else ""
    limit = env.text(criterion.threshold or criterion.label)
    return f"{md(f'{name} {shown}{at}; {limit}')} {cite}"


def _crs_line(env: Env, result: EvaluationResult) -> str:
    words = crs_word(env, result)
    if result.crs:
        episode = result.crs[-1]
        words += f" ({env.label('crs_' + episode.source)}"
        words += f", max grade {episode.max_grade})" if episode.max_grade is not None else ")"
    return md(words)


def happening(env: Env, result: EvaluationResult) -> list[str]:
    iec = IEC_HS.result(result.instruments)
    status = env.text(iec.summary) if iec.status != "met" else "IEC-HS criteria met"
    if iec.grade is not None:
        status += f", {grade_phrase(env, result)}"
    head = f"**{md(status)}**, {md(timing(env, result, short=False))}; {_crs_line(env, result)}"
    head += f" {env.cite([iec.citation])}"
    met = {c.id: c for c in iec.criteria if c.status == "met" and c.id not in {"iec-therapy", "onset"}}
    chosen = [met[cid] for cid in ORDER if cid in met] + [c for cid, c in met.items() if cid not in ORDER]
    return [head, *(_finding(env, result, c) for c in chosen[:MAX_FINDINGS])]


def sentence(text: str) -> str:
    """Text from the data as a sentence start: its first letter capitalised."""
    return text[:1].upper() + text[1:]


def course_line(env: Env, result: EvaluationResult, course: Course, *, state: bool = True) -> str:
    """'Anakinra: first dose day +12 08:00, last dose day +13 14:00, 6 given, running' (escaped)."""
    first = when(env, result, course.first)
    if course.last is None:
        text = env.label("course_order", drug=course.name, first=first)
    elif course.doses == 1:
        text = env.label("course_single", drug=course.name, first=first)
    else:
        last = when(env, result, course.last)
        text = env.label("course", drug=course.name, first=first, last=last, count=str(course.doses))
    if state:
        text += f", {env.label('running' if course.running else 'given')}"
    return md(text)


def therapy(env: Env, result: EvaluationResult, courses: tuple[Course, ...]) -> list[str]:
    return [course_line(env, result, course) for course in courses[-MAX_COURSES:]]


def option_line(env: Env, option: Option, result: EvaluationResult, body: Body) -> str:
    """'**Anakinra** [1, 2]: Adults: 100–200 mg ...; the seed's condition; notes for this population.'"""
    parts: list[str] = []
    for dose in doses_for(option, result.patient):
        text = dose.text if len(doses_for(option, result.patient)) == 1 else f"{dose.population}: {dose.text}"
        worked = arithmetic(dose, body)
        parts.append(text + (f" ({'; '.join(worked)})" if worked else ""))
        parts.extend(dose.notes)
    if option.condition:
        parts.append(sentence(option.condition))
    parts.extend(option.unverified)
    name = option.order_agent or option.agent
    return f"**{md(name)}** {env.cite(option.citations)}: " + md(
        ". ".join(p.rstrip(".") for p in parts) + "."
    )


def pulse_line(env: Env, result: EvaluationResult, body: Body) -> str | None:
    """Under the standard corticosteroid regimen, the seed's pulse dosing with its own condition (shown, not
    applied)."""
    pulse = next((o for o in env.content.options if o.id == "pulse_corticosteroids"), None)
    doses = doses_for(pulse, result.patient) if pulse else ()
    if pulse is None or not doses or not pulse.condition:
        return None
    worked = arithmetic(doses[0], body)
    text = f"Pulse dosing, {pulse.condition}: {doses[0].text}" + (f" ({'; '.join(worked)})" if worked else "")
    return f"{md(text)} {env.cite(pulse.citations)}"


def next_lines(env: Env, result: EvaluationResult, step: Step, body: Body) -> list[str]:
    lines: list[str] = []
    if step.keep:
        line = env.label("line_" + step.line)
        lines.append(
            md(
                env.label("first_line_given")
                if step.line == "first"
                else f"{line[0].upper()}{line[1:]}: running"
            )
        )
    for option in step.options:
        lines.append(option_line(env, option, result, body))
        if option.id == "dexamethasone":
            pulse = pulse_line(env, result, body)
            if pulse:
                lines.append(pulse)
    if step.decision_point is not None and step.next_line is not None:
        text = env.label(
            "decision_point",
            when=when(env, result, step.decision_point),
            next=env.label("line_" + step.next_line),
        )
        lines.append(f"{md(text)} {env.cite(['fugere2023', 'hines2023', 'project_derived'])}")
    elif step.keep and step.next_line is None:
        lines.append(md(env.label("no_next")))
    return lines


def unseen(env: Env, result: EvaluationResult, ctx: CardContext) -> list[str]:
    """At most three: the service's data gaps, what keeps the IEC-HS status from being decided (the
    engine's gaps by code, in the card's words), then decisive results that could not be read."""
    items = [md(env.label("gap_key", what=env.content.prefetch_gaps.get(key, key))) for key in ctx.data_gaps]
    items += [md(env.gap(result, gap, "detail")) for gap in IEC_HS.result(result.instruments).gaps]
    items += unreadable(env, result)
    return items[:MAX_GAPS]


def unreadable(env: Env, result: EvaluationResult) -> list[str]:
    """One line per decisive analyte with a result in the window that was on record at the instant but
    whose value could not be read (the latest one's reason)."""
    found: dict[str, list[DataIssue]] = {}
    for issue in result.data_quality.issues:
        if issue.analyte not in env.content.unread_analytes or issue.time is None:
            continue
        on_record = max(issue.time, issue.released or issue.time)
        if result.window_start <= issue.time and on_record <= result.at:
            found.setdefault(issue.analyte, []).append(issue)
    lines = []
    for analyte in env.content.unread_analytes:
        issues = sorted(found.get(analyte, []), key=lambda i: i.time or result.at)
        if not issues:
            continue
        latest = issues[-1]
        words = {
            "analyte": env.kb.display(analyte),
            "when": when(env, result, latest.time),
            "why": latest.problem.removesuffix(": excluded"),
        }
        if len(issues) == 1:
            lines.append(md(env.label("unread_one", **words)))
        else:
            lines.append(md(env.label("unread_many", count=str(len(issues)), **words)))
    return lines


def assemble(env: Env, sections: list[list[str]]) -> str:
    blocks = ["\n".join(lines) for lines in sections if lines]
    blocks.append(md(env.label("more_on_dashboard")))
    footer = env.footer()
    if footer:
        blocks.append(footer)
    return "\n\n".join(blocks)
