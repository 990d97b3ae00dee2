"""The closed vocabulary that cards/ data must resolve against: rule names, template keys, placeholders.

The renderer implements exactly these names; cards/*.yaml may only use them (checked at load).
"""

from __future__ import annotations

# Indicator rules (cds_service/cards/rules.py): the names templates.yaml may list under `indicator`.
INDICATOR_RULES = frozenset(
    {"iec_hs_met", "high_grade", "indeterminate_concerning", "hscore_at_or_above_cutoff"}
)

# Applicability rules for treatment options (`when` in treatments.yaml).
WHEN_RULES = frozenset(
    {"always", "iec_hs_met", "standard_corticosteroids", "high_grade_or_refractory", "refractory", "salvage"}
)

# Keys each card template must define, by section.
CARD_KEYS: dict[str, dict[str, frozenset[str]]] = {
    "patient_view": {
        "summary": frozenset(
            {"met", "indeterminate_concerning", "indeterminate", "not_met_hscore", "not_met"}
        ),
        "headings": frozenset(
            {"status", "instruments", "criteria", "grade", "treatment", "supportive", "gaps", "sources"}
        ),
        "suggestions": frozenset({"medication", "labs"}),
    },
    "il6_order": {
        "summary": frozenset({"met", "approaching"}),
        "headings": frozenset({"status", "evidence", "sources"}),
        "suggestions": frozenset({"replace", "delete", "create"}),
    },
    "iec_order": {
        "summary": frozenset({"met", "indeterminate", "not_met"}),
        "headings": frozenset({"status", "dosing", "labs", "sources"}),
        "suggestions": frozenset({"labs"}),
    },
}

# Statements the renderer uses, with the placeholders each may contain.
STATEMENTS: dict[str, frozenset[str]] = {
    "screen": frozenset(),
    "caveat": frozenset(),
    "alternatives": frozenset({"alternatives"}),
    "grading_unverified": frozenset(),
    "second_line_rule": frozenset({"hours"}),
    "grade_by_line": frozenset(),
    "weight": frozenset({"weight", "date"}),
    "no_weight": frozenset(),
    "bsa": frozenset({"bsa", "height", "weight"}),
    "no_bsa": frozenset(),
    "tocilizumab_order": frozenset({"drug", "status", "crs"}),
    "replace_with_anakinra": frozenset(),
}

# Labels (`labels` in templates.yaml) the renderer uses, with their placeholders.
LABELS: dict[str, frozenset[str]] = {
    **{
        key: frozenset()
        for key in ("met", "possible", "not-met", "unknown", "indeterminate", "not-applicable")
    },
    **{key: frozenset() for key in ("fulfilled", "not_fulfilled", "undecided", "grade_unknown")},
    "grade": frozenset({"grade"}),
    "grade_minimum": frozenset({"grade"}),
    "timing": frozenset({"day", "product"}),
    "timing_no_day": frozenset({"product"}),
    **{key: frozenset() for key in ("applies_now", "not_now", "if_confirmed", "no_dose")},
    **{f"crs_{key}": frozenset() for key in ("none", "unknown", "active", "resolving", "resolved")},
    **{f"line_{key}": frozenset() for key in ("supportive", "first", "second", "salvage", "caution")},
}

# Placeholders allowed in each kind of template field.
SUMMARY_PLACEHOLDERS = frozenset({"grade", "timing", "findings", "hscore", "cutoff", "drug"})
SUGGESTION_PLACEHOLDERS = frozenset({"agent", "line", "labs", "drug", "dose"})
URL_PLACEHOLDERS = frozenset({"base_url"})
