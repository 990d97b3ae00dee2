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
import threading

GEN0_THRESHOLD = 50_000
GEN1_THRESHOLD = 10
GEN2_THRESHOLD = 10


def tune_gc() -> None:
    """Call once per serving process, after the app is built (gunicorn: post_fork)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)


# While hooks run, live young objects (the parsed request, its normalized values) often outnumber the
# youngest generation's threshold, so a collection in the middle of a hook walks them all and then walks
# them again in the older generation, for nothing: they are acyclic and reference counting frees them
# when the request ends. The collector is therefore held off while any hook call is in progress in this
# process and resumes when the last one ends, when the hook's garbage is already gone. Cycles made
# meanwhile wait; if hooks overlap without a pause long enough for this many net allocations, a full
# collection runs anyway.
BACKSTOP_ALLOCATIONS = 1_000_000


class CollectorHold:
    """Counts hook calls in progress (any thread) and keeps the cyclic collector off while there are any."""

    def __init__(self, backstop: int = BACKSTOP_ALLOCATIONS) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._resume = False
        self.backstop = backstop
        self.backstop_collections = 0

    def enter(self) -> None:
        with self._lock:
            self._active += 1
            if self._active == 1:
                self._resume = gc.isenabled()  # never turn on a collector someone else turned off
                gc.disable()

    def exit(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                if self._resume:
                    gc.enable()
            elif gc.get_count()[0] > self.backstop:
                self.backstop_collections += 1
                gc.collect()

    @property
    def active(self) -> int:
        return self._active


COLLECTOR_HOLD = CollectorHold()  # one per process: the collector is per process
