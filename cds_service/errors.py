"""Exceptions raised by the service, mapped to HTTP statuses at the API boundary.

* CDSServiceError             -- base; carries an HTTP status, an OperationOutcome issue code and the JSON
  |                              path(s) of the offending field(s) (OperationOutcome.issue.expression)
  + InvalidRequest (400)      -- malformed JSON, missing fields, wrong types, hook not served by the id
  + Unauthorized (401)        -- client authentication failed (the body never says why)
  + Forbidden (403)           -- authenticated, but not allowed (a FHIR server not on the allowlist)
  + NotFound (404)            -- unknown service id
  + PrefetchUnavailable (412) -- required data neither prefetched nor fetchable (names the prefetch keys)
  + UnsupportedMediaType (415)
* ConfigurationError          -- an environment variable is invalid (start-up; `config check` exits 2)
* DataFileError               -- a file under mappings/ or cards/ is malformed (raised at start-up)
* InputError                  -- the engine was given something that is not FHIR (CLI exit 2)
"""

from __future__ import annotations

from collections.abc import Sequence


class CDSServiceError(Exception):
    """Base for errors returned to a CDS client as an OperationOutcome."""

    status: int = 500
    issue_code: str = "exception"

    def __init__(self, message: str, *, expression: str | Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if expression is None:
            self.expressions: tuple[str, ...] = ()
        elif isinstance(expression, str):
            self.expressions = (expression,)
        else:
            self.expressions = tuple(expression)

    @property
    def expression(self) -> str | None:
        """The first JSON path named by the error, if any."""
        return self.expressions[0] if self.expressions else None


class InvalidRequest(CDSServiceError):
    """The request is not a valid CDS Hooks call (400)."""

    status = 400
    issue_code = "invalid"


class Unauthorized(CDSServiceError):
    """The client could not be authenticated (401). The message is logged, never sent to the client."""

    status = 401
    issue_code = "login"


class UnsupportedMediaType(CDSServiceError):
    """The body is not JSON (415)."""

    status = 415
    issue_code = "not-supported"


class NotFound(CDSServiceError):
    """No such CDS service (404)."""

    status = 404
    issue_code = "not-found"


class PrefetchUnavailable(CDSServiceError):
    """Required data was neither prefetched nor fetchable from the FHIR server (412).

    `keys` are the prefetch keys that could not be satisfied; each becomes `prefetch.<key>` in the
    OperationOutcome's issue.expression.
    """

    status = 412
    issue_code = "incomplete"

    def __init__(self, message: str, *, keys: Sequence[str]) -> None:
        super().__init__(message, expression=[f"prefetch.{key}" for key in keys])
        self.keys = tuple(keys)


class ConfigurationError(Exception):
    """An environment variable (or a test override) has an invalid value; names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class DataFileError(Exception):
    """A data file under mappings/ or cards/ failed validation; names the file and the field."""

    def __init__(self, path: str, field: str, problem: str) -> None:
        super().__init__(f"{path}: {field}: {problem}")
        self.path = path
        self.field = field
        self.problem = problem


class InputError(Exception):
    """The engine input is not usable FHIR (not JSON, not a Bundle or resource)."""


class Forbidden(CDSServiceError):
    """The caller is authenticated but may not do this (403), e.g. enrol a patient on a FHIR server that is
    not on its allowlist."""

    status = 403
    issue_code = "forbidden"
