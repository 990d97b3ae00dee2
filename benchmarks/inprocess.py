"""In-process whole hook (request bytes -> response bytes) against the JSON-parse floor, side by side."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from flask import Flask

from benchmarks.hook_requests import SERVICE_ID
from cds_service.web.app import create_app
from cds_service.web.gc_tuning import tune_gc


def make_app(workdir: Path) -> Flask:
    """The app as a gunicorn worker runs it, garbage-collector settings included (web.gc_tuning)."""
    app = create_app(
        {
            "CDS_DEV_MODE": True,
            "CDS_BENCH_FLOOR": True,
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
        }
    )
    tune_gc()
    return app


def whole_hook(app: Flask, url: str = f"/cds-services/{SERVICE_ID}") -> Callable[[bytes], bytes]:
    """The real endpoint through Flask's WSGI stack in-process: parse, prefetch, engine, cards, JSON."""
    client = app.test_client()

    def call(body: bytes) -> bytes:
        response = client.post(url, data=body, content_type="application/json")
        if response.status_code != 200:
            raise RuntimeError(f"hook answered {response.status_code}: {response.data[:300]!r}")
        return response.get_data()

    return call


def timings(fn: Callable[[], Any], repeat: int) -> list[float]:
    """Wall-clock seconds of `repeat` calls."""
    found = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        found.append(time.perf_counter() - start)
    return found


def interleaved(
    first: Callable[[], Any], second: Callable[[], Any], repeat: int
) -> tuple[list[float], list[float]]:
    """Wall-clock seconds of `repeat` calls of each, alternating so that machine noise hits both alike."""
    first_times: list[float] = []
    second_times: list[float] = []
    for _ in range(repeat):
        first_times += timings(first, 1)
        second_times += timings(second, 1)
    return first_times, second_times


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def measure(bodies: dict[int, bytes], repeat: int = 15) -> dict[str, Any]:
    """Per size: median/p95 of orjson.loads and of the whole hook, interleaved in one run, and the ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        call = whole_hook(make_app(Path(tmp)))
        results: dict[str, Any] = {}
        for size, body in bodies.items():
            call(body)  # warm: unit conversions, templates
            parse, hook = interleaved(
                lambda b=body: orjson.loads(b),  # type: ignore[misc]
                lambda b=body: call(b),  # type: ignore[misc]
                repeat,
            )
            results[str(size)] = {
                "bytes": len(body),
                "parse_median_ms": statistics.median(parse) * 1e3,
                "parse_p95_ms": p95(parse) * 1e3,
                "hook_median_ms": statistics.median(hook) * 1e3,
                "hook_p95_ms": p95(hook) * 1e3,
                "ratio_vs_parse": statistics.median(hook) / statistics.median(parse),
            }
        return results


def fixed_cost(body: bytes, repeat: int = 200) -> dict[str, Any]:
    """What a hook costs beyond reading its request when there is (almost) nothing to read: the request
    with every Observation removed, through the hook and through the floor endpoint of the same app. The
    difference is the per-hook work that does not shrink with the data (instruments, card, bookkeeping)."""
    document = orjson.loads(body)
    document["prefetch"]["observations"] = {"resourceType": "Bundle", "type": "searchset"}
    small = orjson.dumps(document)
    with tempfile.TemporaryDirectory() as tmp:
        app = make_app(Path(tmp))
        hook, floor = whole_hook(app), whole_hook(app, "/_bench/floor")
        hook(small), floor(small)
        hook_times, floor_times = interleaved(lambda: hook(small), lambda: floor(small), repeat)
    return {
        "bytes": len(small),
        "hook_median_ms": statistics.median(hook_times) * 1e3,
        "floor_median_ms": statistics.median(floor_times) * 1e3,
        "fixed_ms": (statistics.median(hook_times) - statistics.median(floor_times)) * 1e3,
    }
