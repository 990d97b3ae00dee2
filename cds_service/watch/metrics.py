"""Prometheus metrics of the watch list. Labels come from closed sets defined here: never a patient id, a
FHIR URL or free text.

Counters and histograms are per process (gunicorn workers are aggregated by the multiprocess mode; a
``cds-service watch --once`` process exits before any scrape, so its work shows in the gauges). The
gauges are read from the database at scrape time (:class:`WatchCollector`), so every instance reports the
same, complete numbers: aggregate them with ``max``, not ``sum``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cds_service.watch.store import WatchStore

EVALUATIONS = Counter(
    "cds_watch_evaluations",
    "Watched patients handled, by outcome: evaluated (the engine ran on fresh data), unchanged (a poll found "
    "nothing new), failed (a FHIR or token problem), left (the risk window ended or the therapy is gone).",
    ["outcome"],
)
RESULT_LAG = Histogram(
    "cds_watch_result_lag_seconds",
    "Time from a new Observation's meta.lastUpdated (the FHIR server's clock) to the end of the evaluation "
    "that used it, by how it was noticed (poll, subscription).",
    ["noticed_by"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200),
)
NOTIFICATIONS = Counter(
    "cds_watch_notifications",
    "Notification delivery attempts by channel (webhook, fhir) and outcome (sent, failed: will be retried, "
    "gave-up: no more attempts).",
    ["channel", "outcome"],
)
PROBLEMS = Counter(
    "cds_watch_problems",
    "Problems met while watching a patient, by kind (token, timeout, connection, http-401, http-403, "
    "http-5xx, not-found, incomplete, other).",
    ["kind"],
)
SUBSCRIPTION_NOTIFICATIONS = Counter(
    "cds_watch_subscription_notifications",
    "Rest-hook Subscription notifications received, by outcome (accepted, handshake, refused).",
    ["outcome"],
)
POLL_DURATION = Histogram(
    "cds_watch_patient_seconds",
    "Time to handle one claimed patient (poll, and the fetch and evaluation when there is new data).",
    ["outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


def problem_kind(reason: str) -> str:
    """A closed label value for a problem reason."""
    if reason.startswith("token") or reason.startswith("discovery"):
        return "token"
    for kind in ("timeout", "connection", "not-found", "incomplete"):
        if kind.replace("-", " ") in reason:
            return kind
    if "HTTP 401" in reason:
        return "http-401"
    if "HTTP 403" in reason:
        return "http-403"
    if "HTTP 5" in reason:
        return "http-5xx"
    return "other"


class WatchCollector(Collector):
    """Gauges read from the watch tables at scrape time."""

    def __init__(self, store: WatchStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts = self.store.counts()
        except Exception:  # a database outage must not break /metrics; /readyz reports it
            return
        patients = GaugeMetricFamily(
            "cds_watch_patients",
            "Enrolled (watched) patients by IEC-HS status (none: not yet evaluated).",
            labels=["status"],
        )
        for status, count in sorted(counts["patients"].items()):
            patients.add_metric([status], count)
        yield patients
        yield GaugeMetricFamily(
            "cds_watch_patients_with_problem",
            "Watched patients whose last poll or evaluation failed (shown on the worklist).",
            value=counts["problems"],
        )
        yield GaugeMetricFamily(
            "cds_watch_evaluations_stored",
            "Evaluations recorded in the database by every process so far (patients still stored).",
            value=counts["evaluations"],
        )
        outbox = GaugeMetricFamily(
            "cds_watch_outbox",
            "Notifications in the outbox by channel and state (pending, sent, failed).",
            labels=["channel", "state"],
        )
        for (channel, state), count in sorted(counts["outbox"].items()):
            outbox.add_metric([channel, state], count)
        yield outbox
