"""The Ultimo sandbox's records and fixed rules: the workflow ids, request forms and messages
of the documented connector, the journal line (`Call`), spaces and reservations as kept,
and the small helpers that turn them into answers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from syncd.sandbox.httpbase import Response, json_response

WORKFLOWS = {
    "REST_CreateReservation": "0167a94a-5dae-4efe-bf13-029a47728b97",
    "REST_UpdateReservation": "3736d834-fa5e-4edc-9abd-f38962ff8afd",
    "REST_CancelReservation": "5d5a10ee-7b14-4dd4-8683-33822ea56f12",
    "REST_GetReservationsForSpace": "860ea091-4d76-47d9-a733-c3bb18440dde",
}
_SHORT = {"create": "REST_CreateReservation", "update": "REST_UpdateReservation",
          "cancel": "REST_CancelReservation", "get": "REST_GetReservationsForSpace"}
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_PATH = re.compile(r"^/api/v1/action/(?P<workflow>[^/]+)/?$", re.IGNORECASE)
_LOCAL_FORM = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_UTC_FORM = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
FAULT_KINDS = ("http500", "http503", "slow", "html", "drop", "drop_after", "http503_after", "garbage", "answer",
               "http429", "http413", "hold", "http500_after", "answer_after")
# Faults whose request is carried out before the answer goes wrong.
PROCESSED_FAULTS = ("slow", "drop_after", "http503_after", "hold", "http500_after", "answer_after")

NOT_AVAILABLE = "Room reservation cannot be requested or processed.\r\nCause: meeting room is not available."
IN_PAST_CREATE = "Room reservation cannot be requested or processed.\r\nCause: Room reservation is in the past."
IN_PAST_MODIFY = "Room reservation cannot be modified.\r\nCause: Room reservation is in the past."


class Call(NamedTuple):
    """One journal line: when, which workflow, the JSON body (None if not JSON), the status
    answered (0 when the connection was dropped)."""

    time: datetime
    workflow: str
    request: Any
    status: int


class SandboxRejected(Exception):
    """A person helper was refused by the same rules as the API (`code` as in Ultimo)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class _Space:
    space_id: str
    preparation: timedelta
    cleanup: timedelta


@dataclass(frozen=True)
class _Reservation:
    ultimo_id: str
    space_id: str
    start: datetime
    end: datetime
    description: str
    applicant_id: str
    external_id: str | None
    via: str                  # "api" or "ultimo" (a person)
    status: str = "Processed"

    @property
    def active(self) -> bool:
        return self.status != "Cancelled"


def _internal_error(element: str) -> Response:
    if _GUID.match(element):
        exception, detail = "System.InvalidOperationException", "No application element with this id for the workflow."
    else:
        exception = "System.FormatException"
        detail = "Guid should contain 32 digits with 4 dashes (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)."
    return json_response(500, {
        "message": "An error has occurred.",
        "exceptionType": exception,
        "detailMessage": detail,
        "type": "1",
        "stackTrace": "   at System.Guid.GuidResult.SetFailure(...)",
        "code": "InternalServerError",
    })


def _text(body: dict[str, Any], *names: str, required: bool = True) -> str:
    for name in names:
        value = body.get(name)
        if value is not None and str(value) != "":
            return str(value)
    if required:
        raise SandboxRejected("9001", f"Field '{names[0]}' is required.")
    return ""


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("the sandbox takes aware datetimes only")
    return value.astimezone(UTC)


def _as_dict(res: _Reservation) -> dict[str, Any]:
    return {
        "ultimo_id": res.ultimo_id, "space_id": res.space_id, "start": res.start, "end": res.end,
        "description": res.description, "applicant_id": res.applicant_id,
        "external_id": res.external_id, "via": res.via,
    }
