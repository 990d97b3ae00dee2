"""Exceptions raised by the service, mapped to HTTP statuses at the API boundary.

* CDSServiceError            -- base; carries an HTTP status and an OperationOutcome issue code
  + InvalidRequest (400)     -- malformed JSON, missing fields, hook not served by the id
  + UnsupportedMediaType (415)
  + NotFound (404)           -- unknown service id
  + PrefetchUnavailable (412) -- required data neither prefetched nor fetchable
* DataFileError              -- a file under mappings/ or cards/ is malformed (raised at start-up)
* InputError                 -- the engine was given something that is not FHIR (CLI exit 2)
"""

from __future__ import annotations


class CDSServiceError(Exception):
    """Base for errors returned to a CDS client as an OperationOutcome."""

    status: int = 500
    issue_code: str = "exception"

    def __init__(self, message: str, *, expression: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression


class InvalidRequest(CDSServiceError):
    """The request is not a valid CDS Hooks call (400)."""

    status = 400
    issue_code = "invalid"


class UnsupportedMediaType(CDSServiceError):
    """The body is not JSON (415)."""

    status = 415
    issue_code = "not-supported"


class NotFound(CDSServiceError):
    """No such CDS service (404)."""

    status = 404
    issue_code = "not-found"


class PrefetchUnavailable(CDSServiceError):
    """Required data was neither prefetched nor fetchable from the FHIR server (412)."""

    status = 412
    issue_code = "incomplete"


class DataFileError(Exception):
    """A data file under mappings/ or cards/ failed validation; names the file and the field."""

    def __init__(self, path: str, field: str, problem: str) -> None:
        super().__init__(f"{path}: {field}: {problem}")
        self.path = path
        self.field = field
        self.problem = problem


class InputError(Exception):
    """The engine input is not usable FHIR (not JSON, not a Bundle or resource)."""
