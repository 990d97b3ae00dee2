"""Helpers for the service tests: hook request bodies, patient data relative to now, response invariants."""

from __future__ import annotations

import copy
import itertools
import json
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

from cds_service.hooks.validation import errors as schema_errors
from tests import fhir_builders as fb

_counter = itertools.count(1)
PREFETCH_KEYS = (
    "patient",
    "observations",
    "conditions",
    "procedures",
    "medicationAdministrations",
    "medicationRequests",
)


def unique(prefix: str) -> str:
    """A FHIR id unique within the test session (the FHIR stack is shared)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}-{next(_counter)}"


def dev_config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """create_app() overrides for a development-mode app with its own SQLite file and pinned uuids."""
    ids = (f"uuid-{n}" for n in itertools.count(1))
    config: dict[str, Any] = {
        "CDS_DEV_MODE": True,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'feedback.sqlite3'}",
        "UUID_FACTORY": lambda: next(ids),
    }
    config.update(extra)
    return config


def for_patient(pid: str, resources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of `resources` re-pointed at Patient/`pid`, with ids made unique for the shared FHIR server."""
    out = []
    for resource in resources:
        r = copy.deepcopy(resource)
        if r["resourceType"] == "Patient":
            r["id"] = pid
        else:
            r["id"] = f"{pid}-{r['id']}"
            r["subject"] = {"reference": f"Patient/{pid}"}
        out.append(r)
    return out


def car_t_patient(pid: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """A CAR-T patient (infused 10 days ago) with a rising ferritin, low fibrinogen and other labs."""
    now = now or datetime.now(UTC)
    infusion = now - timedelta(days=10)
    resources = [
        fb.patient(pid, birth="1968-04-02"),
        fb.car_t(infusion),
        fb.obs("2276-4", 300, "ng/mL", infusion - timedelta(days=3), high=300),
        fb.obs("2276-4", 4200, "ng/mL", now - timedelta(days=2), high=300),
        fb.obs("2276-4", 9800, "ng/mL", now - timedelta(hours=20), high=300),
        fb.obs("3255-7", 110, "mg/dL", now - timedelta(hours=19), low=200),
        fb.obs("1920-8", 180, "U/L", now - timedelta(hours=19), high=40),
        fb.obs("777-3", 40, "10*9/L", now - timedelta(hours=19), low=150),
        fb.obs("29463-7", 72, "kg", now - timedelta(days=9)),
        fb.crs(2, infusion + timedelta(days=1), abatement=infusion + timedelta(days=4)),
    ]
    return for_patient(pid, resources)


def searchset(resources: Iterable[dict[str, Any]]) -> dict[str, Any]:
    entries = [{"resource": r} for r in resources]
    return {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}


def full_prefetch(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """The prefetch a client would send for `resources` (every key, as Bundles or the Patient)."""

    def of(*types: str) -> dict[str, Any]:
        return searchset(r for r in resources if r["resourceType"] in types)

    patient = next(r for r in resources if r["resourceType"] == "Patient")
    return {
        "patient": patient,
        "observations": of("Observation"),
        "conditions": of("Condition"),
        "procedures": of("Procedure"),
        "medicationAdministrations": of("MedicationAdministration"),
        "medicationRequests": of("MedicationRequest"),
    }


def hook_body(
    hook: str,
    patient_id: str,
    *,
    prefetch: dict[str, Any] | None = None,
    fhir_server: str | None = None,
    token: str | None = None,
    **context: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/dr-1", "patientId": patient_id, **context},
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    if fhir_server is not None:
        body["fhirServer"] = fhir_server
    if token is not None:
        body["fhirAuthorization"] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/Patient.read patient/Observation.read",
            "subject": "cds-service",
            "patient": patient_id,
        }
    return body


def sandbox_draft_orders(
    patient_id: str, drug: str = "tocilizumab", rxnorm: str = "612865"
) -> dict[str, Any]:
    """draftOrders as the CDS Hooks Sandbox sends them: no Bundle.type, category an object, no intent."""
    return {
        "resourceType": "Bundle",
        "entry": [
            {
                "resource": {
                    "resourceType": "MedicationRequest",
                    "id": "request-123",
                    "status": "draft",
                    "subject": {"reference": f"Patient/{patient_id}"},
                    "authoredOn": datetime.now(UTC).date().isoformat(),
                    "category": {"coding": [{"system": "http://x", "code": "community"}]},
                    "medicationCodeableConcept": {
                        "text": drug,
                        "coding": [{"system": fb.RXNORM, "code": rxnorm, "display": drug}],
                    },
                    "dosageInstruction": [
                        {"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}}
                    ],
                }
            }
        ],
    }


def assert_conformant(response: dict[str, Any]) -> None:
    """cds-response schema plus the invariants every conforming renderer must keep."""
    assert schema_errors("cds-response", response) == []
    uuids: list[str] = []
    for card in response["cards"]:
        assert len(card["summary"]) < 140
        assert card["indicator"] in {"info", "warning", "critical"}
        assert card["source"]["label"]
        if "suggestions" in card:
            assert card["selectionBehavior"] in {"at-most-one", "any"}
            uuids += [s["uuid"] for s in card["suggestions"] if "uuid" in s]
        for reason in card.get("overrideReasons", []):
            assert reason["display"]
        uuids += [card["uuid"]] if "uuid" in card else []
    assert len(uuids) == len(set(uuids)), "card and suggestion uuids must be unique"


def without_uuids(value: Any) -> Any:
    """`value` with every uuid field removed and the evaluation instant dropped from SMART appContexts
    (responses are deterministic apart from uuids and the instant the engine evaluated at)."""
    if isinstance(value, dict):
        return {
            k: _app_context(v) if k == "appContext" else without_uuids(v)
            for k, v in value.items()
            if k != "uuid"
        }
    if isinstance(value, list):
        return [without_uuids(v) for v in value]
    return value


def _app_context(value: Any) -> Any:
    context = json.loads(value)
    context.pop("at", None)
    return context


def visible_text(html: str) -> str:
    """The text a person reads on an HTML page: tags removed, entities undone, whitespace collapsed."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def evidence_of(client: Any, service_id: str, body: dict[str, Any], instant: str = "") -> str:
    """The evidence view (POST /preview/evidence) of the hook request `body` as a person reads it: the same
    evaluation as the hook, with its data quality, what could not be read and the UNVERIFIED list (the
    card's detail no longer carries them, issue 17)."""
    form = {"service": service_id, "request": json.dumps(body), "instant": instant}
    response = client.post("/preview/evidence", data=form)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return visible_text(response.get_data(as_text=True))


def plain_markdown(markdown: str) -> str:
    """Card Markdown as a person reads it: backslash escapes and HTML entities undone."""
    return unescape(re.sub(r"\\([\\`*_\[\]|~#])", r"\1", markdown))


def stated_gaps(body: dict[str, Any]) -> list[str]:
    """The prefetch keys a patient-view card names under 'What the service could not see', read back from
    the card's words (cards/templates.yaml `prefetch_gaps` in the `gap_key` label)."""
    from tests.engine_helpers import CONTENT

    detail = plain_markdown(body["cards"][0].get("detail", ""))
    section = detail.partition("**What the service could not see**\n")[2].split("\n\n")[0]
    lines = {line[2:] for line in section.splitlines() if line.startswith("- ")}
    template = CONTENT.labels["gap_key"]
    return [key for key, words in CONTENT.prefetch_gaps.items() if template.format(what=words) in lines]
