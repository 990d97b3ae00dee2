"""Prometheus metrics: what is counted, how it is recorded, and the /metrics exposition.

Every label value comes from a closed set the service defines (route rules, registry service ids and hooks,
prefetch keys, card indicators, feedback outcomes, status codes): never a patient id, a FHIR URL, a token or
free text, so the series count stays bounded and no PHI reaches the monitoring system.

Recording is passive: :func:`record_request` reads the fields the request log line already holds
(cds_service.web.observability), and FHIR calls are timed by wrapping the transport adapters of the app's
``HTTP_SESSION`` (:func:`instrument_session`). Under gunicorn, ``cds-service serve`` turns on the
prometheus-client multiprocess mode (cds_service.ops.multiproc) so /metrics aggregates every worker.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import orjson
import requests
from flask import Response, g
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from requests.adapters import BaseAdapter

from cds_service import __version__
from cds_service.web.wsgi_body import request_body

log = logging.getLogger("cds_service.web.metrics")
HOOK_ENDPOINT = "/cds-services/<service_id>"
FEEDBACK_ENDPOINT = "/cds-services/<service_id>/feedback"
FHIR_MEDIA_TYPE = "application/fhir+json"
# The *_created series (one per labelled child) double the output and nothing here needs them.
disable_created_metrics()  # type: ignore[no-untyped-call]
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "cds_http_requests",
    "HTTP requests answered, by method, route rule, hook (hook calls only) and status code.",
    ["method", "endpoint", "hook", "status"],
)
REQUEST_LATENCY = Histogram(
    "cds_http_request_duration_seconds",
    "Time from request start to response, by method, route rule and hook (hook calls only).",
    ["method", "endpoint", "hook"],
    buckets=_LATENCY_BUCKETS,
)
PREFETCH_KEYS = Counter(
    "cds_prefetch_keys",
    "Prefetch keys of hook calls by where their data came from: prefetch (sent by the client), fhir "
    "(service's own query), prefetch+fhir (paginated prefetch completed by the service), null, "
    "operation-outcome (client reported a prefetch error and no re-query succeeded), unavailable.",
    ["hook", "key", "source"],
)
PREFETCH_GAPS = Counter(
    "cds_prefetch_data_gaps",
    "Prefetch keys left incomplete or unavailable (passed to the cards as data gaps, or 412 if required).",
    ["hook", "key"],
)
FHIR_LATENCY = Histogram(
    "cds_fhir_request_duration_seconds",
    "FHIR server calls of the fallback queries, time to response headers, by outcome (2xx, 3xx, 4xx, 5xx, "
    "timeout, connection-error, error).",
    ["outcome"],
    buckets=_LATENCY_BUCKETS,
)
FHIR_ERRORS = Counter(
    "cds_fhir_request_errors",
    "FHIR server calls that failed: any outcome except 2xx and 404 (a read of a missing resource).",
    ["outcome"],
)
CARDS = Counter("cds_cards", "Cards returned by hook calls, by hook and indicator.", ["hook", "indicator"])
FEEDBACK_ITEMS = Counter(
    "cds_feedback_items",
    "Feedback items accepted by the feedback endpoint, by service id and outcome (accepted, overridden).",
    ["service", "outcome"],
)
FEEDBACK_STORED = Counter(
    "cds_feedback_stored",
    "Feedback items newly stored (repeats of an already stored item are not counted), by service id.",
    ["service"],
)
BUILD_INFO = Gauge(
    "cds_build_info", "Always 1; the service version is a label.", ["version"], multiprocess_mode="max"
)
BUILD_INFO.labels(version=__version__).set(1)


def record_request(fields: Mapping[str, Any], response: Response) -> None:
    """Count one answered request from its log fields (see cds_service.web.observability)."""
    hook = str(fields.get("hook") or "")
    endpoint, method, status = str(fields["endpoint"]), str(fields["method"]), int(fields["status"])
    REQUESTS.labels(method, endpoint, hook, str(status)).inc()
    REQUEST_LATENCY.labels(method, endpoint, hook).observe(float(fields["duration_ms"]) / 1000)
    if endpoint == HOOK_ENDPOINT and hook:
        _record_prefetch(hook, fields)
        if status == 200:
            _record_cards(hook)
    if endpoint == FEEDBACK_ENDPOINT and method == "POST" and status == 200:  # not a CORS preflight
        _record_feedback(str(fields.get("service_id", "")), int(fields.get("feedback_stored", 0)))


def _record_prefetch(hook: str, fields: Mapping[str, Any]) -> None:
    sources: Mapping[str, str] = fields.get("prefetch") or {}
    gaps: list[str] = [*fields.get("data_gaps", ()), *fields.get("prefetch_unavailable", ())]
    for key, source in sources.items():
        PREFETCH_KEYS.labels(hook, key, source).inc()
    for key in dict.fromkeys(gaps):
        PREFETCH_GAPS.labels(hook, key).inc()
        if key not in sources:
            PREFETCH_KEYS.labels(hook, key, "unavailable").inc()


def _record_cards(hook: str) -> None:
    # Set by the hook view (cds_service.hooks.api.invoke): re-reading the response JSON would cost a parse.
    for indicator in g.get("card_indicators", ()):
        CARDS.labels(hook, str(indicator)).inc()


def _record_feedback(service_id: str, stored: int) -> None:
    # The view read (and kept) the body and validated it (status 200).
    document = orjson.loads(request_body())
    for item in document["feedback"]:
        FEEDBACK_ITEMS.labels(service_id, str(item["outcome"])).inc()
    FEEDBACK_STORED.labels(service_id).inc(stored)


class TimedAdapter(BaseAdapter):
    """Wraps a requests transport adapter: times FHIR calls (Accept: application/fhir+json) by outcome."""

    def __init__(self, inner: BaseAdapter) -> None:
        super().__init__()
        self.inner = inner

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        options: dict[str, Any] = {
            "stream": stream,
            "timeout": timeout,
            "verify": verify,
            "cert": cert,
            "proxies": proxies,
        }
        if FHIR_MEDIA_TYPE not in request.headers.get("Accept", ""):
            return self.inner.send(request, **options)
        start = time.perf_counter()
        try:
            response = self.inner.send(request, **options)
        except requests.Timeout:
            _observe_fhir("timeout", start)
            raise
        except requests.ConnectionError:
            _observe_fhir("connection-error", start)
            raise
        except Exception:
            _observe_fhir("error", start)
            raise
        _observe_fhir(f"{response.status_code // 100}xx", start, response.status_code == 404)
        return response

    def close(self) -> None:
        self.inner.close()


def _observe_fhir(outcome: str, start: float, not_found: bool = False) -> None:
    FHIR_LATENCY.labels(outcome).observe(time.perf_counter() - start)
    if outcome != "2xx" and not not_found:
        FHIR_ERRORS.labels(outcome).inc()


def instrument_session(session: object) -> None:
    """Wrap every adapter mounted on a requests.Session once (other session types are left alone)."""
    if not isinstance(session, requests.Session):
        return
    for prefix, adapter in list(session.adapters.items()):
        if not isinstance(adapter, TimedAdapter):
            session.mount(prefix, TimedAdapter(adapter))


def exposition(accept: str | None) -> Response:
    """Prometheus exposition, in the format the scraper's Accept header asks for (text 0.0.4 by default,
    OpenMetrics on request): every worker's metrics in multiprocess mode, else this process's."""
    encoder, content_type = choose_encoder(accept or "")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        payload = encoder(registry)
    else:
        payload = encoder(REGISTRY)
    return Response(payload, mimetype=None, content_type=content_type)
