"""The instrument registry: every published instrument the engine evaluates, in the order it is shown.

Everything that lists instruments (the evaluation, the JSON document and its schema, the CLI report, the
card's instrument lines, the dashboard panels, the data-file tests) iterates over REGISTRY. Adding an
instrument is one module (its ``evaluate`` and one-line ``summarize``), one criteria data file
``mappings/criteria/<id>.yaml`` (title, version, citation, thresholds), one result schema
``cds_service/schemas/instruments/<key>.schema.json``, one line below, and its tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from cds_service.engine.context import Context
from cds_service.engine.instruments import astct_crs, ferritin_organ, hlh2004, hscore, iec_hs
from cds_service.engine.knowledge import Knowledge
from cds_service.engine.model import InstrumentResult, Instruments

R = TypeVar("R", bound=InstrumentResult)


def _nothing(_result: object) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True, slots=True)
class Instrument(Generic[R]):
    """One registered instrument. Its title, version and citation come from its criteria data file."""

    id: str  # snake_case; the criteria file is mappings/criteria/<id>.yaml
    key: str  # camelCase; the key under `instruments` in the JSON document
    evaluate: Callable[[Context], R]
    summarize: Callable[[R], str]  # one line: CLI report, card, dashboard panel
    details: Callable[[R], tuple[str, ...]] = _nothing  # further report lines (grade basis, caveats)
    unverified: Callable[[R], bool] = lambda _result: False  # rests on UNVERIFIED items (text: data file)
    context_only: bool = (
        True  # an HLH criteria set shown as context (IEC-HS decides, the CRS grade frames it)
    )

    def doc(self, kb: Knowledge) -> dict[str, object]:
        return kb.criteria[self.id]

    def title(self, kb: Knowledge) -> str:
        return str(kb.criteria[self.id]["title"])

    def version(self, kb: Knowledge) -> str:
        return str(kb.criteria[self.id]["version"])

    def citation(self, kb: Knowledge) -> str:
        return str(kb.criteria[self.id]["citation"])

    def result(self, instruments: Instruments) -> R:
        """This instrument's result (evaluate_all stored it under this id, so the cast holds)."""
        return cast(R, instruments[self.id])

    def line(self, instruments: Instruments) -> str:
        return self.summarize(self.result(instruments))

    def detail_lines(self, instruments: Instruments) -> tuple[str, ...]:
        return self.details(self.result(instruments))

    def unverified_note(self, kb: Knowledge, instruments: Instruments) -> str | None:
        """What this result rests on that is UNVERIFIED (`unverified_note` of the data file), if anything."""
        if not self.unverified(self.result(instruments)):
            return None
        return str(kb.criteria[self.id]["unverified_note"])


IEC_HS = Instrument(
    "iec_hs",
    "iecHs",
    iec_hs.evaluate_iec_hs,
    iec_hs.summarize,
    iec_hs.details,
    iec_hs.unverified,
    context_only=False,
)
ASTCT_CRS = Instrument(
    "astct_crs",
    "astctCrs",
    astct_crs.evaluate_astct_crs,
    astct_crs.summarize,
    astct_crs.details,
    astct_crs.unverified,
    context_only=False,
)
HSCORE = Instrument("hscore", "hscore", hscore.evaluate_hscore, hscore.summarize, hscore.details)
HLH2004 = Instrument("hlh2004", "hlh2004", hlh2004.evaluate_hlh2004, hlh2004.summarize)
HLH94 = Instrument("hlh94", "hlh94", hlh2004.evaluate_hlh94, hlh2004.summarize, unverified=hlh2004.unverified)
CARTOX = Instrument(
    "cartox",
    "cartox",
    ferritin_organ.evaluate_cartox,
    ferritin_organ.summarize,
    unverified=ferritin_organ.unverified,
)
SHAH = Instrument(
    "shah",
    "shah",
    ferritin_organ.evaluate_shah,
    ferritin_organ.summarize,
    unverified=ferritin_organ.unverified,
)

# Any: each entry's result type differs; `result()` gives each one its own type back.
REGISTRY: tuple[Instrument[Any], ...] = (IEC_HS, ASTCT_CRS, HSCORE, HLH2004, HLH94, CARTOX, SHAH)


def by_id(instrument_id: str) -> Instrument[Any]:
    for instrument in REGISTRY:
        if instrument.id == instrument_id:
            return instrument
    raise KeyError(instrument_id)


def evaluate_all(ctx: Context) -> Instruments:
    """Every registered instrument at the context's instant, in registry order."""
    return Instruments({i.id: i.evaluate(ctx) for i in REGISTRY}, {i.id: i.key for i in REGISTRY})


def title_of(kb: Knowledge, key: str) -> str:
    """The title of the instrument with JSON key `key` (as in MissingData.needed_by)."""
    return next((i.title(kb) for i in REGISTRY if i.key == key), key)
