"""Bounds a UCUM unit string must keep before it is parsed or any arithmetic is done with it.

Unit strings come from request data (valueQuantity.code, referenceRange units). The UCUM grammar lets a
short string demand unbounded work: ``10*10000000.ng/mL`` asks pint for 10^10,000,000, which froze a worker
for seconds. Real laboratory units are short and use small powers (``10*9/L``, ``m2``, ``s-1``), so these
bounds refuse nothing a lab sends:

* at most ``MAX_UNIT_CHARS`` characters, printable ASCII without spaces;
* a power of ten (``10*n``, ``10^n``) with ``|n| <= MAX_TEN_POWER``;
* an exponent on a unit (``m2``, ``s-1``, ``[in_i]3``) with ``|n| <= MAX_EXPONENT``;
* any other number (a factor such as ``100``) of at most ``MAX_FACTOR_DIGITS`` digits;
* parentheses nested at most ``MAX_NESTING`` deep.

Text in curly braces is a UCUM annotation (no meaning, no arithmetic); text in square brackets is an atom
name (``[in_i'H2O]``), so digits there are neither exponents nor factors.
"""

from __future__ import annotations

import re

MAX_UNIT_CHARS = 64
MAX_TEN_POWER = 30
MAX_EXPONENT = 9
MAX_FACTOR_DIGITS = 9
MAX_NESTING = 4
QUOTE_CHARS = 40  # how much of a refused string a data-quality message quotes

_PRINTABLE = re.compile(r"[!-~]*")  # ASCII 33..126: no spaces, no control or non-ASCII characters
_ANNOTATION = re.compile(r"\{[^{}]*\}")
_ATOM = re.compile(r"\[[^\[\]]*\]")
_TEN_POWER = re.compile(r"(?<![0-9])10[*^]([+-]?[0-9]+)")
_NUMBER = re.compile(r"([+-]?)([0-9]+)")


class UnitBoundError(ValueError):
    """The unit string is outside the bounds above (its message quotes at most QUOTE_CHARS of it)."""


def quoted(unit: str) -> str:
    """The unit in quotes for a message, cut to QUOTE_CHARS characters."""
    shown = unit if len(unit) <= QUOTE_CHARS else unit[:QUOTE_CHARS] + "..."
    return f"'{shown}'"


def check_bounds(unit: str) -> None:
    """Raise UnitBoundError if `unit` breaks a bound; cheap (linear in the string, never parses it)."""
    if len(unit) > MAX_UNIT_CHARS:
        raise UnitBoundError(f"{quoted(unit)} is longer than {MAX_UNIT_CHARS} characters")
    if not _PRINTABLE.fullmatch(unit):
        raise UnitBoundError(f"{quoted(unit)} has characters a UCUM unit cannot have")
    bare = _ATOM.sub("X", _ANNOTATION.sub("", unit))
    for match in _TEN_POWER.finditer(bare):
        if abs(int(match.group(1))) > MAX_TEN_POWER:
            raise UnitBoundError(f"{quoted(unit)} has a power of ten beyond 10^{MAX_TEN_POWER}")
    _check_numbers(unit, _TEN_POWER.sub("X", bare))
    _check_nesting(unit, bare)


def _check_numbers(unit: str, bare: str) -> None:
    for match in _NUMBER.finditer(bare):
        digits = match.group(2)
        before = bare[match.start() - 1] if match.start() > 0 else ""
        after_unit = before.isalpha() or (before != "" and before in "])")
        if after_unit and int(digits) > MAX_EXPONENT:
            raise UnitBoundError(f"{quoted(unit)} has an exponent beyond {MAX_EXPONENT}")
        if len(digits.lstrip("0")) > MAX_FACTOR_DIGITS:
            raise UnitBoundError(f"{quoted(unit)} has a number of more than {MAX_FACTOR_DIGITS} digits")


def _check_nesting(unit: str, bare: str) -> None:
    depth = 0
    for char in bare:
        depth += (char == "(") - (char == ")")
        if depth > MAX_NESTING:
            raise UnitBoundError(f"{quoted(unit)} nests parentheses more than {MAX_NESTING} deep")
