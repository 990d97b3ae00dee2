"""The closed vocabulary cards/ data must resolve against: template keys, labels, statements, placeholders.

The renderer implements exactly these names; cards/*.yaml may only use them (checked at load).
"""

from __future__ import annotations

# Keys each card template must define, by section.
CARD_KEYS: dict[str, dict[str, frozenset[str]]] = {
    "patient_view": {
        "summary": frozenset({"met", "possible", "indeterminate", "incomplete", "unseen", "acknowledged"}),
        "headings": frozenset({"happening", "therapy", "next", "unseen"}),
        "suggestions": frozenset({"medication", "labs"}),
    },
    "il6_order": {
        "summary": frozenset({"met", "possible", "running"}),
        "headings": frozenset({"happening", "evidence", "next"}),
        "suggestions": frozenset({"replace", "delete", "create"}),
    },
    "iec_order": {
        "summary": frozenset({"met", "possible", "other", "running"}),
        "headings": frozenset({"happening", "therapy", "dosing", "next"}),
        "suggestions": frozenset({"labs"}),
    },
}

# Statements the renderer uses, with the placeholders each may contain.
STATEMENTS: dict[str, frozenset[str]] = {
    "possible": frozenset({"what"}),
    "indeterminate": frozenset({"what"}),
    "unseen_therapy": frozenset({"what"}),
    "tocilizumab_order": frozenset({"drug", "status", "crs"}),
    "replace_with_anakinra": frozenset(),
    "already_running": frozenset({"drug", "course"}),
    "acknowledged": frozenset({"hours"}),
    "lines_by_grade": frozenset(),  # the dashboard's UNVERIFIED list
}

# Labels (`labels` in templates.yaml) the renderer uses, with their placeholders.
LABELS: dict[str, frozenset[str]] = {
    **{
        f"status_{key}": frozenset()
        for key in ("met", "possible", "not-met", "indeterminate", "not-applicable")
    },
    "grade": frozenset({"grade"}),
    "grade_minimum": frozenset({"grade"}),
    "grade_unknown": frozenset(),
    "timing": frozenset({"day", "product"}),
    "timing_no_day": frozenset({"product"}),
    "product_not_identified": frozenset(),
    "product_unknown": frozenset(),
    **{f"crs_{key}": frozenset() for key in ("none", "unknown", "active", "resolving", "resolved")},
    **{f"crs_{key}": frozenset() for key in ("inferred", "documented", "condition")},
    "day": frozenset({"day", "time"}),
    "threshold": frozenset({"threshold"}),
    "course": frozenset({"drug", "first", "last", "count"}),
    "course_single": frozenset({"drug", "first"}),
    "course_order": frozenset({"drug", "first"}),
    "running": frozenset(),
    "given": frozenset(),
    "decision_point": frozenset({"when", "next"}),
    "no_next": frozenset(),
    "first_line_given": frozenset(),
    "per_dose": frozenset({"amount"}),
    "per_day": frozenset({"amount"}),
    "daily_total": frozenset({"amount", "per_kg"}),
    "no_code": frozenset(),
    "lab_decides": frozenset({"lab"}),
    "more_on_dashboard": frozenset(),
    "sources": frozenset(),
    "gap_key": frozenset({"what"}),
    "unread_one": frozenset({"analyte", "when", "why"}),
    "unread_many": frozenset({"analyte", "count", "when", "why"}),
    "gap_key_summary": frozenset({"what"}),
    **{f"line_{key}": frozenset() for key in ("first", "second", "salvage")},
}

# Placeholders allowed in each kind of template field.
SUMMARY_PLACEHOLDERS = frozenset({"grade", "timing", "gap", "ferritin", "drug", "status"})
SUGGESTION_PLACEHOLDERS = frozenset({"agent", "line", "labs", "drug", "dose"})
URL_PLACEHOLDERS = frozenset({"base_url"})
GAP_WORD_PLACEHOLDERS = frozenset({"days", "analytes"})
# Every prefetch key of the services (cds_service.hooks.services; a test keeps the two equal).
PREFETCH_KEYS = frozenset(
    {"patient", "observations", "conditions", "procedures", "medicationAdministrations", "medicationRequests"}
)
