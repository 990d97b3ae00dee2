"""The typed catalog of names that data files must resolve against (and every name must be used)."""

from __future__ import annotations

from enum import StrEnum


class Analyte(StrEnum):
    """Criteria inputs measured by Observations (see mappings/analytes.yaml)."""

    FERRITIN = "ferritin"
    FIBRINOGEN = "fibrinogen"
    TRIGLYCERIDES = "triglycerides"
    AST = "ast"
    ALT = "alt"
    BILIRUBIN_TOTAL = "bilirubin_total"
    BILIRUBIN_DIRECT = "bilirubin_direct"
    HEMOGLOBIN = "hemoglobin"
    PLATELETS = "platelets"
    WBC = "wbc"
    ANC = "anc"
    LDH = "ldh"
    PT = "pt"
    INR = "inr"
    APTT = "aptt"
    D_DIMER_FEU = "d_dimer_feu"
    D_DIMER_DDU = "d_dimer_ddu"
    D_DIMER_OTHER = "d_dimer_other"
    CREATININE = "creatinine"
    CRP = "crp"
    IL6 = "il6"
    IFN_GAMMA = "ifn_gamma"
    SCD25 = "scd25"
    TEMPERATURE = "temperature"
    SPO2 = "spo2"
    O2_FLOW = "o2_flow"
    FIO2 = "fio2"
    BP_SYSTOLIC = "bp_systolic"
    BP_DIASTOLIC = "bp_diastolic"
    MAP = "map"
    BODY_WEIGHT = "body_weight"
    BODY_HEIGHT = "body_height"


class Finding(StrEnum):
    """Clinical findings recorded as Conditions (see mappings/conditions.yaml)."""

    SPLENOMEGALY = "splenomegaly"
    HEPATOMEGALY = "hepatomegaly"
    IMMUNOSUPPRESSION = "immunosuppression"
    HEMOPHAGOCYTOSIS_MARROW = "hemophagocytosis_marrow"
    HEMOPHAGOCYTOSIS_TISSUE = "hemophagocytosis_tissue"
    HEMOPHAGOCYTOSIS_OTHER = "hemophagocytosis_other"
    NK_ACTIVITY_LOW = "nk_activity_low"
    HLH_DIAGNOSIS = "hlh_diagnosis"
    ICANS = "icans"
    PULMONARY_EDEMA = "pulmonary_edema"
    BLEEDING = "bleeding"
    OLIGURIA = "oliguria"


class DrugClass(StrEnum):
    """Drug classes recognised in medication resources (see mappings/medications.yaml)."""

    ANAKINRA = "anakinra"
    CORTICOSTEROID = "corticosteroid"
    RUXOLITINIB = "ruxolitinib"
    EMAPALUMAB = "emapalumab"
    ETOPOSIDE = "etoposide"
    TOCILIZUMAB = "tocilizumab"
    SILTUXIMAB = "siltuximab"
    CRYOPRECIPITATE = "cryoprecipitate"
    NOREPINEPHRINE = "norepinephrine"
    EPINEPHRINE = "epinephrine"
    PHENYLEPHRINE = "phenylephrine"
    DOPAMINE = "dopamine"
    VASOPRESSIN = "vasopressin"
    ANTIPYRETIC = "antipyretic"
    LYMPHODEPLETION = "lymphodepletion"


class ProcedureKind(StrEnum):
    """Procedures used for grading (see mappings/procedures.yaml)."""

    MECHANICAL_VENTILATION = "mechanical_ventilation"
    DIALYSIS = "dialysis"
    OXYGEN_THERAPY = "oxygen_therapy"
    TRANSFUSION = "transfusion"
    CRYO_TRANSFUSION = "cryo_transfusion"
    BONE_MARROW_EXAM = "bone_marrow_exam"
    LYMPHODEPLETION = "lymphodepletion"


LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC = "http://hl7.org/fhir/sid/ndc"
