"""Prometheus multiprocess mode for gunicorn: every worker writes its metrics to files in one directory,
and /metrics (answered by any worker) aggregates them.

prometheus-client chooses its value storage when a metric is created, from PROMETHEUS_MULTIPROC_DIR, so
:func:`enable` must run before cds_service.web.metrics is imported (``cds-service serve`` calls it before it
builds the app). This module therefore imports prometheus_client only lazily.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
_METRIC_FILE_PREFIXES = ("counter_", "gauge_", "histogram_", "summary_")


def enable() -> Path:
    """Use PROMETHEUS_MULTIPROC_DIR (emptied of old metric files) or a fresh temporary directory."""
    configured = os.environ.get(ENV)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        # Files left by a previous run would be added to this run's counters.
        for path in directory.glob("*.db"):
            if path.name.startswith(_METRIC_FILE_PREFIXES):
                path.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="cds-prometheus-"))
        os.environ[ENV] = str(directory)
        _remove_at_exit(directory, os.getpid())
    if "prometheus_client.values" in sys.modules:  # imported early: switch the storage class now
        from prometheus_client import values

        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return directory


def _remove_at_exit(directory: Path, owner_pid: int) -> None:
    def remove() -> None:
        # Forked gunicorn workers inherit atexit handlers: only the process that created it removes it.
        if os.getpid() == owner_pid:
            shutil.rmtree(directory, ignore_errors=True)

    atexit.register(remove)
