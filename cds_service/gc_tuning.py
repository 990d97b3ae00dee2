"""Garbage-collector settings for serving processes.

A hook request allocates hundreds of thousands of small, acyclic objects (the parsed FHIR JSON), which
reference counting frees. With CPython's default thresholds the cyclic collector still runs many times per
large request, and each full collection walks every live object, including the app's own; the time per
request then grows faster than the request (measured in benchmarks/: 10,000 Observations cost 16x 1,000).
Freezing what exists after start-up (mappings, card content, imports) and running the youngest generation
less often keeps the cost linear. The older generations keep CPython's default ratios (10, 10): with larger
ones a full collection almost never ran and worker memory grew steadily under a soak load.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 50_000
GEN1_THRESHOLD = 10
GEN2_THRESHOLD = 10


def tune_gc() -> None:
    """Call once per serving process, after the app is built (gunicorn: post_fork)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
