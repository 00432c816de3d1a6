"""syncd's exception tree. Each class carries the exit status the command line gives it.

    SyncdError
     ├── ConfigError ........................ 2  bad configuration
     ├── UsageError ......................... 2  bad command line
     ├── AnotherInstanceRunning ............. 1
     ├── DatabaseError ...................... 1
     ├── UnreachableError ................... 3  a system could not be reached
     ├── CredentialsError ................... 3  a system refused the credentials
     ├── UltimoError ........................ 1
     │    ├── UltimoRejected (any 400) ...... conflicts, never retried
     │    │    ├── RoomUnavailable ......... 1015
     │    │    └── ReservationInPast ....... 1166
     │    ├── UltimoAuthError ............... 401 (also a CredentialsError)
     │    ├── UltimoNotFound ................ 404, wrong endpoint or workflow (exit 3)
     │    ├── UltimoTransient ............... 5xx, timeout, connection error (retried)
     │    │    ├── UltimoQuotaExceeded ...... 429 / 413
     │    │    └── UltimoUnreachable ........ connection refused / DNS (also UnreachableError)
     │    ├── UltimoProtocolError ........... a garbage answer
     │    └── BudgetExhausted ............... syncd's own daily share is spent
     └── CalendarError ...................... 1
          ├── CalendarAuthError ............. (also a CredentialsError)
          ├── CalendarUnreachable ........... (also an UnreachableError)
          ├── CalendarThrottled ............. busy after the bounded back-off
          ├── StaleChangeKey ................ someone edited the item since we read it
          ├── EventGone ..................... the item no longer exists
          ├── UnknownTimeZone ............... an item's Windows zone is unknown
          └── CalendarProtocolError ......... a garbage answer
"""

from __future__ import annotations


class SyncdError(Exception):
    """Base of every error syncd expects; the CLI prints `str(error)` as one line."""

    exit_status = 1


class ConfigError(SyncdError):
    exit_status = 2

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class UsageError(SyncdError):
    exit_status = 2


class AnotherInstanceRunning(SyncdError):
    exit_status = 1


class DatabaseError(SyncdError):
    exit_status = 1


class UnreachableError(SyncdError):
    exit_status = 3


class CredentialsError(SyncdError):
    exit_status = 3


# --- Ultimo -------------------------------------------------------------------------


class UltimoError(SyncdError):
    exit_status = 1


class UltimoRejected(UltimoError):
    """HTTP 400 with Ultimo's `{message, type, code}`: permanent for this request."""

    def __init__(self, message: str, code: str | None = None, status: int = 400):
        self.code = code
        self.status = status
        self.ultimo_message = message
        super().__init__(f"Ultimo rejected the request ({code or status}): {message}")


class RoomUnavailable(UltimoRejected):
    """Ultimo 1015: the room is taken at that time (preparation and cleanup included)."""


class ReservationInPast(UltimoRejected):
    """Ultimo 1166: the reservation is in the past and cannot be changed."""


class UltimoAuthError(UltimoError, CredentialsError):
    exit_status = 3


class UltimoNotFound(UltimoError):
    """404: wrong base_url, or the workflow is not enabled for this API key."""

    exit_status = 3


class UltimoTransient(UltimoError):
    """A failure worth retrying later: 5xx, timeout, dropped connection, quota."""

    def __init__(self, message: str, retry_after: float | None = None):
        self.retry_after = retry_after
        super().__init__(message)


class UltimoQuotaExceeded(UltimoTransient):
    pass


class UltimoUnreachable(UltimoTransient, UnreachableError):
    exit_status = 3


class UltimoProtocolError(UltimoError):
    pass


class BudgetExhausted(UltimoError):
    pass


# --- Calendar -----------------------------------------------------------------------


class CalendarError(SyncdError):
    exit_status = 1


class CalendarAuthError(CalendarError, CredentialsError):
    exit_status = 3


class CalendarUnreachable(CalendarError, UnreachableError):
    exit_status = 3


class CalendarThrottled(CalendarError):
    pass


class StaleChangeKey(CalendarError):
    pass


class EventGone(CalendarError):
    pass


class UnknownTimeZone(CalendarError):
    pass


class CalendarProtocolError(CalendarError):
    pass
