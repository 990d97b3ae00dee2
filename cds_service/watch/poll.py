"""Noticing new data with ``_lastUpdated`` (works with any FHIR server that sets ``meta.lastUpdated``).

A poll asks the same questions as a hook with no prefetch (the service's prefetch templates, expanded and
bounded exactly as its FHIR fallback does; cds_service.hooks.prefetch), plus ``_lastUpdated=ge<mark>``:
what changed since the watermark of each search. The patient itself is read by id (a deleted patient is
noticed, and so is an edited one).

Watermarks come from the server's own clock (the largest ``meta.lastUpdated`` seen per search), never from
ours, so clock skew does not matter. Servers do not always make resources visible in ``lastUpdated`` order
(a long transaction commits after a later one), so each poll reaches ``overlap`` seconds before the mark and
remembers which versions it has seen in that overlap: a resource counts as new only if its
``type/id/version`` was not seen before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from cds_service.hooks.fhir_client import FhirClient, FhirFetchError
from cds_service.hooks.prefetch import fallback_query
from cds_service.hooks.services import ServiceDefinition

Mark = dict[str, Any]  # {"at": ISO instant, "keys": [type/id/version, ...], optionally "overlap": seconds}
MAX_KEYS = 500  # versions remembered per search (only those within the overlap of the mark)


@dataclass(slots=True)
class PollResult:
    """What a poll saw: whether the patient exists, what is new per prefetch key, the advanced marks."""

    patient_found: bool
    new: dict[str, int] = field(default_factory=dict)
    new_observation_times: list[float] = field(default_factory=list)  # meta.lastUpdated, epoch seconds
    marks: dict[str, Mark] = field(default_factory=dict)
    requests: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # optional searches the server refuses (403)

    @property
    def anything_new(self) -> bool:
        return any(self.new.values())


def poll(
    client: FhirClient,
    service: ServiceDefinition,
    patient_id: str,
    marks: Mapping[str, Mark],
    *,
    at: datetime,
    lookback_days: int,
    overlap_s: float,
    deadline: float,
) -> PollResult:
    """One poll of one patient; raises FhirFetchError (the caller reports it), except for a 403 on a search
    the hook does not require (recorded in `refused`)."""
    context = {"patientId": patient_id}
    patient = client.get(f"Patient/{quote(patient_id, safe='')}", deadline).value
    result = PollResult(patient_found=patient is not None, requests=1)
    if patient is None:
        return result
    key_new, mark = diff([patient], marks.get("patient"), overlap_s)
    result.new["patient"], result.marks["patient"] = len(key_new), mark
    for template in service.prefetch:
        if template.key == "patient":
            continue
        query = fallback_query(template, context, at, lookback_days)
        previous = marks.get(template.key)
        if previous is not None:
            reach = float(previous.get("overlap", overlap_s))
            since = parse_instant(previous["at"]) - timedelta(seconds=reach)
            query += f"&_lastUpdated=ge{format_instant(since)}"
        result.requests += 1
        try:
            bundle = client.get(query, deadline).value or {}
        except FhirFetchError as exc:
            if template.required or exc.reason != "HTTP 403":
                raise
            # A grant without this type (a scope the server narrowed): watch on with what can be read.
            result.refused[template.key] = exc.reason
            continue
        resources = list(resources_of(bundle))
        fresh, result.marks[template.key] = diff(resources, previous, overlap_s)
        result.new[template.key] = len(fresh)
        if template.key == "observations":
            result.new_observation_times += [t for r in fresh if (t := last_updated(r)) is not None]
    return result


def marks_from(data: Mapping[str, Any], overlap_s: float) -> dict[str, Mark]:
    """Watermarks from a full fetch (prefetch key -> Bundle or resource)."""
    marks: dict[str, Mark] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            _, marks[key] = diff(list(resources_of(value)), None, overlap_s)
    return marks


def diff(
    resources: list[dict[str, Any]], previous: Mark | None, overlap_s: float
) -> tuple[list[dict[str, Any]], Mark]:
    """The resources not seen before, and the advanced mark."""
    seen = set(previous["keys"]) if previous else set()
    fresh = [r for r in resources if version_key(r) not in seen]
    times = [t for r in resources if (t := last_updated(r)) is not None]
    newest = max(times, default=None)
    if previous is not None:
        old = parse_instant(previous["at"]).timestamp()
        newest = old if newest is None else max(old, newest)
    if newest is None:
        return fresh, {"at": format_instant(datetime.fromtimestamp(0, UTC)), "keys": []}
    at = format_instant(datetime.fromtimestamp(newest, UTC))
    stamped = [(t, version_key(r)) for r in resources if (t := last_updated(r)) is not None]
    keep = sorted({key for t, key in stamped if t >= newest - overlap_s})
    if len(keep) > MAX_KEYS:
        # A bulk load inside the overlap: remember only the newest instant's versions and reach back no
        # further than it next time (this once without the overlap's protection against late commits).
        newest_keys = sorted({key for t, key in stamped if t >= newest})
        return fresh, {"at": at, "keys": newest_keys[:MAX_KEYS], "overlap": 0}
    return fresh, {"at": at, "keys": keep}


def resources_of(value: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    if value.get("resourceType") != "Bundle":
        yield dict(value)
        return
    for entry in value.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
            yield resource


def version_key(resource: Mapping[str, Any]) -> str:
    meta = resource.get("meta")
    version = (meta.get("versionId") or meta.get("lastUpdated") or "") if isinstance(meta, dict) else ""
    return f"{resource.get('resourceType')}/{resource.get('id')}/{version}"


def last_updated(resource: Mapping[str, Any]) -> float | None:
    meta = resource.get("meta")
    value = meta.get("lastUpdated") if isinstance(meta, dict) else None
    if not isinstance(value, str):
        return None
    try:
        return parse_instant(value).timestamp()
    except ValueError:
        return None


def parse_instant(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_instant(value: datetime) -> str:
    """A FHIR instant with milliseconds in UTC (`Z`): safe in a query string as it is."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
