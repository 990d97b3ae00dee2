"""Resolve a service's prefetch keys: use what the client sent, fetch what is missing, report the gaps.

Each key is in one of four states (CDS Hooks 2.0 "Prefetch"):

===================  =====================================  ============================================
state                meaning                                action
===================  =====================================  ============================================
present              a resource or searchset Bundle         used as given (a Bundle with a `next` link is
                                                            completed from fhirServer when possible)
null                 the client had no data                 "no data"; never re-queried
OperationOutcome     the client's prefetch query failed     re-queried from fhirServer when possible
absent               the client did not (or could not)      queried from fhirServer when possible
===================  =====================================  ============================================

A key that is still unavailable is a *gap*: a required key raises PrefetchUnavailable (412, naming the keys);
any other is passed on to the cards as a data gap. Fallback queries run in parallel under one deadline.
Token expansion lives in prefetch_tokens (re-exported here).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from cds_service.errors import PrefetchUnavailable
from cds_service.hooks.fhir_client import FetchOutcome, FhirClient, FhirFetchError
from cds_service.hooks.prefetch_tokens import MissingTokenValue, expand, today_of
from cds_service.hooks.request import HookRequest
from cds_service.hooks.services import PrefetchTemplate, ServiceDefinition

__all__ = ["FetchEnvironment", "KeyState", "ResolvedPrefetch", "classify", "expand", "resolve"]


class KeyState(StrEnum):
    PRESENT = "present"
    NULL = "null"
    OPERATION_OUTCOME = "operation-outcome"
    ABSENT = "absent"


@dataclass(frozen=True, slots=True)
class FetchEnvironment:
    """What fallback queries may use: the shared session, the fhirServer policy, and the budgets."""

    session: requests.Session
    server_allowed: Callable[[str], bool]
    allow_anonymous: bool  # dev only: query a fhirServer sent without fhirAuthorization
    timeout_s: float | None  # cap per FHIR call; None: each call may use what is left before the deadline
    max_pages: int
    lookback_days: int


@dataclass(frozen=True, slots=True)
class ResolvedPrefetch:
    """The engine input (key -> resource/Bundle/None), the keys left incomplete, and where each came from."""

    data: dict[str, Any]
    gaps: tuple[str, ...]
    sources: dict[str, str] = field(default_factory=dict)


def classify(prefetch: Mapping[str, Any], key: str) -> KeyState:
    """The state of one prefetch key in the request."""
    if key not in prefetch:
        return KeyState.ABSENT
    value = prefetch[key]
    if value is None:
        return KeyState.NULL
    if isinstance(value, dict) and value.get("resourceType") == "OperationOutcome":
        return KeyState.OPERATION_OUTCOME
    return KeyState.PRESENT


def fallback_query(
    template: PrefetchTemplate, context: Mapping[str, Any], at: datetime, lookback_days: int
) -> str:
    """Expand a template for the service's own query; Observation searches get a date window."""
    query = expand(template.template, context, today_of(at))
    param = template.fallback_date_param
    if param and param not in parse_qs(urlsplit(query).query):
        start = today_of(at - timedelta(days=lookback_days))
        query += f"{'&' if '?' in query else '?'}{param}=ge{start.isoformat()}"
    return query


def make_client(request: HookRequest, env: FetchEnvironment) -> tuple[FhirClient | None, str]:
    """A client for the request's fhirServer, or None and the (loggable) reason it cannot be used."""
    if not request.fhir_server:
        return None, "no fhirServer in the request"
    if not env.server_allowed(request.fhir_server):
        return None, "fhirServer not allowed by policy"
    if not request.access_token and not env.allow_anonymous:
        return None, "no fhirAuthorization in the request"
    client = FhirClient(
        env.session,
        request.fhir_server,
        request.access_token,
        timeout_s=env.timeout_s,
        max_pages=env.max_pages,
        token_expires_at=request.token_expires_at,
    )
    return client, ""


