"""CDS Hooks 2.0 service for IEC-HS screening after CAR-T therapy.

``create_app`` (the Flask application factory, cds_service.web.app) is imported lazily so that the engine and
the CLI do not pay for Flask, SQLAlchemy and requests at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "create_app"]

if TYPE_CHECKING:
    from cds_service.web.app import create_app


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from cds_service.web.app import create_app

        return create_app
    raise AttributeError(f"module 'cds_service' has no attribute {name!r}")
