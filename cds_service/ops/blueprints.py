"""The operability blueprints, in registration order (see the cds_service.ops package docstring)."""

from __future__ import annotations

from flask import Blueprint

from cds_service.ops.routes import bp as ops_bp
from cds_service.preview import bp as preview_bp
from cds_service.web.health import bp as health_bp

BLUEPRINTS: tuple[Blueprint, ...] = (health_bp, ops_bp, preview_bp)
