"""The card preview page: send fixture scenarios (or pasted requests/Bundles) through the real service
endpoint and see the cards as an EHR sidebar shows them. See cds_service.preview.views and
docs/operations.md ("Card preview page")."""

from __future__ import annotations

from cds_service.preview.views import bp

__all__ = ["bp"]
