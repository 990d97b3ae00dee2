"""The watch list (issue 19): CAR-T patients in the post-infusion window, re-checked as results arrive.

=====================  ============================================================================
servers                the FHIR servers watched, each with its SMART Backend Services client
backend                discovery, client assertion, client_credentials tokens, re-authentication
store                  the tables: watched patients (leases), changes, the notification outbox
poll                   ``_lastUpdated`` polling with server-clock watermarks
watcher                one cycle: claim -> poll -> fetch as a hook does -> engine -> changes
notify                 signed webhooks (Standard Webhooks), FHIR Communication/Flag write-back
subscriptions          R4 backport rest-hook Subscriptions where the server has them
scheduler              APScheduler: the tick that runs cycles in each process
sitelist               a site's own list of patients (CDS_WATCH_ENROLL_FILE)
views                  /watch: the worklist page, the JSON API, the Subscription endpoint
metrics                Prometheus counters, and gauges read from the tables
=====================  ============================================================================

:func:`init_app` builds the :class:`WatchState` of an app (``app.extensions["cds_watch"]``) when
CDS_WATCH is on. See docs/watch-list.md.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from cachetools import TTLCache
from flask import Flask, current_app

from cds_service.config import Settings
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import EvaluationResult
from cds_service.hooks.request import HookRequest
from cds_service.hooks.services import ServiceRegistry
from cds_service.watch.metrics import WatchCollector
from cds_service.watch.scheduler import WatchScheduler
from cds_service.watch.servers import ServerRegistry, load_servers
from cds_service.watch.sitelist import load_list
from cds_service.watch.store import WatchEntry, WatchStore
from cds_service.watch.watcher import CycleReport, DeliveryReport, Watcher
from cds_service.web.metrics import COLLECTORS_KEY
from cds_service.web.state import get_state

EXTENSION_KEY = "cds_watch"
HOOK_SERVICE = ("iec-hs-screening", "patient-view")
log = logging.getLogger("cds_service.watch")


@dataclass(slots=True)
class WatchState:
    """The watch list of one app: settings, servers, store, watcher, scheduler."""

    settings: Settings
    servers: ServerRegistry
    store: WatchStore
    watcher: Watcher
    scheduler: WatchScheduler
    _recent: TTLCache[tuple[str, str, float | None], bool] = field(
        default_factory=lambda: TTLCache(maxsize=4096, ttl=600)
    )
    _list_mtime: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------------ enrolment

    def enrol(
        self, fhir_server: str, patient_id: str, *, infusion_at: float | None, source: str
    ) -> tuple[WatchEntry, bool]:
        """Watch the patient (or update the infusion of a watched one); wakes the scheduler."""
        server = self.servers.find(fhir_server)
        if server is None:
            raise ValueError("not a watched FHIR server")
        entry, created = self.store.enrol(
            server.base,
            patient_id,
            infusion_at=infusion_at,
            source=source,
            now=time.time(),
            reactivate=source != "hook",
        )
        if created:
            log.info(
                "watch patient enrolled",
                extra={"event": "watch-enrol", "watch_row": entry.id, "source": source},
            )
            self.scheduler.wake()
        return entry, created

    def observe_hook(self, request: HookRequest, result: EvaluationResult, allowed: bool) -> None:
        """After a hook call: enrol the patient when the call shows a CAR-T infusion within the risk window.
        Only the patient id, the FHIR server and the infusion instant are kept; never the hook's token."""
        therapy = result.therapy
        if not (allowed and therapy.found and therapy.infusion_time and request.fhir_server):
            return
        day = therapy.day_post_infusion
        if day is None or not 0 <= day <= self.settings.watch.window_days:
            return
        server = self.servers.find(request.fhir_server)
        if server is None:
            return
        infusion = therapy.infusion_time.timestamp()
        key = (server.base, request.patient_id, infusion)
        with self._lock:
            if key in self._recent:
                return  # enrolled a moment ago: no database write on every chart opening
        self.enrol(server.base, request.patient_id, infusion_at=infusion, source="hook")
        with self._lock:
            self._recent[key] = True

    def sync_list(self) -> None:
        """Apply the site's list when its file changed (enrol the listed, let the unlisted leave)."""
        path = self.settings.watch.enroll_file
        if path is None:
            return
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return
        if mtime == self._list_mtime:
            return
        try:
            listed = load_list(path, self.servers)
        except Exception as exc:  # a broken edit: keep the last applied list and say so
            log.error(
                "watch list file invalid", extra={"event": "watch-list", "error_type": type(exc).__name__}
            )
            return
        keys = set()
        for item in listed:
            keys.add((item.fhir_server, item.patient_id))
            entry = self.store.find(item.fhir_server, item.patient_id)
            if (
                entry is None
                or not entry.active
                or (item.infusion_at and entry.infusion_at != item.infusion_at)
            ):
                self.enrol(item.fhir_server, item.patient_id, infusion_at=item.infusion_at, source="list")
        for entry in self.store.with_source("list"):
            if (entry.fhir_server, entry.patient_id) not in keys:
                self.watcher.unenrol(entry, "removed-from-list")
        self._list_mtime = mtime

    # ------------------------------------------------------------------ cycles

    def cycle(self, *, full: bool = False, at: datetime | None = None) -> tuple[CycleReport, DeliveryReport]:
        """One cycle (due patients, or all with `full`) and then the due notifications."""
        self.sync_list()
        report = self.watcher.run_cycle(full=full, at=at)
        return report, self.watcher.deliver()

    def tick(self) -> None:
        """The scheduler's job."""
        self.cycle()
        self.store.purge_left(time.time())


def init_app(
    app: Flask, settings: Settings, knowledge: Knowledge, registry: ServiceRegistry
) -> WatchState | None:
    """Build the watch list of `app` (None when CDS_WATCH is off); validates the servers and the list."""
    watch = settings.watch
    if not watch.enabled:
        return None
    servers = load_servers(watch.servers_file, dev_mode=settings.dev_mode, write_back=watch.write_back)
    if watch.enroll_file is not None:
        load_list(watch.enroll_file, servers)  # fail at start on a bad list
    store = WatchStore(settings.database_url, shared=get_state(app).feedback.engine)
    service = registry.find(*HOOK_SERVICE)
    assert service is not None
    watcher = Watcher(
        settings=watch,
        dev_mode=settings.dev_mode,
        store=store,
        servers=servers,
        session=app.config["HTTP_SESSION"],
        knowledge=knowledge,
        service=service,
        public_base_url=settings.public_base_url,
        lookback_days=settings.prefetch_lookback_days,
        max_pages=settings.fhir_max_pages,
        clock=app.config.get("WATCH_CLOCK"),
    )
    state = WatchState(settings, servers, store, watcher, WatchScheduler(lambda: None, watch.tick_s))
    state.scheduler = WatchScheduler(state.tick, watch.tick_s)
    app.extensions[EXTENSION_KEY] = state
    app.extensions.setdefault(COLLECTORS_KEY, []).append(WatchCollector(store))
    return state


def watch_state(app: Flask | None = None) -> WatchState | None:
    """The app's watch list, or None when it is off."""
    state = (app or current_app).extensions.get(EXTENSION_KEY)
    return state if isinstance(state, WatchState) else None
