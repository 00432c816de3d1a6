"""Ultimo's JSON, both ways: request bodies out, results and errors in.

Pure functions, no I/O. Tolerant where the documentation is inconsistent
(reference/ultimo-api.md): keys are read case-insensitively at every level, the
misspelt `StartTimeIncludingPreperationTime` is accepted, an empty result may be an
empty list, a missing `collection` or `null`, ids may come as numbers, `type` may be a
string or a number. Strict where a silent mistake would hurt: a wrong-shaped answer
raises UltimoProtocolError rather than reading as "no reservations".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from syncd.core.model import NewReservation, Reservation, utc
from syncd.errors import UltimoProtocolError

CREATE = "REST_CreateReservation"
UPDATE = "REST_UpdateReservation"
CANCEL = "REST_CancelReservation"
GET = "REST_GetReservationsForSpace"
# Workflow name -> key in UltimoConfig.application_element_ids.
ELEMENT_KEYS = {CREATE: "create", UPDATE: "update", CANCEL: "cancel", GET: "get"}

# Status words that mean a row is not a live reservation (English and Dutch UIs).
_CANCELLED_WORDS = ("cancel", "geannuleerd", "annul", "storn", "withdrawn", "ingetrokken")


def ci_get(mapping: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    """The value under the first of `names` present in `mapping`, comparing keys without case."""
    if not isinstance(mapping, Mapping):
        return default
    return _pick(_folded(mapping), names, default)


def _folded(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """`mapping` with its keys case-folded (of keys equal but for case, the last wins)."""
    return {str(k).casefold(): v for k, v in mapping.items()}


def _pick(folded: Mapping[str, Any], names: tuple[str, ...], default: Any = None) -> Any:
    for name in names:
        key = name.casefold()
        if key in folded:
            return folded[key]
    return default


def ci_has(mapping: Mapping[str, Any], name: str) -> bool:
    return isinstance(mapping, Mapping) and any(str(k).casefold() == name.casefold() for k in mapping)


# --- times ------------------------------------------------------------------------------


def format_time(value: datetime, *, round_up: bool = False) -> str:
    """`value` in Ultimo's UTC input form `2018-08-20T15:17:59Z` (whole seconds; with
    `round_up`, a fraction of a second rounds up so a window's end is never cut short)."""
    moment = utc(value)
    if moment.microsecond:
        moment = moment.replace(microsecond=0)
        if round_up:
            moment += timedelta(seconds=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_local_time(value: datetime, zone: str) -> str:
    """`value` in Ultimo's other input form `2018-08-21 15:21:59`, local time in `zone`."""
    return utc(value).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


def parse_time(value: Any, zone: str, *, field: str = "time") -> datetime:
    """An aware UTC datetime from an Ultimo time string: with an offset or `Z`, with any
    number of fractional digits, or offset-less (read as local time in `zone`).
    Raises UltimoProtocolError for anything else."""
    if not isinstance(value, str) or not value.strip():
        raise UltimoProtocolError(f"Ultimo sent {field} {_short(value)}, not a date and time")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise UltimoProtocolError(f"Ultimo sent {field} {_short(value)}, not a date and time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(zone))
    return parsed.astimezone(UTC)


# --- requests ---------------------------------------------------------------------------


def create_body(new: NewReservation, applicant_field: str = "both") -> dict[str, str]:
    """The JSON body of REST_CreateReservation. The applicant goes under `ApplicantId`
    (the field list), `Applicant` (the example), or both, as configured."""
    body = {
        "ExternalId": new.external_id,
        "Description": new.description,
        "SpaceId": new.space_id,
        "StartTime": format_time(new.start),
        "EndTime": format_time(new.end),
    }
    if applicant_field in ("both", "ApplicantId"):
        body["ApplicantId"] = new.applicant_id
    if applicant_field in ("both", "Applicant"):
        body["Applicant"] = new.applicant_id
    return body


def update_body(ultimo_id: str, start: datetime, end: datetime) -> dict[str, str]:
    return {"UltimoId": str(ultimo_id), "StartTime": format_time(start), "EndTime": format_time(end)}


def cancel_body(ultimo_id: str) -> dict[str, str]:
    return {"UltimoId": str(ultimo_id)}


def get_body(space_id: str, start: datetime, end: datetime) -> dict[str, str]:
    return {"SpaceId": space_id, "From": format_time(start), "Till": format_time(end, round_up=True)}


# --- responses --------------------------------------------------------------------------


def _properties(payload: Any, workflow: str) -> Any:
    if not isinstance(payload, Mapping):
        raise UltimoProtocolError(f"Ultimo answered {workflow} with {type(payload).__name__}, not a JSON object")
    if not ci_has(payload, "properties"):
        raise UltimoProtocolError(f"Ultimo's answer to {workflow} has no 'properties'")
    return ci_get(payload, "properties")


def parse_id(value: Any, what: str = "UltimoId") -> str:
    """An Ultimo id as a string (a JSON number is turned into its digits)."""
    if isinstance(value, bool) or value is None:
        raise UltimoProtocolError(f"Ultimo sent {what} {_short(value)}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise UltimoProtocolError(f"Ultimo sent {what} {_short(value)}")


def parse_create(payload: Any) -> str:
    """The UltimoId from a REST_CreateReservation answer."""
    props = _properties(payload, CREATE)
    if not isinstance(props, Mapping) or not ci_has(props, "UltimoId"):
        raise UltimoProtocolError(f"Ultimo's answer to {CREATE} carries no UltimoId")
    return parse_id(ci_get(props, "UltimoId"))


def check_empty_ok(payload: Any, workflow: str) -> None:
    """Update and Cancel answer `{"properties": {}}`; anything else of that shape is fine too."""
    _properties(payload, workflow)


def parse_reservations(payload: Any, space_id: str, zone: str) -> tuple[list[Reservation], int]:
    """The live reservations in a REST_GetReservationsForSpace answer, and the number of
    rows the answer held (cancelled ones included: that is what a page cap counts).

    The documented answer is `{"properties": {"Output": {"collection": [...]}}}`. An empty
    room is read from that shape with the collection empty, null or left out (the forms
    the documentation leaves open). An answer without `properties` or `Output` (missing or
    null) says nothing about the room: UltimoProtocolError, never "no reservations"."""
    props = _properties(payload, GET)
    if not isinstance(props, Mapping):
        raise UltimoProtocolError(f"Ultimo's answer to {GET} has 'properties' {_kind(props)}, not an object")
    output = ci_get(props, "Output")
    if output is None:
        what = "null" if ci_has(props, "Output") else "missing"
        raise UltimoProtocolError(f"Ultimo's answer to {GET} has 'Output' {what}: no collection of reservations")
    if isinstance(output, list):   # tolerate a collection given directly as Output
        rows = output
    elif isinstance(output, Mapping):
        rows = ci_get(output, "collection")
    else:
        raise UltimoProtocolError(f"Ultimo's answer to {GET} has 'Output' of type {type(output).__name__}")
    if rows is None:
        return [], 0
    if not isinstance(rows, list):
        raise UltimoProtocolError(f"Ultimo's answer to {GET} has 'collection' of type {type(rows).__name__}")
    result = []
    for row in rows:
        reservation = parse_row(row, space_id, zone)
        if reservation is not None:
            result.append(reservation)
    return result, len(rows)


def _kind(value: Any) -> str:
    return "null" if value is None else f"of type {type(value).__name__}"


def parse_row(row: Any, space_id: str, zone: str) -> Reservation | None:
    """One row as a Reservation; None when its Status says it is cancelled."""
    if not isinstance(row, Mapping):
        raise UltimoProtocolError(f"Ultimo sent a reservation row of type {type(row).__name__}")
    folded = _folded(row)   # once per row, not once per field: a read parses thousands of rows

    def value(*names: str) -> Any:
        return _pick(folded, names)

    status = value("Status")
    status_text = None if status is None else str(status)
    if status_text and any(word in status_text.casefold() for word in _CANCELLED_WORDS):
        return None
    ultimo_id = parse_id(value("UltimoId"))
    start = parse_time(value("StartTime"), zone, field=f"StartTime of {ultimo_id}")
    end = parse_time(value("EndTime"), zone, field=f"EndTime of {ultimo_id}")
    prep = value("StartTimeIncludingPreparationTime", "StartTimeIncludingPreperationTime")
    cleanup = value("EndTimeIncludingCleanupTime", "EndTimeIncludingCleanUpTime")
    applicant = value("ApplicantId", "Applicant")
    name = value("ApplicantName")
    description = value("Description")
    return Reservation(
        ultimo_id=ultimo_id,
        space_id=str(value("SpaceId") or space_id),
        start=start,
        end=end,
        description="" if description is None else str(description),
        applicant_id=None if applicant in (None, "") else str(applicant),
        applicant_name=None if name in (None, "") else str(name),
        start_with_preparation=None if prep in (None, "") else parse_time(prep, zone, field="preparation time"),
        end_with_cleanup=None if cleanup in (None, "") else parse_time(cleanup, zone, field="cleanup time"),
        status=status_text,
    )


def parse_error(payload: Any) -> tuple[str | None, str]:
    """(code, message) from an Ultimo error body `{message, type, code}`; the code as a
    string whatever its JSON type; (None, "") when the body is not such an object."""
    if not isinstance(payload, Mapping):
        return None, ""
    code = ci_get(payload, "code")
    message = ci_get(payload, "message", "Message", default="")
    code_text = None if code is None or code == "" else str(code)
    if isinstance(code, float) and code.is_integer():
        code_text = str(int(code))
    return code_text, " ".join(str(message or "").split())


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
