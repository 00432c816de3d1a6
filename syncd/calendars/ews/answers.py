"""How the EWS backend reads exchangelib's failures: which mean "gone", which are a
connection failure worth a fresh connection, which concern the room mailbox itself, and
short texts for them."""

from __future__ import annotations

from typing import TypeVar

import requests
from exchangelib import errors as ex

from syncd.calendars.ews.connect import HttpStatusError

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({502, 504})
# Every EWS answer that means "this item or occurrence no longer exists": a deleted item, an
# occurrence deleted from its series (how Exchange answers for an occurrence's own id after
# an organizer removed that one date), an occurrence past the end of a shortened series, a
# series left with no occurrences, an update of a deleted item. Each is "gone", never a failure.
GONE_ERRORS: tuple[type[Exception], ...] = (
    ex.ErrorItemNotFound,
    ex.ErrorCalendarOccurrenceIsDeletedFromRecurrence,
    ex.ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange,
    ex.ErrorRecurrenceHasNoOccurrence,
    ex.ErrorCalendarCannotUpdateDeletedItem,
)
MAILBOX_ERRORS = {
    ex.ErrorNonExistentMailbox: "no such mailbox",
    ex.ErrorAccessDenied: "access denied",
    ex.ErrorImpersonateUserDenied: "the service account may not impersonate it",
    ex.ErrorFolderNotFound: "calendar folder not found",
    ex.ErrorMailboxStoreUnavailable: "mailbox store unavailable",
    ex.ErrorInvalidSmtpAddress: "not a valid SMTP address",
}


def retryable(e: Exception) -> bool:
    """A failure of the connection rather than of the request: worth a fresh connection."""
    if isinstance(e, HttpStatusError):
        return e.status in RETRYABLE_STATUS
    if isinstance(e, ex.ErrorTimeoutExpired | requests.exceptions.ConnectionError | requests.exceptions.Timeout
                  | requests.exceptions.ChunkedEncodingError | ConnectionError | TimeoutError):
        return True
    # A bare TransportError is a TLS or connection failure exchangelib re-raised.
    return type(e) is ex.TransportError and "version" not in str(e).lower()


def raise_if_error(item: T) -> T:
    if isinstance(item, Exception):
        raise item
    return item


def short(item_id: str) -> str:
    return item_id if len(item_id) <= 24 else f"{item_id[:10]}…{item_id[-10:]}"


def root_cause(e: BaseException) -> str:
    """The innermost socket-level reason (e.g. "Connection refused"), else a brief text."""
    seen: set[int] = set()
    cur: BaseException | None = e
    found: OSError | None = None
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.strerror:
            found = cur
        cur = cur.__cause__ or cur.__context__
        if cur is None and found is None:
            args = getattr(e, "args", ())
            inner = next((a for a in args if isinstance(a, BaseException)), None)
            cur = inner if inner is not None and id(inner) not in seen else None
    if found is not None:
        return found.strerror or brief(e)
    text = brief(e)
    for marker in ("Connection refused", "timed out", "Name or service not known", "Connection reset"):
        if marker.lower() in text.lower():
            return marker
    return text


def brief(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text if len(text) <= 200 else text[:200] + "…"
