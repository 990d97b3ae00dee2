"""Panels (e.g. blood pressure): an Observation whose own code is unmapped and whose mapped components are
each one value. Components of other analytes are not read."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from msgspec import UNSET, Raw, UnsetType

from cds_service.engine.model import LabValue
from cds_service.engine.observations.concepts import Mapped
from cds_service.engine.observations.lookups import Lookups
from cds_service.engine.observations.values import ValueReader
from cds_service.engine.typed import TypedObservation


def typed_panel(
    lookups: Lookups,
    values: ValueReader,
    observation: TypedObservation,
    code: Raw,
    key: str,
    time: datetime,
    issued: datetime | None,
    found: list[LabValue],
) -> bool:
    """Append a typed panel's values to `found`; False (nothing appended) when the general path must
    decide: the panel has its own value or a mapped code, or a component is not the plain shape."""
    own = lookups.concept(code)
    if observation.valueQuantity is not UNSET or not own.plain or own.mapped is not None:
        return False
    labs: list[LabValue] = []
    for index, component in enumerate(observation.component or ()):
        concept = component.code
        if isinstance(concept, UnsetType):
            continue
        meaning = lookups.concept(concept)
        if not meaning.plain:
            return False
        mapped = meaning.mapped
        if mapped is None:
            continue
        lab = values.typed(
            f"{key}#component[{index}]",
            mapped[1],
            component.valueQuantity,
            component.referenceRange,
            time,
            issued,
        )
        if lab is None or lab.analyte != mapped[0]:
            return False
        labs.append(lab)
    found.extend(labs)
    return True


def mapped_components(lookups: Lookups, components: list[Any]) -> list[tuple[int, dict[str, Any], Mapped]]:
    """The general path: (index, component, mapping) of each component whose code names an analyte."""
    mapped: list[tuple[int, dict[str, Any], Mapped]] = []
    for index, component in enumerate(components):
        if isinstance(component, dict):
            hit = lookups.analyte(component.get("code"))
            if hit is not None:
                mapped.append((index, component, hit))
    return mapped
