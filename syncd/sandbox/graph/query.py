"""Reading a Graph request's OData query options and Prefer headers, for the Graph sandbox.

Only what calendar clients send is understood: ``$select``, ``$top``, ``$skip``, the filtered
``$expand`` of extended properties, and ``$filter`` by extended property value or iCalUId.
Anything else is refused with 400, as Graph refuses what it cannot parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..httpbase import Request

__all__ = ["BadQuery", "EventFilter", "parse_expand", "parse_filter", "parse_select", "prefer", "query_value", "top_of"]


class BadQuery(ValueError):
    """A query option the sandbox (like Graph) cannot apply: answered with 400 `code`."""

    def __init__(self, message: str, code: str = "BadRequest") -> None:
        super().__init__(message)
        self.code = code


_QUOTED = r"'((?:[^']|'')*)'"
_EXPAND = re.compile(r"^\s*(single|multi)ValueExtendedProperties\s*(?:\(\s*\$filter\s*=\s*(.*)\))?\s*$", re.I)
_ID_EQ = re.compile(r"id\s+eq\s+" + _QUOTED, re.I)
_ANY = re.compile(
    r"^\s*singleValueExtendedProperties/any\(\s*(\w+)\s*:\s*\1/id\s+eq\s+" + _QUOTED
    + r"\s+and\s+\1/value\s+eq\s+" + _QUOTED + r"\s*\)\s*$", re.I)
_UID_EQ = re.compile(r"^\s*iCalUId\s+eq\s+" + _QUOTED + r"\s*$", re.I)
_PREFER = re.compile(r"([\w.-]+)\s*=\s*(\"[^\"]*\"|[^,;\s]+)")


def _unquote(text: str) -> str:
    return text.replace("''", "'")


def query_value(request: Request, name: str) -> str | None:
    values = request.query.get(name)
    return values[0] if values else None


def parse_select(request: Request) -> set[str] | None:
    raw = query_value(request, "$select")
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def parse_expand(request: Request) -> list[str]:
    """The extended property ids asked for with the filtered $expand (an unfiltered expand of
    extended properties returns none, as in Graph)."""
    raw = query_value(request, "$expand")
    if raw is None:
        return []
    ids: list[str] = []
    for part in re.split(r",(?![^(]*\))", raw):
        match = _EXPAND.match(part)
        if match is None:
            name = part.split("(")[0].strip()
            raise BadQuery(f"Could not find a navigation property '{name}' on type 'microsoft.graph.event'.")
        if match.group(1).lower() == "single" and match.group(2):
            ids.extend(_unquote(v) for v in _ID_EQ.findall(match.group(2)))
    return ids


@dataclass(frozen=True)
class EventFilter:
    """An events $filter: by one extended property's value, or by iCalUId."""

    prop_id: str | None = None
    value: str | None = None
    ical_uid: str | None = None


def parse_filter(request: Request) -> EventFilter | None:
    raw = query_value(request, "$filter")
    if raw is None:
        return None
    match = _ANY.match(raw)
    if match:
        return EventFilter(prop_id=_unquote(match.group(2)), value=_unquote(match.group(3)))
    match = _UID_EQ.match(raw)
    if match:
        return EventFilter(ical_uid=_unquote(match.group(1)))
    raise BadQuery(f"Invalid filter clause: the sandbox cannot apply '{raw}'.", "ErrorInvalidUrlQueryFilter")


def top_of(request: Request, default: int, name: str = "$top") -> int:
    raw = query_value(request, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"Invalid {name} value '{raw}'.") from None
    if value < 0 or (name == "$top" and value == 0):
        raise BadQuery(f"Invalid {name} value '{raw}'.")
    return value


def prefer(request: Request) -> dict[str, str]:
    """The Prefer header's preferences (all Prefer headers, comma separated), values unquoted;
    names lower-cased (outlook.timezone, idtype, odata.maxpagesize, ...)."""
    found: dict[str, str] = {}
    for header in request.headers.get_all("Prefer") or []:
        for name, value in _PREFER.findall(header):
            found[name.lower()] = value.strip('"')
    return found
