"""`cds-service serve`: the app behind gunicorn, started programmatically.

* The app is built once in the master (`preload_app`), so invalid settings or data files stop the server
  before any worker starts; each worker then drops the database connections inherited from the master.
* Workers are `gthread`: hook calls mostly wait on FHIR fallback queries, so a few threads per process
  (CDS_THREADS, default 4) serve concurrent hooks on 2 cores; processes default to the CPU count.
* The worker timeout follows the hook deadline (CDS_HOOK_DEADLINE_S) plus a margin, so a stuck request is
  killed rather than left hanging. Flask's debugger is never enabled, not even with --dev.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

from cds_service.auth.verify import MAX_TOKEN_CHARS
from cds_service.config import Settings
from cds_service.errors import ConfigurationError, DataFileError
from cds_service.ops.multiproc import enable as enable_multiprocess_metrics
from cds_service.web.gc_tuning import tune_gc
from cds_service.web.state import get_state

log = logging.getLogger("cds_service.web.server")
TIMEOUT_MARGIN_S = 5
# One header line may hold twice the documented largest client JWT (16 KiB) plus "Authorization: Bearer ":
# a token between gunicorn's default 8 KiB and that reaches the app, which answers a 401 OperationOutcome
# (cds_service.auth.verify checks the size first) instead of gunicorn's HTML 431.
HEADER_FIELD_LIMIT = 2 * MAX_TOKEN_CHARS + 64


class GunicornServer(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    """A gunicorn application serving one preloaded Flask app."""

    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings:  # newer settings are skipped on older gunicorn releases
                self.cfg.set(key, value)
        self.cfg.set("post_fork", self._post_fork)

    def _post_fork(self, server: Any, worker: Any) -> None:
        # Database connections pooled in the master must not be shared with the forked workers.
        get_state(self.application).feedback.dispose()
        tune_gc()

    def load(self) -> Flask:
        return self.application


def gunicorn_options(settings: Settings, host: str, port: int, workers: int | None) -> dict[str, Any]:
    """Bind address, worker model and timeouts derived from the settings."""
    timeout = math.ceil(settings.hook_deadline_s) + TIMEOUT_MARGIN_S
    return {
        "bind": f"{host}:{port}",
        "workers": workers or settings.workers,
        "worker_class": "gthread",
        "threads": settings.threads,
        "timeout": timeout,
        "graceful_timeout": timeout,
        "keepalive": 5,
        "preload_app": True,
        "accesslog": None,  # the app writes its own structured request log
        "errorlog": "-",
        "loglevel": "info",
        "limit_request_line": 8190,
        "limit_request_field_size": HEADER_FIELD_LIMIT,
        # Recent gunicorn releases open a control socket under ~/.gunicorn by default: one path shared
        # by every instance on the machine, and a management interface this service does not need.
        "control_socket_disable": True,
    }


def banner(settings: Settings, host: str, port: int) -> str:
    """What to open once the server is up."""
    base = settings.public_base_url or f"http://{host}:{port}"
    lines = [
        f"CDS Hooks service listening on http://{host}:{port}",
        f"  card preview page (open this first): {base}/",
        f"  discovery:  {base}/cds-services",
        f"  health:     {base}/healthz (liveness), {base}/readyz (readiness)",
        f"  metrics:    {base}/metrics (Prometheus), API description: {base}/openapi.json",
        f"  services:   {base}/cds-services/iec-hs-screening (patient-view), "
        "iec-hs-order-select (order-select), iec-hs-order-sign (order-sign)",
        f"  feedback:   {base}/cds-services/<id>/feedback",
        f"  CDS Hooks Sandbox: add the discovery URL above as a CDS service ({base}/cds-services)",
    ]
    return "\n".join(lines)


def serve(host: str = "127.0.0.1", port: int = 8080, dev: bool = False, workers: int | None = None) -> int:
    """Run the service until stopped; returns the process exit code (2 on bad configuration)."""
    from cds_service.web.app import DEV_MODE_AUTH_WARNING, DEV_MODE_WARNING, create_app

    if dev:
        os.environ["CDS_DEV_MODE"] = "1"
    # Before the app (and so its metrics) exists: then every worker's metrics reach /metrics.
    enable_multiprocess_metrics()
    try:
        app = create_app()
    except (ConfigurationError, DataFileError) as exc:
        print(f"error: cannot start: {exc}", file=sys.stderr)
        return 2
    settings = get_state(app).settings
    if settings.dev_mode:
        warning = DEV_MODE_AUTH_WARNING if settings.trusted_clients_configured else DEV_MODE_WARNING
        print(f"\n{'!' * 100}\n!! {warning}\n{'!' * 100}\n", file=sys.stderr, flush=True)
    print(banner(settings, host, port), flush=True)
    GunicornServer(app, gunicorn_options(settings, host, port, workers)).run()
    return 0
