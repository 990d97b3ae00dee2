"""FHIR fallback: with every prefetch key absent the service queries the test FHIR server; the independent
queries run concurrently, so the total should be close to the slowest single query.

Measured over HTTP against the real service: latency(all keys absent) and latency(only key K absent), each
minus latency(every key present), so the evaluation and card work cancel out."""

from __future__ import annotations

import statistics
from typing import Any

import orjson

from benchmarks.hook_requests import hook_request
from benchmarks.http_bench import HOOK_PATH, load
from benchmarks.server import ServiceProcess


def _median_ms(service: ServiceProcess, body: dict[str, Any], n: int) -> float:
    latencies: list[float] = load(service, HOOK_PATH, orjson.dumps(body), requests=n)["latencies"]
    return statistics.median(latencies) * 1e3


def fallback(
    service: ServiceProcess, resources: list[dict[str, Any]], fhir_base: str, token: str, n: int = 9
) -> dict[str, Any]:
    full = hook_request(resources)
    fhir = {
        "fhirServer": fhir_base,
        "fhirAuthorization": {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "cds-service",
        },
    }
    base = _median_ms(service, full, n)
    singles: dict[str, float] = {}
    for key in full["prefetch"]:
        body = {**full, **fhir, "prefetch": {k: v for k, v in full["prefetch"].items() if k != key}}
        singles[key] = _median_ms(service, body, n) - base
    absent = {k: v for k, v in full.items() if k != "prefetch"} | fhir
    total = _median_ms(service, absent, n) - base
    slowest = max(singles, key=lambda k: singles[k])
    return {
        "present_ms": base,
        "single_query_ms": singles,
        "slowest_key": slowest,
        "all_absent_ms": total,
        "fallback_ratio": total / singles[slowest],
    }
