"""The benchmark floors, registered only when CDS_BENCH_FLOOR is on (benchmarks/ sets it).

- POST /_bench/floor reads and parses the body like a hook and answers no cards: the cost of reading the
  request at all, which the hook's latency and throughput are compared with.
- POST /_bench/read/<service_id> reads a hook call exactly as the hook does (typed decoding, the
  cds-request schema, prefetch resolution, resource collection, Observation normalization) and stops
  there, answering no cards. It is a ceiling, not a target: no hook that must read its data can beat it,
  so the benchmark can show how much of the hook's cost is reading and how much is the clinical work
  (timeline, instruments, card) that comes after.

Both go through the same app, WSGI server, request-id, logging and CORS layers as the real hook, so
ratios against them isolate the service's own work.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify, request

from cds_service.engine.observations import ObservationNormalizer
from cds_service.engine.resources import collect
from cds_service.hooks.api import hook_environment
from cds_service.hooks.prefetch import resolve
from cds_service.hooks.request import parse_hook_request, parse_json_body
from cds_service.web.gc_tuning import COLLECTOR_HOLD
from cds_service.web.observability import timed
from cds_service.web.state import get_state
from cds_service.web.wsgi_body import request_body

bp = Blueprint("bench_floor", __name__)


@bp.post("/_bench/floor")
def floor() -> Response:
    parse_json_body(request_body(), request.mimetype)
    return jsonify({"cards": []})


@bp.post("/_bench/read/<service_id>")
def read(service_id: str) -> Response:
    """The hook's reading of its data, and nothing after it (see the module docstring)."""
    COLLECTOR_HOLD.enter()  # as for the hook (cds_service.hooks.api.hold_collector)
    try:
        with timed("parse"):
            hook_request, service = parse_hook_request(
                get_state().registry, service_id, request_body(), request.mimetype
            )
        env = hook_environment()
        # Unauthenticated, so it reads only what the request carries: it never queries a fhirServer.
        fetch = replace(env.fetch, server_allowed=_no_server)
        with timed("prefetch"):
            resolved = resolve(hook_request, service, fetch, env.at or datetime.now(UTC), env.deadline)
        with timed("evaluate"):
            resources = collect(resolved.data)
            ObservationNormalizer(get_state().knowledge).normalize(resources.by_type.get("Observation", []))
    finally:
        COLLECTOR_HOLD.exit()
    return jsonify({"cards": []})


def _no_server(_url: str) -> bool:
    return False
