"""The in-process scheduler: APScheduler 3 (``BackgroundScheduler``, memory job store) triggers cycles.

APScheduler only says *when* to look: every CDS_WATCH_TICK_S one job claims the patients that are due and
delivers the due notifications. *Who* handles a patient is decided by the database (leases; see
cds_service.watch.store), so any number of schedulers -- gunicorn workers, instances, ``cds-service watch``
processes -- can tick on the same tables without evaluating or notifying anything twice. That is why the
jobs live in a memory job store: APScheduler 3 does not coordinate several schedulers on one persistent job
store (each would run every job), and the schedule that matters (each patient's next poll) is a column of
``watch_patients``, not a job.

``max_instances=1`` and ``coalesce=True``: a tick that is still running when the next one is due is not run
twice, and missed ticks collapse into one. :meth:`WatchScheduler.wake` runs the tick now (a Subscription
notification, a new enrolment).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger("cds_service.watch")
JOB_ID = "watch-tick"


class WatchScheduler:
    """One background scheduler per process, running `tick` every `interval_s` seconds."""

    def __init__(self, tick: Callable[[], None], interval_s: float) -> None:
        self._tick = tick
        self._interval_s = interval_s
        self._scheduler: BackgroundScheduler | None = None

    @property
    def running(self) -> bool:
        return self._scheduler is not None and bool(self._scheduler.running)

    def start(self) -> None:
        if self.running:
            return
        scheduler = BackgroundScheduler(timezone=UTC, job_defaults={"misfire_grace_time": None})
        scheduler.add_job(
            self._run,
            "interval",
            seconds=self._interval_s,
            id=JOB_ID,
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )
        scheduler.start()
        self._scheduler = scheduler
        log.info("watch scheduler started", extra={"event": "watch-scheduler", "tick_s": self._interval_s})

    def wake(self) -> None:
        """Run the tick as soon as possible (no-op without a running scheduler)."""
        scheduler = self._scheduler
        if scheduler is not None and scheduler.running:
            try:
                scheduler.modify_job(JOB_ID, next_run_time=datetime.now(UTC))
            except Exception:  # the job is being replaced or the scheduler is stopping
                pass

    def stop(self) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=True)

    def _run(self) -> None:
        try:
            self._tick()
        except Exception as exc:  # logged by type only: messages may quote data
            log.error("watch tick failed", extra={"event": "watch-error", "error_type": type(exc).__name__})
