"""The hook pipeline: resolve prefetch -> evaluate -> render cards -> (check the response).

No Flask here: everything the pipeline needs arrives in a HookEnvironment, so it runs without HTTP.
Cards come from the card renderer (cds_service.cards.render, owned by the card-rendering work); this
module only builds its CardContext and dispatches on the hook.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cds_service.cards.content import CardContent
from cds_service.cards.render import CardContext, render_order_hook, render_patient_view
from cds_service.engine import EvaluationResult, evaluate
from cds_service.engine.instruments.registry import IEC_HS
from cds_service.engine.knowledge import Knowledge
from cds_service.hooks.prefetch import FetchEnvironment, ResolvedPrefetch, resolve
from cds_service.hooks.repeat_alerts import RepeatAlerts
from cds_service.hooks.request import HookRequest
from cds_service.hooks.services import ServiceDefinition
from cds_service.hooks.validation import fast_validator, first_error, json_path, validator

log = logging.getLogger("cds_service.hooks.pipeline")
Timer = Callable[[str], AbstractContextManager[None]]


class InvalidResponse(Exception):
    """The rendered response does not conform to the cds-response schema (a bug: answered as 500)."""


@dataclass(frozen=True, slots=True)
class HookEnvironment:
    """Per-call inputs from the app: fetch settings, clock, deadline, URLs and the uuid factory."""

    fetch: FetchEnvironment
    at: datetime | None  # None: the engine's own "now" (it then also reports future-dated data)
    deadline: float  # time.monotonic() value by which prefetch must be resolved
    base_url: str
    smart_launch_url: str | None
    uuid_factory: Callable[[], str]
    knowledge: Knowledge  # the app's own: a site's mappings reach the engine and the cards
    cards: CardContent
    validate_response: bool = True
    # Called with every evaluation (the watch list enrols CAR-T patients from it); must not raise.
    observe: Callable[[HookRequest, EvaluationResult], None] | None = None
    repeat_alerts: RepeatAlerts | None = None  # one-line cards after "already aware" overrides


def run_hook(
    request: HookRequest, service: ServiceDefinition, env: HookEnvironment, timer: Timer
) -> tuple[dict[str, Any], ResolvedPrefetch]:
    """Answer one hook call: the CDS response body and how its prefetch was resolved."""
    result, resolved = evaluate_request(request, service, env, timer)
    if env.observe is not None:
        with timer("observe"):
            env.observe(request, result)
    with timer("render"):
        cards = render_cards(request, result, resolved.gaps, env)
    response: dict[str, Any] = {"cards": cards}
    if env.validate_response:
        with timer("check"):
            check_response(response)
    return response, resolved


def evaluate_request(
    request: HookRequest, service: ServiceDefinition, env: HookEnvironment, timer: Timer
) -> tuple[EvaluationResult, ResolvedPrefetch]:
    """Resolve the prefetch and evaluate: the evaluation behind the cards (and the preview's evidence view,
    which shows it in full)."""
    with timer("prefetch"):
        resolved = resolve(request, service, env.fetch, env.at or datetime.now(UTC), env.deadline)
    with timer("evaluate"):
        # draftOrders stay out of the engine input: an unsigned order is not a drug the patient received.
        result = evaluate(resolved.data, knowledge=env.knowledge, at=env.at)
    return result, resolved


def render_cards(
    request: HookRequest, result: EvaluationResult, gaps: tuple[str, ...], env: HookEnvironment
) -> list[dict[str, Any]]:
    """Dispatch to the card renderer for the request's hook (patient-view: with repeat-alert suppression)."""
    user = request.context.get("userId")
    encounter = request.context.get("encounterId")
    identity, acknowledged = _identity(request, result, env)
    context = CardContext(
        service_id=request.service_id,
        hook=request.hook,
        base_url=env.base_url,
        smart_launch_url=env.smart_launch_url,
        data_gaps=gaps,
        uuid_factory=env.uuid_factory,
        fhir_server=request.fhir_server,
        patient_id=request.patient_id,
        user_id=user if isinstance(user, str) else None,
        encounter_id=encounter if isinstance(encounter, str) else None,
        acknowledged=acknowledged,
    )
    if request.hook == "patient-view":
        cards = render_patient_view(result, context, content=env.cards, knowledge=env.knowledge)
        if identity is not None and env.repeat_alerts is not None:
            for card in cards:  # the uuid carries the identity: feedback names the card by its uuid only
                card["uuid"] = env.repeat_alerts.card_uuid(identity, str(card["uuid"]))
        return cards
    return render_order_hook(
        result, request.draft_orders, request.selections, context, content=env.cards, knowledge=env.knowledge
    )


def _identity(
    request: HookRequest, result: EvaluationResult, env: HookEnvironment
) -> tuple[str | None, bool]:
    """The card identity (keyed hash) of a met patient-view card and whether it is acknowledged now."""
    iec = IEC_HS.result(result.instruments)
    if env.repeat_alerts is None or request.hook != "patient-view" or iec.status != "met":
        return None, False
    identity = env.repeat_alerts.identity(request.patient_id, request.service_id, iec.status, iec.grade)
    return identity, env.repeat_alerts.acknowledged(identity, datetime.now(UTC))


def check_response(response: dict[str, Any]) -> None:
    """Raise InvalidResponse if `response` breaks the cds-response schema; logs paths, never card text."""
    if fast_validator("cds-response").is_valid(response):
        return
    problems = [
        f"{json_path(e.absolute_path) or '$'}: {e.validator}"
        for e in validator("cds-response").iter_errors(response)
    ] or [first_error("cds-response", response)[0]]
    log.error("response failed the cds-response schema", extra={"problems": problems[:20]})
    raise InvalidResponse("; ".join(problems[:5]))
