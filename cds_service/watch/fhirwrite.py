"""The watcher's few FHIR writes and its CapabilityStatement read, with the backend token: Subscription
create / read / delete, the write-back create. Same rules as the read client (cds_service.hooks.fhir_client):
no redirects (the token goes nowhere else), a timeout, a size cap, and failure reasons free of URLs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import requests

from cds_service.hooks.fhir_client import FhirFetchError

MAX_BODY_BYTES = 1024 * 1024
FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class FhirAnswer:
    status: int
    body: dict[str, Any]


def fhir_call(
    session: requests.Session,
    method: str,
    url: str,
    token: str | None,
    *,
    body: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float,
) -> FhirAnswer:
    """One FHIR interaction; raises FhirFetchError on transport failures only (the caller reads status)."""
    sent = {"Accept": FHIR_JSON, **(headers or {})}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        sent["Content-Type"] = FHIR_JSON
        data = orjson.dumps(body)
    try:
        response = session.request(
            method, url, data=data, headers=sent, timeout=timeout_s, allow_redirects=False
        )
    except requests.Timeout:
        raise FhirFetchError("timeout") from None
    except requests.ConnectionError:
        raise FhirFetchError("connection failed") from None
    except requests.RequestException:
        raise FhirFetchError("request failed") from None
    with response:
        content = response.content[: MAX_BODY_BYTES + 1]
    parsed: Any = {}
    if content and len(content) <= MAX_BODY_BYTES:
        try:
            parsed = orjson.loads(content)
        except orjson.JSONDecodeError:
            parsed = {}
    return FhirAnswer(response.status_code, parsed if isinstance(parsed, dict) else {})
