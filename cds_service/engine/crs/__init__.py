"""The cytokine release syndrome course, from coded Conditions, documented grades and raw data.

``crs_course(CrsInputs) -> CrsCourse``: the episodes as known at the evaluation instant, merged from every
source with their provenance, and a status (none, unknown, active, resolving, resolved).
"""

from __future__ import annotations

from cds_service.engine.crs.course import CrsCourse, crs_course
from cds_service.engine.crs.inputs import CrsInputs

__all__ = ["CrsCourse", "CrsInputs", "crs_course"]
