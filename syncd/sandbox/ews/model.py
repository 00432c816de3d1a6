"""The data of the EWS sandbox: calendar items, occurrences, extended properties, the ids
and change keys handed to clients, and Windows/IANA time zone names.

Ids are opaque to clients but readable here: base64 of ``I:<mailbox>:<key>`` for stored
items, ``O:<mailbox>:<master key>:<original start>`` for occurrences and
``F:<mailbox>:<folder>`` for folders, so any id finds its mailbox again.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from exchangelib.winzone import IANA_TO_MS_TIMEZONE_MAP, MS_TIMEZONE_TO_IANA_MAP

__all__ = [
    "ExtProp",
    "Item",
    "Occurrence",
    "Override",
    "Recurrence",
    "StoreError",
    "change_key",
    "decode_id",
    "encode_id",
    "ext_key",
    "iana_zone",
    "stamp",
    "unstamp",
    "windows_zone",
]


class StoreError(Exception):
    """A per-item EWS error: `code` is the EWS ResponseCode (e.g. ErrorItemNotFound)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Recurrence:
    """A daily or weekly pattern. `weekdays` uses 0=Monday; `until` is a local date, inclusive."""

    kind: Literal["daily", "weekly"]
    interval: int = 1
    count: int | None = None
    until: date | None = None
    weekdays: tuple[int, ...] | None = None


@dataclass
class ExtProp:
    """An extended property as the client addressed it: the ExtendedFieldURI attributes, kept
    verbatim so they can be echoed, and the value (or values, for array types)."""

    attrs: dict[str, str]
    value: str | None = None
    values: list[str] | None = None

    @property
    def key(self) -> tuple[tuple[str, str], ...]:
        return ext_key(self.attrs)


def ext_key(attrs: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """A key identifying an extended property regardless of attribute order and GUID case."""
    return tuple(sorted((k, v.lower() if k in ("PropertySetId", "PropertyTag") else v) for k, v in attrs.items()))


@dataclass
class Override:
    """A modified occurrence (an Exception, in EWS terms) of a recurring master."""

    start: datetime
    end: datetime
    subject: str | None = None
    location: str | None = None
    ext: dict[tuple[tuple[str, str], ...], ExtProp] | None = None
    seq: int = 0


@dataclass
class Item:
    """A stored calendar item: a single appointment/meeting or a recurring master."""

    key: str
    mailbox: str
    subject: str
    start: datetime
    end: datetime
    start_tz: str
    end_tz: str
    uid: str
    organizer_email: str
    organizer_name: str
    created: datetime
    modified: datetime
    seq: int
    created_seq: int
    is_all_day: bool = False
    location: str | None = None
    free_busy: str = "Busy"
    sensitivity: str = "Normal"
    importance: str = "Normal"
    body: str | None = None
    reminder_is_set: bool = False
    reminder_minutes: int = 0
    is_meeting: bool = False
    is_cancelled: bool = False
    my_response: str = "Organizer"
    source: str = "ews"
    ext: dict[tuple[tuple[str, str], ...], ExtProp] = field(default_factory=dict)
    recurrence: Recurrence | None = None
    overrides: dict[datetime, Override] = field(default_factory=dict)
    deleted: set[datetime] = field(default_factory=set)
    declined_occurrences: list[datetime] = field(default_factory=list)
    removed: bool = False
    history: list[int] = field(default_factory=list)  # the sequence number of every write
    occurrence_deletions: set[int] = field(default_factory=set)  # the writes that only deleted an occurrence
    declined_to: str | None = None

    @property
    def id(self) -> str:
        return encode_id("I", self.mailbox, self.key)

    @property
    def change_key(self) -> str:
        return change_key(self.seq)

    @property
    def kind(self) -> str:
        return "RecurringMaster" if self.recurrence else "Single"


@dataclass(frozen=True)
class Occurrence:
    """One instance of a recurring master as a calendar view shows it."""

    master: Item
    index: int
    original_start: datetime
    start: datetime
    end: datetime
    override: Override | None

    @property
    def id(self) -> str:
        return encode_id("O", self.master.mailbox, self.master.key, stamp(self.original_start))

    @property
    def change_key(self) -> str:
        return change_key(max(self.master.seq, self.override.seq if self.override else 0))

    @property
    def kind(self) -> str:
        return "Exception" if self.override else "Occurrence"

    @property
    def subject(self) -> str:
        if self.override and self.override.subject is not None:
            return self.override.subject
        return self.master.subject

    @property
    def location(self) -> str | None:
        if self.override and self.override.location is not None:
            return self.override.location
        return self.master.location

    @property
    def ext(self) -> dict[tuple[tuple[str, str], ...], ExtProp]:
        if self.override and self.override.ext is not None:
            return self.override.ext
        return self.master.ext


def stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def unstamp(value: str) -> datetime:
    return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def encode_id(*parts: str) -> str:
    """The opaque id for `parts` (kind letter first)."""
    return base64.b64encode(":".join(parts).encode()).decode()


def decode_id(value: str) -> list[str] | None:
    """The parts of an id issued by `encode_id`, or None when it is not one of ours."""
    try:
        text = base64.b64decode(value.encode(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    parts = text.split(":")
    if parts[0] not in ("I", "O", "F") or len(parts) < 3:
        return None
    return parts


def change_key(seq: int) -> str:
    """The ChangeKey for a write with sequence number `seq`."""
    return base64.b64encode(f"CK{seq}".encode()).decode()


def iana_zone(windows_id: str | None, default: ZoneInfo) -> ZoneInfo:
    """The IANA zone for a Windows zone id, or `default` when unknown."""
    if windows_id:
        name = MS_TIMEZONE_TO_IANA_MAP.get(windows_id)
        if name:
            return ZoneInfo(name)
        if windows_id in ("UTC", "tzone://Microsoft/Utc"):
            return ZoneInfo("UTC")
    return default


def windows_zone(zone: ZoneInfo) -> str:
    """The Windows zone id for an IANA zone (UTC when unknown)."""
    entry = IANA_TO_MS_TIMEZONE_MAP.get(str(zone.key))
    return entry[0] if entry else "UTC"
