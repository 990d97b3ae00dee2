"""Errors of the SMART flow, shown to the user as an HTML page (never a stack trace).

Each error has an HTTP status, a stable short ``code`` (in the page as ``data-error-code``, for support and
tests), a title and a message meant for a clinician, and whether relaunching from the EHR fixes it.
"""

from __future__ import annotations

RELAUNCH_HINT = "Open the dashboard again from the patient's chart (or the card) in the EHR."


class SmartError(Exception):
    """A failure the user must see; the message is shown as text (escaped), so it must hold no secrets."""

    def __init__(self, status: int, code: str, title: str, message: str, *, relaunch: bool = True) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.title = title
        self.message = message
        self.relaunch = relaunch


def bad_launch(message: str) -> SmartError:
    return SmartError(400, "invalid-launch", "This launch link is not valid", message)


def session_missing() -> SmartError:
    return SmartError(
        401,
        "no-session",
        "No active dashboard session",
        "This browser has no active dashboard session (it expired, or the dashboard was not launched here).",
    )


def token_expired() -> SmartError:
    return SmartError(
        401,
        "token-expired",
        "Your authorization has expired",
        "The access granted by the EHR has expired or was revoked, so patient data can no longer be read.",
    )


def fhir_unavailable(reason: str) -> SmartError:
    return SmartError(
        502,
        "fhir-unavailable",
        "The patient record could not be read",
        f"The FHIR server did not answer as expected ({reason}). Try again in a moment.",
        relaunch=False,
    )
