"""CDS Hooks 2.0 service for IEC-HS screening after CAR-T therapy."""

from __future__ import annotations

__version__ = "0.1.0"
