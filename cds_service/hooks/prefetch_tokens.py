"""Prefetch template token expansion (CDS Hooks 2.0 grammar, plus the 3.0-ballot `today() +/- N days`).

Tokens are `{{...}}` and contain only:

* `context.<field>` -- a root-level context field with a primitive value (STU2 "Prefetch Token: Yes");
* a user identifier: `userPractitionerId`, `userPractitionerRoleId`, `userPatientId`, `userRelatedPersonId`,
  the id part of `context.userId` when its type prefix matches (`Practitioner/abc` -> `abc`);
* `today()`, `today() - 90 days`, `today() + 1 day` (3.0 ballot; tolerated because the CDS Hooks Sandbox
  expands it; the date is the UTC date of the evaluation instant).

FHIRPath traversal (`context.draftOrders.entry...`) and `%prior` variables are not supported and rejected.
Expanded values are percent-encoded (except `/`, so `{{context.userId}}` stays a relative reference), and
`.`/`..` path segments are refused so a context value can never move a query to another path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

TOKEN = re.compile(r"\{\{(.*?)\}\}")
CONTEXT_FIELD = re.compile(r"context\.([A-Za-z][A-Za-z0-9_]*)")
TODAY = re.compile(r"today\(\)(?:\s*([+-])\s*(\d{1,5})\s*days?)?")
USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


class TokenError(ValueError):
    """A template uses a token outside the supported grammar (a bug in the service definitions)."""


class MissingTokenValue(LookupError):
    """The request's context has no usable value for a token (the key cannot be fetched)."""


def tokens(template: str) -> list[str]:
    """The stripped contents of every `{{...}}` token, in order."""
    return [match.strip() for match in TOKEN.findall(template)]


def check_template(template: str) -> None:
    """Raise TokenError if any token of `template` is outside the grammar."""
    if template.count("{{") != template.count("}}"):
        raise TokenError(f"unbalanced braces in prefetch template {template[:60]!r}")
    for token in tokens(template):
        if not (CONTEXT_FIELD.fullmatch(token) or token in USER_TOKENS or TODAY.fullmatch(token)):
            raise TokenError(f"unsupported prefetch token {{{{{token}}}}}")


def expand(template: str, context: Mapping[str, Any], today: date) -> str:
    """Replace every token; raises TokenError (bad grammar) or MissingTokenValue (no value in context)."""
    check_template(template)
    return TOKEN.sub(lambda match: _value(match.group(1).strip(), context, today), template)


def today_of(at: datetime) -> date:
    """The date `today()` stands for: the UTC calendar date of the evaluation instant."""
    return at.date() if at.tzinfo is None else at.astimezone(UTC).date()


def _value(token: str, context: Mapping[str, Any], today: date) -> str:
    if match := TODAY.fullmatch(token):
        sign, days = match.group(1), int(match.group(2) or 0)
        return (today + timedelta(days=-days if sign == "-" else days)).isoformat()
    if token in USER_TOKENS:
        return _encode(_user_id(token, context), token)
    field = CONTEXT_FIELD.fullmatch(token)
    assert field is not None  # check_template accepted it
    value = context.get(field.group(1))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float) and str(value) != "":
        return _encode(str(value), token)
    raise MissingTokenValue(f"context has no primitive value for {{{{{token}}}}}")


def _user_id(token: str, context: Mapping[str, Any]) -> str:
    user = context.get("userId")
    prefix = f"{USER_TOKENS[token]}/"
    if isinstance(user, str) and user.startswith(prefix) and len(user) > len(prefix):
        return user[len(prefix) :]
    raise MissingTokenValue(f"context.userId is not a {USER_TOKENS[token]} reference for {{{{{token}}}}}")


def _encode(value: str, token: str) -> str:
    if any(segment in {".", ".."} for segment in value.split("/")):
        raise MissingTokenValue(f"value of {{{{{token}}}}} is not a FHIR id or reference")
    return quote(value, safe="/")
