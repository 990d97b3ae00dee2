"""Which trend charts the dashboard draws, and which published cut-offs each one shows.

Cut-offs are *paths into mappings/criteria/<instrument>.yaml*, never numbers: panels.py reads the values
from the knowledge base (converted to the analyte's canonical unit) and check_chart_defs() resolves every
path at start-up, so a renamed YAML key stops the app factory instead of breaking a page.
"""

from __future__ import annotations

from dataclasses import dataclass

DRUG_SYMBOLS = {  # presentation only: one or two letters drawn above the plot
    "tocilizumab": "T",
    "siltuximab": "Si",
    "corticosteroid": "S",
    "anakinra": "A",
    "ruxolitinib": "R",
    "emapalumab": "E",
    "etoposide": "Et",
    "cryoprecipitate": "C",
    "norepinephrine": "V",
    "epinephrine": "V",
    "phenylephrine": "V",
    "dopamine": "V",
    "vasopressin": "Vp",
    "antipyretic": "Ap",
    "lymphodepletion": "LD",
}


@dataclass(frozen=True, slots=True)
class ThresholdRef:
    """A cut-off {op, value, unit} at `path` in criteria/<instrument>.yaml, drawn on `analyte`'s chart."""

    instrument: str
    path: tuple[str, ...]
    analyte: str
    label: str


@dataclass(frozen=True, slots=True)
class UlnMultipleRef:
    """`multiple x ULN` of each analyte of the chart; `path` holds a number or {op, value}."""

    instrument: str
    path: tuple[str, ...]
    label: str


@dataclass(frozen=True, slots=True)
class ChartDef:
    id: str
    title: str
    analytes: tuple[str, ...]
    log_y: bool = False
    thresholds: tuple[ThresholdRef, ...] = ()
    uln_multiples: tuple[UlnMultipleRef, ...] = ()
    uln: bool = True
    lln: bool = False


def _t(instrument: str, analyte: str, label: str, *path: str) -> ThresholdRef:
    return ThresholdRef(instrument, path, analyte, label)


_HLH_LINEAGES = ("criteria", "cytopenias", "lineages")
_HSCORE_LINEAGES = ("variables", "cytopenias", "lineages")
CHART_DEFS: tuple[ChartDef, ...] = (
    ChartDef(
        "ferritin",
        "Ferritin",
        ("ferritin",),
        log_y=True,
        thresholds=(
            _t("hlh2004", "ferritin", "HLH-2004", "criteria", "ferritin", "threshold"),
            _t("cartox", "ferritin", "CARTOX", "ferritin"),
        ),
        uln_multiples=(UlnMultipleRef("iec_hs", ("required", "ferritin_uln_multiple"), "IEC-HS"),),
    ),
    ChartDef(
        "fibrinogen",
        "Fibrinogen",
        ("fibrinogen",),
        thresholds=(
            _t("iec_hs", "fibrinogen", "IEC-HS", "most_common", "hypofibrinogenemia", "threshold"),
            _t("hlh2004", "fibrinogen", "HLH-2004", "criteria", "triglycerides_or_fibrinogen", "fibrinogen"),
            _t("hscore", "fibrinogen", "HScore", "variables", "fibrinogen", "bands", "0", "upper"),
        ),
        lln=True,
    ),
    ChartDef(
        "transaminases",
        "AST and ALT",
        ("ast", "alt"),
        uln_multiples=(UlnMultipleRef("iec_hs", ("most_common", "transaminases", "uln_multiple"), "IEC-HS"),),
    ),
    ChartDef(
        "platelets",
        "Platelets",
        ("platelets",),
        thresholds=(
            _t("hlh2004", "platelets", "HLH-2004", *_HLH_LINEAGES, "platelets"),
            _t("hscore", "platelets", "HScore", *_HSCORE_LINEAGES, "platelets"),
        ),
        uln=False,
        lln=True,
    ),
    ChartDef(
        "anc",
        "Absolute neutrophil count",
        ("anc",),
        thresholds=(_t("hlh2004", "anc", "HLH-2004", *_HLH_LINEAGES, "anc"),),
        uln=False,
        lln=True,
    ),
    ChartDef(
        "hemoglobin",
        "Hemoglobin",
        ("hemoglobin",),
        thresholds=(
            _t("hlh2004", "hemoglobin", "HLH-2004", *_HLH_LINEAGES, "hemoglobin"),
            _t("hscore", "hemoglobin", "HScore", *_HSCORE_LINEAGES, "hemoglobin"),
        ),
        uln=False,
        lln=True,
    ),
    ChartDef(
        "triglycerides",
        "Triglycerides",
        ("triglycerides",),
        thresholds=(
            _t("iec_hs", "triglycerides", "IEC-HS", "other", "hypertriglyceridemia", "threshold"),
            _t(
                "hlh2004",
                "triglycerides",
                "HLH-2004",
                "criteria",
                "triglycerides_or_fibrinogen",
                "triglycerides",
            ),
        ),
    ),
    ChartDef("ldh", "Lactate dehydrogenase (LDH)", ("ldh",)),
    ChartDef(
        "temperature",
        "Body temperature",
        ("temperature",),
        thresholds=(
            _t("iec_hs", "temperature", "IEC-HS fever", "other", "fever", "threshold"),
            _t("hlh2004", "temperature", "HLH-2004 fever", "criteria", "fever", "threshold"),
        ),
        uln=False,
    ),
)
