"""Card template fields: named placeholders, filled or refused (never left blank)."""

from __future__ import annotations

import pytest

from cds_service.cards.templating import TemplateError, fill, placeholders


def test_fill_replaces_every_placeholder() -> None:
    assert fill("Day +{day} after {product}", {"day": "7", "product": "axi-cel"}) == "Day +7 after axi-cel"
    assert fill("no placeholders", {}) == "no placeholders"


def test_a_missing_value_is_an_error_naming_it() -> None:
    with pytest.raises(TemplateError, match=r"\['product'\]"):
        fill("Day +{day} after {product}", {"day": "7"})
    # asked again (the parsed field is remembered): still refused
    with pytest.raises(TemplateError, match=r"\['product'\]"):
        fill("Day +{day} after {product}", {"day": "7"})


@pytest.mark.parametrize("text", ["{day", "{day:>3}", "{items[0]}", "{day!r}"])
def test_only_bare_names_are_placeholders(text: str) -> None:
    with pytest.raises(TemplateError):
        placeholders(text)


def test_placeholders_is_a_fresh_set_each_time() -> None:
    names = placeholders("{a} and {b}")
    assert names == {"a", "b"}
    names.add("c")  # the caller's copy: the remembered parse is unchanged
    assert placeholders("{a} and {b}") == {"a", "b"}
