"""The Flask application factory.

``create_app(test_config)`` validates settings and every mappings/ file (a bad file fails here, at start),
builds the service registry, opens the feedback store (creating its tables), builds the watch list when
CDS_WATCH is on (cds_service.watch), installs request ids, JSON logging, CORS and OperationOutcome error
handlers, then registers the blueprints of ``BLUEPRINTS`` (and the watch list's).

``test_config`` keys that are settings variables (``CDS_DEV_MODE``, ``DATABASE_URL``, ...; see
cds_service.config) override the environment and are validated the same way; ``SETTINGS`` may pass a
ready ``Settings``; ``MAPPINGS_DIR`` and ``CARDS_DIR`` point at another mappings / cards directory (the
one knowledge base and card content every path of the app then uses); every other key goes to
``app.config``. Injection points in ``app.config``:

=====================  ===================================================================================
CLIENT_AUTH            ``(request, expected_aud) -> ClientIdentity`` or raise Unauthorized (security.py)
FHIR_SERVER_POLICY     ``(fhir_server_url) -> bool`` (security.py)
UUID_FACTORY           ``() -> str`` for card and suggestion uuids (default: random uuid4)
HTTP_SESSION           the ``requests.Session`` used for FHIR fallback queries (pooled, trust_env off)
CLOCK                  ``() -> datetime`` evaluation instant; None (default) lets the engine use now
VALIDATE_RESPONSES     check every hook response against the cds-response schema (default True)
JWKS_SESSION           the ``requests.Session`` for client JWKS fetches (test_config only; read at start)
WATCH_CLOCK            ``() -> datetime``: the watch list's evaluation instant (tests, replays); None: now
WATCH_REFRESH_S        seconds between the worklist page's own reloads (default 60)
=====================  ===================================================================================

Client authentication (cds_service.auth): with trusted clients configured, CLIENT_AUTH verifies client JWTs
and FHIR_SERVER_POLICY is the client's own allowlist (in development mode too). ``create_app()`` from the
environment (a real server start) refuses to build a production app without trusted clients; an app built
from a ``test_config`` without them fails closed instead (every call 401).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
from flask import Blueprint, Flask
from requests.adapters import HTTPAdapter

from cds_service import watch
from cds_service.auth import auth_defaults
from cds_service.cards.content import CardContent, load_card_content
from cds_service.config import ENV_VARIABLES, Settings
from cds_service.engine import evaluate
from cds_service.engine.knowledge import Knowledge, load_knowledge
from cds_service.hooks import typed_request, validation
from cds_service.hooks.api import bp as cds_blueprint
from cds_service.hooks.feedback import FeedbackStore
from cds_service.hooks.repeat_alerts import RepeatAlerts, secret_from
from cds_service.hooks.services import build_registry
from cds_service.ops.blueprints import BLUEPRINTS as ops_blueprints
from cds_service.smart import bp as smart_blueprint
from cds_service.watch import views as watch_views
from cds_service.web import bench_floor, cors, observability, outcome, ratelimit
from cds_service.web.json_provider import OrjsonProvider
from cds_service.web.security import allow_all, deny_all, dev_fhir_server_policy, https_only_policy
from cds_service.web.state import EXTENSION_KEY, ServiceState

log = logging.getLogger("cds_service.web.app")

# Blueprints served by the app, in registration order. Add new ones here. The operability blueprints
# (/healthz, /readyz, /metrics, /openapi.json, the preview page /) come after the CDS blueprint: the metrics
# hooks append to its before-request functions (cds_service.ops).
BLUEPRINTS: tuple[Blueprint, ...] = (cds_blueprint, *ops_blueprints, smart_blueprint)

DEV_MODE_WARNING = (
    "DEVELOPMENT MODE: client authentication is OFF, http FHIR servers on loopback are allowed and CORS "
    "allows any origin by default. Never use development mode with real patient data."
)
DEV_MODE_AUTH_WARNING = (
    "DEVELOPMENT MODE with trusted clients: client JWTs are verified, but http JWKS and FHIR servers on "
    "loopback are allowed and CORS allows any origin by default. Never use development mode with real "
    "patient data."
)


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build a fully configured app; raises ConfigurationError or DataFileError on bad configuration."""
    overrides = dict(test_config or {})
    settings = overrides.pop("SETTINGS", None) or Settings.from_env(_environment(overrides))
    mappings = overrides.pop("MAPPINGS_DIR", None)
    cards_dir = overrides.pop("CARDS_DIR", None)
    knowledge = load_knowledge(Path(mappings) if mappings is not None else None)
    cards = load_card_content(knowledge, Path(cards_dir) if cards_dir is not None else None)
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.config.update(_defaults(settings))
    app.config.update({k: v for k, v in overrides.items() if k not in ENV_VARIABLES})
    _warm_up(knowledge)
    store = FeedbackStore(settings.database_url)
    _install_client_auth(app, settings, store, overrides, from_environment=test_config is None)
    registry = build_registry(knowledge)
    app.extensions[EXTENSION_KEY] = ServiceState(settings, knowledge, cards, registry, store)
    watch_list = watch.init_app(app, settings, knowledge, registry)
    _install_repeat_alerts(app, settings, store, cards)
    observability.init_app(app)
    ratelimit.init_app(app, settings)
    cors.init_app(app, settings.cors_origins)
    outcome.init_app(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    if watch_list is not None:
        app.register_blueprint(watch_views.bp)
    if settings.bench_floor:
        app.register_blueprint(bench_floor.bp)
    if settings.dev_mode:
        warning = DEV_MODE_AUTH_WARNING if settings.trusted_clients_configured else DEV_MODE_WARNING
        log.warning(warning, extra={"event": "dev-mode"})
    return app


def _install_repeat_alerts(app: Flask, settings: Settings, store: FeedbackStore, cards: CardContent) -> None:
    """Repeat-alert suppression (cds_service.hooks.repeat_alerts) in the feedback database."""
    if "REPEAT_ALERTS" in app.config:
        return
    secret = secret_from(app.config.get("REPEAT_ALERT_KEY"), dev_mode=settings.dev_mode)
    alerts = RepeatAlerts(store.engine, secret, cards.repeat_hours, cards.repeat_reasons) if secret else None
    app.config["REPEAT_ALERTS"] = alerts


def _install_client_auth(
    app: Flask,
    settings: Settings,
    store: FeedbackStore,
    overrides: Mapping[str, Any],
    *,
    from_environment: bool,
) -> None:
    """JWT verification and per-client FHIR allowlists when trusted clients are configured (the jti replay
    table lives in the feedback database, shared by all workers); injected overrides win."""
    defaults = auth_defaults(
        settings, store.engine, required=from_environment, jwks_session=overrides.get("JWKS_SESSION")
    )
    app.config.update({key: value for key, value in defaults.items() if key not in overrides})


def _warm_up(knowledge: Knowledge) -> None:
    """Fail at start on a broken schema or cards/ file, and pay one-time costs (unit registry, card
    content) before gunicorn forks, so no worker's first hook call is slow."""
    for schema in validation.SCHEMAS:
        validation.validator(schema)
        validation.fast_validator(schema)
    evaluate({"patient": None}, knowledge=knowledge)
    knowledge.units.prime()  # the unit registry and the canonical units, before any request's budget
    typed_request.decode(b"{}")  # builds the typed decoder


def _environment(overrides: Mapping[str, Any]) -> dict[str, str]:
    """The process environment with the settings variables of `overrides` applied (as strings)."""
    environ = dict(os.environ)
    for key in ENV_VARIABLES:
        if key in overrides:
            value = overrides[key]
            environ[key] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return environ


def _defaults(settings: Settings) -> dict[str, Any]:
    return {
        "SETTINGS": settings,
        "MAX_CONTENT_LENGTH": settings.max_request_bytes,
        "CLIENT_AUTH": allow_all if settings.dev_mode else deny_all,
        "FHIR_SERVER_POLICY": dev_fhir_server_policy if settings.dev_mode else https_only_policy,
        "UUID_FACTORY": lambda: str(uuid.uuid4()),
        "HTTP_SESSION": new_http_session(),
        "CLOCK": None,
        "VALIDATE_RESPONSES": True,
    }


def new_http_session(pool_size: int = 16) -> requests.Session:
    """A pooled session for FHIR calls. trust_env is off: no .netrc credentials or proxy settings leak in."""
    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
