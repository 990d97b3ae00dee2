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
# process and resumes when the last one ends, when the hook's garbage is already gone.
#
# Under overlapping load the last call may never end: calls keep overlapping for minutes, and cyclic
# garbage (exceptions with their tracebacks from FHIR faults, for one) piled up until load paused: worker
# RSS grew from ~165 MB to 300-440 MB and stayed there (issue 18). So while the collector is held, every
# call boundary (a call starting or ending while others run) checks the young generation: past
# HOLD_CEILING net allocations it runs a collection there, between hooks, of the youngest generation (an
# older one when its own threshold is due, as CPython's automatic collector would). Garbage under the hold
# is thus bounded by about HOLD_CEILING objects, whatever the load.
HOLD_CEILING = 100_000


class CollectorHold:
    """Counts hook calls in progress (any thread) and keeps the cyclic collector off while there are any,
    collecting at call boundaries when the young generation passes `ceiling` (see above)."""

    def __init__(self, ceiling: int = HOLD_CEILING) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._resume = False
        self.ceiling = ceiling
        self.held_collections = 0

    def enter(self) -> None:
        with self._lock:
            self._active += 1
            if self._active == 1:
                self._resume = gc.isenabled()  # never turn on a collector someone else turned off
                gc.disable()
            else:
                self._collect_if_due()

    def exit(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                if self._resume:
                    gc.enable()
            else:
                self._collect_if_due()

    def _collect_if_due(self) -> None:
        if not self._resume:
            return  # the collector was off before the hold: not ours to run
        young, middle, old = gc.get_count()
        if young <= self.ceiling:
            return
        self.held_collections += 1
        gc.collect(2 if old >= GEN2_THRESHOLD else 1 if middle >= GEN1_THRESHOLD else 0)

    @property
    def active(self) -> int:
        return self._active


COLLECTOR_HOLD = CollectorHold()  # one per process: the collector is per process
