"""The benchmark floor: POST /_bench/floor reads and parses the body like a hook and answers no cards.

Registered only when CDS_BENCH_FLOOR is on (benchmarks/ sets it). It goes through the same app, WSGI server,
request-id, logging and CORS layers as the real hook, so hook/floor latency ratios isolate the service's
own work: prefetch resolution, the engine and card rendering.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from cds_service.hook_request import parse_json_body
from cds_service.wsgi_body import request_body

bp = Blueprint("bench_floor", __name__)


@bp.post("/_bench/floor")
def floor() -> Response:
    parse_json_body(request_body(), request.mimetype)
    return jsonify({"cards": []})
