"""The watcher: one polling cycle over the due (or all) enrolled patients, and notification delivery.

For each claimed patient (cds_service.watch.store):

1. a backend token for the patient's FHIR server (cds_service.watch.backend);
2. a ``_lastUpdated`` poll (cds_service.watch.poll); a 401 drops the token and the poll is retried once
   with a new one;
3. when something is new (or the patient was just enrolled, was notified by a Subscription, or was not
   evaluated for CDS_WATCH_REEVALUATE_S), the patient's data is fetched exactly as a hook call without
   prefetch fetches it (cds_service.hooks.prefetch.resolve, with the same templates, date window and
   budgets) and the same engine runs at "now" (``read_record`` + ``evaluate_at``);
4. a rise of the IEC-HS status (none -> possible -> met) or of the grade becomes a change with its
   notifications, written together with the new state (store.finish), or not at all;
5. the next poll is scheduled: CDS_WATCH_POLL_TIGHT_S while possible or met, else CDS_WATCH_POLL_S;
   after a failure sooner (30 s doubling up to the usual interval), with the problem shown on the worklist.

A patient leaves at the end of the risk window (infusion + CDS_WATCH_WINDOW_DAYS), or when no CAR-T
infusion is on record at all.

Logs carry the watch row number, outcomes and reasons: never a patient id, a URL or a token.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import requests

from cds_service.config import WatchSettings
from cds_service.engine.evaluate import evaluate_at
from cds_service.engine.instruments.registry import IEC_HS
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import EvaluationResult
from cds_service.engine.record import read_record
from cds_service.engine.units import parse_budget
from cds_service.errors import InputError, PrefetchUnavailable
from cds_service.hooks.fhir_client import FhirClient, FhirFetchError
from cds_service.hooks.prefetch import FetchEnvironment, ResolvedPrefetch, resolve
from cds_service.hooks.request import HookRequest
from cds_service.hooks.services import ServiceDefinition
from cds_service.watch import metrics
from cds_service.watch.backend import AccessToken, BackendAuthError, TokenCache
from cds_service.watch.fhirwrite import fhir_call
from cds_service.watch.notify import (
    DeliveryError,
    fhir_resource,
    iso,
    retry_delay,
    send_webhook,
    webhook_payload,
)
from cds_service.watch.poll import PollResult, marks_from, poll
from cds_service.watch.servers import ServerRegistry, WatchServer
from cds_service.watch.store import Change, OutboxItem, WatchEntry, WatchStore, new_change_id
from cds_service.watch.subscriptions import SubscriptionManager

log = logging.getLogger("cds_service.watch")
FERRITIN_POINTS = 24  # the sparkline: the latest values since shortly before the infusion
FIRST_RETRY_S = 30.0
OUTBOX_BATCH = 32
STATUS_RANK = {"possible": 1, "met": 2}
NOT_FOUND = "patient not found on the FHIR server"


def rank(status: str | None) -> int:
    """none (not-met, indeterminate, not-applicable, not evaluated) 0 < possible 1 < met 2."""
    return STATUS_RANK.get(status or "", 0)


def rises(old_status: str | None, old_grade: int | None, new_status: str, new_grade: int | None) -> bool:
    """Is this a change to notify: a higher status, or the same possible/met status with a higher grade?"""
    if rank(new_status) != rank(old_status):
        return rank(new_status) > rank(old_status)
    return rank(new_status) > 0 and (new_grade or 0) > (old_grade or 0)


@dataclass(slots=True)
class CycleReport:
    """What one cycle did (counts only: printable and loggable)."""

    claimed: int = 0
    evaluated: int = 0
    unchanged: int = 0
    failed: int = 0
    left: int = 0
    changes: int = 0
    lost_leases: int = 0
    fhir_requests: int = 0
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


@dataclass(slots=True)
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    gave_up: int = 0


@dataclass(slots=True)
class _Outcome:
    kind: str  # evaluated | unchanged | failed | left
    values: dict[str, Any]
    changes: list[Change] = field(default_factory=list)
    requests: int = 0
    lag: list[float] = field(default_factory=list)
    noticed_by: str = "poll"


class Watcher:
    """Everything a cycle needs; built once per app (cds_service.watch.init_app) and shared by threads."""

    def __init__(
        self,
        *,
        settings: WatchSettings,
        dev_mode: bool,
        store: WatchStore,
        servers: ServerRegistry,
        session: requests.Session,
        knowledge: Knowledge,
        service: ServiceDefinition,
        public_base_url: str | None,
        lookback_days: int,
        max_pages: int,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.dev_mode = dev_mode
        self.store = store
        self.servers = servers
        self.session = session
        self.knowledge = knowledge
        self.service = service
        self.public_base_url = public_base_url or ""
        self.lookback_days = lookback_days
        self.max_pages = max_pages
        self.clock = clock  # the evaluation instant (tests, replays); None: now
        self.tokens = TokenCache(session, dev_mode=dev_mode)
        self.subscriptions = SubscriptionManager(session, store, public_base_url, settings.subscriptions)
        self.owner = f"{os.getpid()}-{secrets.token_hex(6)}"

    # ------------------------------------------------------------------ cycles

    def run_cycle(self, *, full: bool = False, at: datetime | None = None) -> CycleReport:
        """Poll every due patient (`full`: every enrolled patient not yet polled in this cycle), in parallel
        up to CDS_WATCH_CONCURRENCY; patients claimed by another process are left to it."""
        started = time.time()
        report = CycleReport()
        with ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="watch") as pool:
            while True:
                now = time.time()
                batch = self.store.claim(
                    self.owner,
                    now,
                    self.settings.lease_s,
                    self.settings.concurrency,  # claim what this process can work on now
                    cycle_start=started if full else None,
                )
                if not batch:
                    break
                report.claimed += len(batch)
                for outcome, stored in pool.map(lambda e: self._handle(e, at), batch):
                    report.count(outcome.kind)
                    report.fhir_requests += outcome.requests
                    setattr(report, outcome.kind, getattr(report, outcome.kind) + 1)
                    if stored:
                        report.changes += len(outcome.changes)
                    else:
                        report.lost_leases += 1
                if not full and time.time() - started > self.settings.tick_s * 4:
                    break  # a long backlog: let the next tick continue
        report.seconds = round(time.time() - started, 3)
        if report.claimed:
            log.info(
                "watch cycle",
                extra={
                    "event": "watch-cycle",
                    "full": full,
                    "claimed": report.claimed,
                    "evaluated": report.evaluated,
                    "unchanged": report.unchanged,
                    "failed": report.failed,
                    "left": report.left,
                    "changes": report.changes,
                    "lost_leases": report.lost_leases,
                    "fhir_requests": report.fhir_requests,
                    "seconds": report.seconds,
                },
            )
        return report

    def _handle(self, entry: WatchEntry, at: datetime | None) -> tuple[_Outcome, bool]:
        started = time.perf_counter()
        polled_at = time.time()
        try:
            outcome = self._process(
                entry, at or (self.clock() if self.clock else datetime.now(UTC)), polled_at
            )
        except Exception as exc:  # a bug for one patient must not stop the others
            log.error(
                "watch patient failed unexpectedly",
                extra={"event": "watch-error", "watch_row": entry.id, "error_type": type(exc).__name__},
            )
            outcome = self._failure(entry, "internal error", polled_at)
        outcome.values.setdefault("last_polled", polled_at)
        stored = self.store.finish(entry, self.owner, outcome.values, outcome.changes, now=time.time())
        finished = time.time()
        metrics.EVALUATIONS.labels(outcome.kind).inc()
        metrics.POLL_DURATION.labels(outcome.kind).observe(time.perf_counter() - started)
        if stored:
            for updated in outcome.lag:
                metrics.RESULT_LAG.labels(outcome.noticed_by).observe(max(0.0, finished - updated))
        return outcome, stored

    def _process(self, entry: WatchEntry, at: datetime, polled_at: float) -> _Outcome:
        server = self.servers.find(entry.fhir_server)
        if server is None:
            return self._failure(entry, "FHIR server no longer configured for the watch list", polled_at)
        if self._window_over(entry.infusion_at, at):
            return self._leave(entry, server, "window-ended")
        deadline = time.monotonic() + self.settings.fetch_budget_s
        try:
            if entry.watermarks:
                token, result = self._poll(server, entry, at, deadline)
            else:  # never fetched: there is nothing to compare with, so fetch everything at once
                token, result = self.tokens.token(server), PollResult(patient_found=True, new={"all": 1})
        except (BackendAuthError, FhirFetchError) as exc:
            return self._failure(entry, exc.reason, polled_at)
        if not result.patient_found:
            return self._failure(entry, NOT_FOUND, polled_at, requests=result.requests)
        due = entry.last_evaluated is None or polled_at - entry.last_evaluated >= self.settings.reevaluate_s
        if not (result.anything_new or entry.force or entry.notified or due):
            values = self._ok_values(entry, polled_at)
            if result.refused:  # still evaluated on what can be read; the gap stays on the worklist
                values |= _incomplete(entry, result.refused, polled_at)
            return _Outcome("unchanged", values, requests=result.requests)
        requests = result.requests + len(self.service.prefetch)
        try:
            resolved, token = self._fetch(server, entry, token, at, deadline)
        except (BackendAuthError, PrefetchUnavailable) as exc:
            reason = exc.reason if isinstance(exc, BackendAuthError) else _unavailable_reason(exc)
            return self._failure(entry, reason, polled_at, requests=requests)
        if resolved.data.get("patient") is None:
            return self._failure(entry, NOT_FOUND, polled_at, requests=requests)
        outcome = self._evaluate(entry, server, token, resolved, at, polled_at, result)
        outcome.requests += requests
        return outcome

    def _poll(
        self, server: WatchServer, entry: WatchEntry, at: datetime, deadline: float
    ) -> tuple[AccessToken, PollResult]:
        for attempt in (1, 2):
            token = self.tokens.token(server)
            client = self._client(server, token)
            try:
                return token, poll(
                    client,
                    self.service,
                    entry.patient_id,
                    entry.watermarks,
                    at=at,
                    lookback_days=self.lookback_days,
                    overlap_s=self.settings.poll_overlap_s,
                    deadline=deadline,
                )
            except FhirFetchError as exc:
                if exc.reason != "HTTP 401" or attempt == 2:
                    raise
                self.tokens.invalidate(server, token)  # expired or revoked: authenticate again
        raise AssertionError("unreachable")

    def _fetch(
        self, server: WatchServer, entry: WatchEntry, token: AccessToken, at: datetime, deadline: float
    ) -> tuple[ResolvedPrefetch, AccessToken]:
        for attempt in (1, 2):
            request = HookRequest(
                service_id=self.service.id,
                hook=self.service.hook,
                hook_instance=str(uuid.uuid4()),
                context={"patientId": entry.patient_id},
                prefetch={},
                fhir_server=server.base,
                access_token=token.value,
            )
            env = FetchEnvironment(
                session=self.session,
                server_allowed=lambda url: self.servers.find(url) is server,
                allow_anonymous=False,
                timeout_s=None,
                max_pages=self.max_pages,
                lookback_days=self.lookback_days,
            )
            try:
                return resolve(request, self.service, env, at, deadline), token
            except PrefetchUnavailable as exc:
                if "HTTP 401" not in exc.message or attempt == 2:
                    raise
                self.tokens.invalidate(server, token)
                token = self.tokens.token(server)
        raise AssertionError("unreachable")

    def _evaluate(
        self,
        entry: WatchEntry,
        server: WatchServer,
        token: AccessToken,
        resolved: ResolvedPrefetch,
        at: datetime,
        polled_at: float,
        polled: PollResult,
    ) -> _Outcome:
        try:
            with parse_budget():
                result = evaluate_at(read_record(resolved.data, knowledge=self.knowledge), at)
        except InputError:
            return self._failure(entry, "the FHIR data could not be read", polled_at)
        infusion = (
            result.therapy.infusion_time.timestamp() if result.therapy.infusion_time else entry.infusion_at
        )
        if infusion is None:
            return self._leave(entry, server, "no-therapy", token)
        if self._window_over(infusion, at):
            return self._leave(entry, server, "window-ended", token)
        iec = IEC_HS.result(result.instruments)
        status, grade = str(iec.status), iec.grade
        day = result.therapy.day_post_infusion
        if day is None:
            day = (at.date() - datetime.fromtimestamp(infusion, UTC).date()).days
        evaluated_at = time.time()
        values = self._ok_values(entry, polled_at, status=status)
        values |= {
            "status": status,
            "grade": grade,
            "day_post_infusion": day,
            "infusion_at": infusion,
            "ferritin": _ferritin_series(result, infusion),
            "evaluated_at": at.timestamp(),
            "last_evaluated": evaluated_at,
            "evaluations": entry.evaluations + 1,
            "force": False,
        }
        # Marks only for what was read completely: a search left incomplete is fetched again next time.
        marks = {**polled.marks, **marks_from(resolved.data, self.settings.poll_overlap_s)}
        values["watermarks"] = orjson.dumps(
            {k: v for k, v in marks.items() if k not in resolved.gaps}
        ).decode()
        if resolved.gaps:  # evaluated on what could be read; the gap is shown on the worklist
            values |= _incomplete(entry, {key: "" for key in resolved.gaps}, polled_at)
        changes: list[Change] = []
        if rises(entry.status, entry.grade, status, grade):
            change = Change(
                change_id=new_change_id(),
                from_status=entry.status if rank(entry.status) else None,
                from_grade=entry.grade if rank(entry.status) else None,
                to_status=status,
                to_grade=grade,
                day_post_infusion=day,
                evaluated_at=evaluated_at,
            )
            change = Change(**{**_fields(change), "notifications": self._notifications(entry, change)})
            changes.append(change)
            values |= {
                "last_change": evaluated_at,
                "change_from": _label(entry.status if rank(entry.status) else None, entry.grade),
            }
        values |= self.subscriptions.ensure(server, entry, token.value)
        return _Outcome(
            "evaluated",
            values,
            changes,
            lag=polled.new_observation_times if not entry.force else [],
            noticed_by="subscription" if entry.notified else "poll",
        )

    def _notifications(self, entry: WatchEntry, change: Change) -> dict[str, dict[str, Any]]:
        payload = webhook_payload(entry, change, base_url=self.public_base_url)
        notifications: dict[str, dict[str, Any]] = {}
        if self.settings.webhook_url:
            notifications["webhook"] = payload
        if self.settings.write_back != "off":
            notifications["fhir"] = {**payload, "resourceKind": self.settings.write_back}
        return notifications

    def _ok_values(self, entry: WatchEntry, polled_at: float, status: str | None = None) -> dict[str, Any]:
        tight = rank(status if status is not None else entry.status) > 0
        interval = self.settings.poll_tight_s if tight else self.settings.poll_s
        return {
            "next_due": polled_at + interval,
            "problem": None,
            "problem_since": None,
            "failures": 0,
            "last_polled": polled_at,
        }

    def _failure(self, entry: WatchEntry, reason: str, polled_at: float, *, requests: int = 0) -> _Outcome:
        failures = entry.failures + 1
        interval = self.settings.poll_tight_s if rank(entry.status) else self.settings.poll_s
        delay = min(interval, FIRST_RETRY_S * 2 ** (failures - 1))
        metrics.PROBLEMS.labels(metrics.problem_kind(reason)).inc()
        log.warning(
            "watch patient problem",
            extra={"event": "watch-problem", "watch_row": entry.id, "reason": reason, "failures": failures},
        )
        values = {
            "problem": reason[:160],
            "problem_since": entry.problem_since or polled_at,
            "failures": failures,
            "next_due": polled_at + delay,
            "last_polled": polled_at,
        }
        return _Outcome("failed", values, requests=requests)

    def _leave(
        self, entry: WatchEntry, server: WatchServer, reason: str, token: AccessToken | None = None
    ) -> _Outcome:
        if entry.subscription_id is not None:
            try:
                self.subscriptions.remove(server, entry, (token or self.tokens.token(server)).value)
            except BackendAuthError:
                pass
        log.info("watch patient left", extra={"event": "watch-left", "watch_row": entry.id, "reason": reason})
        values = {
            "active": False,
            "left_reason": reason,
            "left_at": time.time(),
            "subscription_id": None,
            "subscription_state": None,
            "subscription_token": None,
            "subscription_secret_hash": None,
        }
        return _Outcome("left", values)

    def _window_over(self, infusion_at: float | None, at: datetime) -> bool:
        if infusion_at is None:
            return False
        end = datetime.fromtimestamp(infusion_at, UTC) + timedelta(days=self.settings.window_days + 1)
        return at >= end.replace(hour=0, minute=0, second=0, microsecond=0)

    def _client(self, server: WatchServer, token: AccessToken) -> FhirClient:
        return FhirClient(self.session, server.base, token.value, timeout_s=None, max_pages=self.max_pages)

    # ------------------------------------------------------------------ leaving on request

    def unenrol(self, entry: WatchEntry, reason: str) -> WatchEntry | None:
        """Stop watching now (the Subscription is removed, best effort)."""
        server = self.servers.find(entry.fhir_server)
        if server is not None and entry.subscription_id is not None:
            try:
                self.subscriptions.remove(server, entry, self.tokens.token(server).value)
            except BackendAuthError:
                pass
        return self.store.leave(entry.id, reason, time.time())

    # ------------------------------------------------------------------ delivery

    def deliver(self, *, max_rounds: int = 50) -> DeliveryReport:
        """Deliver every due notification in the outbox (claimed: two processes never send one together)."""
        report = DeliveryReport()
        for _ in range(max_rounds):
            items = self.store.claim_outbox(self.owner, time.time(), self.settings.lease_s, OUTBOX_BATCH)
            if not items:
                break
            for item in items:
                self._deliver_one(item, report)
        return report

    def _deliver_one(self, item: OutboxItem, report: DeliveryReport) -> None:
        try:
            if item.channel == "webhook":
                if not self.settings.webhook_url or not self.settings.webhook_secret:
                    raise DeliveryError("webhook no longer configured")
                send_webhook(
                    self.session,
                    self.settings.webhook_url,
                    self.settings.webhook_secret,
                    item.payload,
                    timeout_s=self.settings.webhook_timeout_s,
                )
            else:
                self._write_back(item)
        except (DeliveryError, BackendAuthError, FhirFetchError) as exc:
            attempts = item.attempts + 1
            give_up = attempts >= self.settings.webhook_max_attempts
            delay = retry_delay(attempts, base=self.settings.webhook_retry_s)
            retry_at = None if give_up else time.time() + delay
            self.store.outbox_done(
                item, self.owner, now=time.time(), sent=False, error=exc.reason, retry_at=retry_at
            )
            outcome = "gave-up" if give_up else "failed"
            report.gave_up += give_up
            report.failed += not give_up
            metrics.NOTIFICATIONS.labels(item.channel, outcome).inc()
            log.warning(
                "watch notification not delivered",
                extra={
                    "event": "watch-notify",
                    "channel": item.channel,
                    "change_id": item.change_id,
                    "attempts": attempts,
                    "reason": exc.reason,
                    "outcome": outcome,
                },
            )
            return
        self.store.outbox_done(item, self.owner, now=time.time(), sent=True)
        report.sent += 1
        metrics.NOTIFICATIONS.labels(item.channel, "sent").inc()
        log.info(
            "watch notification sent",
            extra={"event": "watch-notify", "channel": item.channel, "change_id": item.change_id},
        )

    def _write_back(self, item: OutboxItem) -> None:
        payload = item.payload
        server = self.servers.find(str(payload["fhirServer"]))
        if server is None:
            raise DeliveryError("FHIR server no longer configured")
        kind = str(payload.get("resourceKind", self.settings.write_back))
        resource = fhir_resource(kind, payload)
        identifier = resource["identifier"][0]
        for attempt in (1, 2):
            token = self.tokens.token(server)
            answer = fhir_call(
                self.session,
                "POST",
                f"{server.base}/{kind}",
                token.value,
                body=resource,
                headers={"If-None-Exist": f"identifier={identifier['system']}|{identifier['value']}"},
                timeout_s=self.settings.webhook_timeout_s,
            )
            if answer.status == 401 and attempt == 1:
                self.tokens.invalidate(server, token)
                continue
            if answer.status in (200, 201):
                return
            raise DeliveryError(f"HTTP {answer.status}")


def _fields(change: Change) -> dict[str, Any]:
    return {name: getattr(change, name) for name in Change.__dataclass_fields__}


def _label(status: str | None, grade: int | None) -> str:
    return f"{status} {grade}" if status and grade else (status or "none")


def _incomplete(entry: WatchEntry, keys: dict[str, str], polled_at: float) -> dict[str, Any]:
    """The worklist problem of an evaluation on incomplete data ("incomplete data: conditions (HTTP 403)")."""
    parts = [f"{key} ({reason})" if reason else key for key, reason in keys.items()]
    return {
        "problem": f"incomplete data: {', '.join(parts)}"[:160],
        "problem_since": entry.problem_since or polled_at,
    }


def _unavailable_reason(exc: PrefetchUnavailable) -> str:
    """'observations: HTTP 503' -> the reason part only (no key list in it is PHI, but keep it short)."""
    detail = exc.message.split(": ", 1)[-1]
    return detail[:120]


def _ferritin_series(result: EvaluationResult, infusion: float) -> str:
    """The latest ferritin values (canonical unit, ng/mL) from three days before the infusion on, as
    [[epoch seconds, value], ...]: numbers and times only."""
    start = infusion - 3 * 86400
    series = [
        (round(lab.time.timestamp()), round(lab.value, 2))
        for lab in result.labs.get("ferritin", ())
        if lab.time.timestamp() >= start
    ]
    return orjson.dumps(series[-FERRITIN_POINTS:]).decode()


def describe(entry: WatchEntry) -> dict[str, Any]:
    """The API view of one watched patient (GET /watch/api/patients)."""
    return {
        "patientId": entry.patient_id,
        "fhirServer": entry.fhir_server,
        "status": entry.status,
        "grade": entry.grade,
        "dayPostInfusion": entry.day_post_infusion,
        "lastEvaluated": iso(entry.last_evaluated),
        "lastChange": iso(entry.last_change),
        "infusion": iso(entry.infusion_at),
        "enrolledBy": entry.source,
        "problem": entry.problem,
        "subscription": entry.subscription_state,
        "ferritin": [{"time": iso(t), "value": v} for t, v in entry.ferritin],
    }