def resolve(
    request: HookRequest, service: ServiceDefinition, env: FetchEnvironment, at: datetime, deadline: float
) -> ResolvedPrefetch:
    """Gather every prefetch key of `service`; raises PrefetchUnavailable if a required key is missing."""
    client, no_client_reason = make_client(request, env)
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    jobs: dict[str, Callable[[], FetchOutcome]] = {}
    unavailable: dict[str, str] = {}
    incomplete: set[str] = set()
    for template in service.prefetch:
        key, state = template.key, classify(request.prefetch, template.key)
        if state is not KeyState.ABSENT:
            # An OperationOutcome stays visible to the engine (as a data issue) unless a re-query replaces it.
            data[key] = request.prefetch[key]
            sources[key] = "prefetch" if state is KeyState.PRESENT else state.value
        if state is KeyState.PRESENT and _has_next(data[key]):
            if client is None:
                incomplete.add(key)  # the client paginated and the rest cannot be fetched
            else:
                jobs[key] = _bind(client.continue_bundle, data[key], deadline)
        elif state in (KeyState.ABSENT, KeyState.OPERATION_OUTCOME):
            job = _fallback_job(template, request, env, at, deadline, client)
            if isinstance(job, str):
                unavailable[key] = job or no_client_reason
            else:
                jobs[key] = job
    incomplete |= _run(jobs, deadline, data, sources, unavailable)
    _raise_if_required_missing(service, unavailable)
    gaps = tuple(t.key for t in service.prefetch if t.key in unavailable or t.key in incomplete)
    return ResolvedPrefetch(data, gaps, sources)


def _fallback_job(
    template: PrefetchTemplate,
    request: HookRequest,
    env: FetchEnvironment,
    at: datetime,
    deadline: float,
    client: FhirClient | None,
) -> Callable[[], FetchOutcome] | str:
    """The fetch for one key, or why there is none ("" when there is no usable client)."""
    try:
        query = fallback_query(template, request.context, at, env.lookback_days)
    except MissingTokenValue:
        return "template needs a context value the request does not have"
    return "" if client is None else _bind(client.get, query, deadline)


def _bind(
    function: Callable[[Any, float], FetchOutcome], arg: Any, deadline: float
) -> Callable[[], FetchOutcome]:
    return lambda: function(arg, deadline)


def _has_next(value: Any) -> bool:
    links = value.get("link") if isinstance(value, dict) and value.get("resourceType") == "Bundle" else None
    return isinstance(links, list) and any(
        isinstance(lk, dict) and lk.get("relation") == "next" for lk in links
    )


def _run(
    jobs: dict[str, Callable[[], FetchOutcome]],
    deadline: float,
    data: dict[str, Any],
    sources: dict[str, str],
    unavailable: dict[str, str],
) -> set[str]:
    """Run the fetches in parallel until the deadline; fill `data`, return keys whose data is incomplete."""
    incomplete: set[str] = set()
    if not jobs:
        return incomplete
    executor = ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="prefetch")
    try:
        futures = {key: executor.submit(job) for key, job in jobs.items()}
        wait(futures.values(), timeout=max(0.0, deadline - time.monotonic()))
        for key, future in futures.items():
            continuing = sources.get(key) == "prefetch"  # completing a paginated prefetch Bundle
            outcome, reason = _outcome(future)
            if outcome is None and continuing:
                incomplete.add(key)  # keep the pages the client sent
            elif outcome is None:
                unavailable[key] = reason
            else:
                data[key] = outcome.value
                sources[key] = "prefetch+fhir" if continuing else "fhir"
                if not outcome.complete:
                    incomplete.add(key)
    finally:
        # Calls still running end on their own: each is bounded by the same deadline.
        executor.shutdown(wait=False, cancel_futures=True)
    return incomplete


def _outcome(future: Future[FetchOutcome]) -> tuple[FetchOutcome | None, str]:
    if not future.done():
        return None, "deadline exceeded"
    try:
        return future.result(), ""
    except FhirFetchError as exc:
        return None, exc.reason


def _raise_if_required_missing(service: ServiceDefinition, unavailable: dict[str, str]) -> None:
    missing = [t.key for t in service.prefetch if t.required and t.key in unavailable]
    if missing:
        details = "; ".join(f"{key}: {unavailable[key]}" for key in missing)
        raise PrefetchUnavailable(
            f"required prefetch data unavailable (not prefetched and not fetchable): {details}", keys=missing
        )
