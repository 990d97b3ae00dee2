"""Garbage-collector settings for serving processes.

A hook request allocates hundreds of thousands of small, acyclic objects (the parsed FHIR JSON), which
reference counting frees. With CPython's default thresholds the cyclic collector still runs many times per
large request, and each full collection walks every live object, including the app's own; the time per
request then grows faster than the request (measured in benchmarks/: 10,000 Observations cost 16x 1,000).
Freezing what exists after start-up (mappings, card content, imports) and collecting less often keeps the
cost linear. Cycles are still collected, just in larger batches.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 100_000
GEN1_THRESHOLD = 50
GEN2_THRESHOLD = 100


def tune_gc() -> None:
    """Call once per serving process, after the app is built (gunicorn: post_fork)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
