"""The per-app state built once by create_app: settings, knowledge, card content, service registry, feedback
store. Every request path reads its knowledge from here (never a module-level default), so a site's own
mappings and cards are used everywhere."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from cds_service.cards.content import CardContent
from cds_service.config import Settings
from cds_service.engine.knowledge import Knowledge
from cds_service.hooks.feedback import FeedbackStore
from cds_service.hooks.services import ServiceRegistry

EXTENSION_KEY = "cds_service"


@dataclass(frozen=True, slots=True)
class ServiceState:
    settings: Settings
    knowledge: Knowledge
    cards: CardContent  # built against `knowledge`
    registry: ServiceRegistry
    feedback: FeedbackStore


def get_state(app: Flask | None = None) -> ServiceState:
    """The state of `app` (default: the current app)."""
    state = (app or current_app).extensions[EXTENSION_KEY]
    assert isinstance(state, ServiceState)
    return state
