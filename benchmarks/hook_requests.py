"""Realistic patient-view hook requests built from the fixture generator, at chosen Observation counts."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from fixtures.gen import generate_course

SIZES = (100, 1000, 3000, 10000)
SERVICE_ID = "iec-hs-screening"
COURSE_TYPE = "iechs-g2"  # a positive screen: the card carries full content (worst case for rendering)
_INSTANT = re.compile(rb'"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})Z"')
_KEYS = {
    "Observation": "observations",
    "Condition": "conditions",
    "Procedure": "procedures",
    "MedicationAdministration": "medicationAdministrations",
    "MedicationRequest": "medicationRequests",
}


def course(size: int, seed: int = 11) -> list[dict[str, Any]]:
    """A CAR-T course with exactly `size` Observations, re-based so that its last instant is one hour ago.

    The service evaluates at "now", so the course is shifted in time; its content is unchanged.
    """
    resources = generate_course(seed, size, course_type=COURSE_TYPE, patient_id=f"bench-{size}")
    raw = orjson.dumps(resources)
    stamps = [datetime.fromisoformat(m.decode()) for m in _INSTANT.findall(raw)]
    shift = (datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)) - max(stamps)

    def moved(match: re.Match[bytes]) -> bytes:
        return (
            b'"'
            + (datetime.fromisoformat(match.group(1).decode()) + shift).strftime("%Y-%m-%dT%H:%M:%S").encode()
            + b'Z"'
        )

    return list(orjson.loads(_INSTANT.sub(moved, raw)))


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r} for r in resources],
    }


def hook_request(resources: list[dict[str, Any]], *, prefetch: bool = True) -> dict[str, Any]:
    """A patient-view request with every prefetch key filled (or none, to force the FHIR fallback)."""
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/bench", "patientId": patient["id"]},
    }
    if prefetch:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for resource in resources:
            key = _KEYS.get(resource["resourceType"])
            if key:
                groups[key].append(resource)
        body["prefetch"] = {"patient": patient, **{k: searchset(groups.get(k, [])) for k in _KEYS.values()}}
    return body


def request_bytes(size: int, seed: int = 11) -> bytes:
    return orjson.dumps(hook_request(course(size, seed)))
