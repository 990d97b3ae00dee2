"""``appContext`` from the token response: what the card asked the dashboard to show.

The service's cards send ``{"at": <evaluation instant>, "patient": <id>, "view": "iec-hs"}`` as a JSON
string (cds_service/cards/common.py); the EHR hands it back verbatim in the token response. Anything that
does not parse is ignored with a note shown on the page, never an error: the dashboard still works.

* ``at``: the instant the card was evaluated at, so the dashboard shows the same picture as the card.
  Instants in the future are ignored (the engine would otherwise treat future data as current).
* ``view``: which part of the page comes first (:data:`VIEWS`).
* ``patient``: must equal the token's patient; otherwise the whole appContext is ignored (it was meant for
  another patient).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

VIEWS = {
    "iec-hs": "IEC-HS summary first",
    "trends": "Trend charts first",
    "criteria": "Criteria tables first",
}
FUTURE_TOLERANCE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class AppContext:
    """The parsed appContext; `notes` explain anything that was ignored."""

    present: bool = False
    at: datetime | None = None
    view: str | None = None
    patient: str | None = None
    notes: tuple[str, ...] = ()


def parse_app_context(raw: Any, now: datetime | None = None) -> AppContext:
    """Parse a string (JSON) or object appContext; never raises."""
    if raw is None:
        return AppContext()
    document: Any = raw
    if isinstance(raw, str):
        try:
            document = json.loads(raw)
        except ValueError:
            return AppContext(True, notes=("The launch context (appContext) is not JSON and was ignored.",))
    if not isinstance(document, dict):
        return AppContext(True, notes=("The launch context (appContext) is not an object and was ignored.",))
    notes: list[str] = []
    at = _instant(document.get("at"), now or datetime.now(UTC), notes)
    view = document.get("view")
    if view is not None and view not in VIEWS:
        notes.append("The requested view is not known; the default view is shown.")
        view = None
    patient = document.get("patient")
    return AppContext(
        present=True,
        at=at,
        view=view,
        patient=patient if isinstance(patient, str) and patient else None,
        notes=tuple(notes),
    )


def _instant(value: Any, now: datetime, notes: list[str]) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        notes.append("The evaluation instant in the launch context is not a date-time; 'now' is used.")
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # the service always sends UTC; a bare time is read as UTC too
    if parsed > now + FUTURE_TOLERANCE:
        notes.append("The evaluation instant in the launch context is in the future; 'now' is used.")
        return None
    return parsed.astimezone(UTC)


def for_patient(context: AppContext, patient: str | None) -> AppContext:
    """`context` if it belongs to `patient` (or names none); otherwise an ignored context with a note."""
    if context.patient is None or context.patient == patient:
        return context
    note = "The launch context named a different patient than the EHR session and was ignored."
    return AppContext(present=True, notes=(note,))
