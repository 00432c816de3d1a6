"""A fake of Ultimo's Reservations REST connector, on loopback (reference/ultimo-api.md).

    with UltimoSandbox() as ultimo:              # 127.0.0.1, ephemeral port
        ultimo.add_space("C-25")                 # 10 min preparation, 10 min cleanup
        ultimo.url                               # http://127.0.0.1:PORT/api/V1
        uid = ultimo.reserve("C-25", start, end) # someone books in Ultimo itself

It keeps the documented quirks: `Properties` with a capital P on Create and
`properties` elsewhere, zero-padded 11-digit string ids, `type` as a string in errors,
six-decimal offset times in its own zone, both input time forms, 401 `MissingApiKey` /
`InvalidApiKey`, a 500 `InternalServerError` for a wrong ApplicationElementId, 429 past
the rate limit. Where the documentation is silent, it chooses:

- Clashes (1015) count each reservation's preparation and cleanup buffers: two
  bookings clash when [start - preparation, end + cleanup) of one overlaps the other's.
- A reservation is "in the past" (1166) once it has started: creating one that starts
  before now, or updating or cancelling one that has started, is refused.
- Get matches by overlap with [From, Till), sorted by start, at most `page_cap` rows,
  never cancelled ones; no ExternalId in rows (the sandbox keeps it for assertions).
- Other refusals are 400 `{message, type: "3", code}` with sandbox codes:
  9001 bad or missing field, 9002 unknown space, 9003 unknown reservation,
  9004 already cancelled, 9005 end not after start.

Switches for the documented variants the client must read: `lowercase_create`,
`misspell_preparation`, `numeric_ids`, `type_as_number`, `empty_style` ("list",
"missing", "null").
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from syncd.sandbox.httpbase import (
    FaultQueue,
    Hold,
    LoopbackServer,
    Request,
    Response,
    drop_connection,
    garbage_response,
    html_error_page,
    json_response,
)
from syncd.sandbox.ultimo.records import (
    _GUID,
    _LOCAL_FORM,
    _PATH,
    _SHORT,
    _UTC_FORM,
    FAULT_KINDS,
    IN_PAST_CREATE,
    IN_PAST_MODIFY,
    NOT_AVAILABLE,
    PROCESSED_FAULTS,
    WORKFLOWS,
    Call,
    SandboxRejected,
    _as_dict,
    _aware,
    _internal_error,
    _Reservation,
    _Space,
    _text,
)

__all__ = ["WORKFLOWS", "Call", "SandboxRejected", "UltimoSandbox"]


class UltimoSandbox(LoopbackServer):
    """The fake connector. Thread-safe; the person helpers and the HTTP API share one state."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: tuple[str, ...] = ("sandbox-key",),
        timezone: str = "Europe/Amsterdam",
        rate_limit: int = 100,
        rate_window: float = 10.0,
        page_cap: int = 100,
        clock: Callable[[], datetime] | None = None,
        daily_limit: int = 10_000,
        employees: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(host=host, port=port, ssl_context=ssl_context)
        self.api_keys = tuple(api_keys)
        self.zone = ZoneInfo(timezone)
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.page_cap = page_cap
        self.daily_limit = daily_limit
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.employees = dict(employees or {"ULTIMO": "Ultimo", "00042": "Alice Example"})
        self.faults = FaultQueue()
        self.journal: list[Call] = []
        # Documented variants, switchable so clients are tested against each.
        self.lowercase_create = False
        self.misspell_preparation = False
        self.numeric_ids = False
        self.type_as_number = False
        self.empty_style = "list"
        self._lock = threading.RLock()
        self._spaces: dict[str, _Space] = {}
        self._reservations: dict[str, _Reservation] = {}
        # Active reservations per space: a Get or a clash check looks at one space only,
        # so the sandbox's cost grows with the rows of the space, not of every space.
        self._active: dict[str, dict[str, _Reservation]] = {}
        self._next_id = 6712
        self._recent: deque[float] = deque()
        self._per_day: dict[str, int] = {}

    @property
    def url(self) -> str:
        """The base_url a client is configured with (ends in /api/V1)."""
        return super().url + "/api/V1"

    def start(self) -> UltimoSandbox:
        super().start()
        return self

    def __enter__(self) -> UltimoSandbox:
        return self.start()

    # --- setting up and acting as a person in Ultimo -------------------------------------

    def add_space(self, space_id: str, preparation_minutes: int = 10, cleanup_minutes: int = 10) -> None:
        with self._lock:
            self._spaces[space_id] = _Space(
                space_id, timedelta(minutes=preparation_minutes), timedelta(minutes=cleanup_minutes)
            )

    def reserve(
        self, space_id: str, start: datetime, end: datetime, description: str = "Booked in Ultimo",
        applicant_id: str = "00042", *, force: bool = False, external_id: str | None = None,
    ) -> str:
        """Book as someone using Ultimo; gives the UltimoId. Raises SandboxRejected on a
        clash (1015) unless `force`. Past times are allowed (to seed history)."""
        with self._lock:
            self._require_space(space_id)
            start, end = _aware(start), _aware(end)
            self._check_times(start, end)
            if not force:
                self._check_clash(space_id, start, end, None)
            return self._insert(space_id, start, end, description, applicant_id, external_id, "ultimo")

    def move(self, ultimo_id: str, start: datetime, end: datetime, *, force: bool = False) -> None:
        """Change a reservation's times as a person; SandboxRejected on a clash unless `force`."""
        with self._lock:
            res = self._require_active(ultimo_id)
            start, end = _aware(start), _aware(end)
            self._check_times(start, end)
            if not force:
                self._check_clash(res.space_id, start, end, ultimo_id)
            self._put(replace(res, start=start, end=end))

    def cancel(self, ultimo_id: str) -> None:
        """Cancel as a person; SandboxRejected if unknown or already cancelled."""
        with self._lock:
            res = self._require_active(ultimo_id)
            self._put(replace(res, status="Cancelled"))

    def reservations(self, space_id: str | None = None) -> list[dict[str, Any]]:
        """The active reservations (of one space, or all), oldest start first, each a dict
        with ultimo_id, space_id, start, end (aware UTC), description, applicant_id,
        external_id and via ("api" or "ultimo")."""
        with self._lock:
            if space_id is None:
                rows = [r for r in self._reservations.values() if r.active]
            else:
                rows = list(self._active.get(space_id, {}).values())
        return [_as_dict(r) for r in sorted(rows, key=lambda r: (r.start, r.ultimo_id))]

    def reservation(self, ultimo_id: str) -> dict[str, Any] | None:
        """One reservation, cancelled ones included (with their status), or None."""
        with self._lock:
            res = self._reservations.get(ultimo_id)
        return None if res is None else {**_as_dict(res), "status": res.status}

    # --- faults and journal ----------------------------------------------------------------

    def inject(
        self, kind: str, count: int = 1, workflow: str | None = None, delay: float = 2.0,
        retry_after: str | float | None = None, payload: Any = None, hold: Hold | None = None,
        answer: Response | None = None,
    ) -> None:
        """Make the next `count` requests (to `workflow`, if given) fail as `kind`:
        http500, http503, http429, http413 (optional retry_after), slow (answered after
        `delay` s, processed), html (502 page), drop (closed unanswered, not processed),
        drop_after (processed, then closed unanswered), http503_after / http500_after
        (processed, then a gateway's HTML error page), garbage (200, not JSON), answer (200
        with `payload` as its JSON body, not processed), hold (processed, the answer held
        back by `hold`, see httpbase.Hold), answer_after (processed, then the Response
        `answer` is sent instead: the malformed-answer corpus, syncd/sandbox/corpus.py)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(FAULT_KINDS)}")
        if kind == "hold" and hold is None or kind == "answer_after" and answer is None:
            raise ValueError(f"fault {kind!r} needs its {'hold' if kind == 'hold' else 'answer'} argument")
        match = None if workflow is None else _SHORT.get(workflow, workflow)
        self.faults.add(kind, count=count, match=match, delay=delay, retry_after=retry_after, hold=hold,
                        answer=answer, payload=payload)

    def history(self) -> list[dict[str, Any]]:
        """Every reservation ever made, cancelled ones included (with their status), by id."""
        with self._lock:
            rows = sorted(self._reservations.values(), key=lambda r: r.ultimo_id)
        return [{**_as_dict(r), "status": r.status} for r in rows]

    def calls(self, workflow: str | None = None) -> int:
        """Requests received (to `workflow`, short or full name), faulted ones included."""
        name = None if workflow is None else _SHORT.get(workflow, workflow)
        with self._lock:
            return sum(1 for c in self.journal if name is None or c.workflow == name)

    def clear_journal(self) -> None:
        with self._lock:
            self.journal.clear()

    # --- HTTP ------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        match = _PATH.match(request.path)
        workflow = match.group("workflow") if match else request.path
        try:
            body: Any = request.json() if request.body else None
        except (ValueError, UnicodeDecodeError):
            body = None
        response = self._answer(request, workflow, match is not None, body)
        with self._lock:
            self.journal.append(Call(self.clock(), workflow, body, 0 if response.drop else response.status))
        return response

    def _answer(self, request: Request, workflow: str, path_ok: bool, body: Any) -> Response:
        fault = self.faults.take(workflow)
        if fault is not None and fault.kind not in PROCESSED_FAULTS:
            return self._fault_response(fault.kind, fault.get("retry_after"), fault.get("payload"))
        if request.method != "POST":
            return json_response(405, {"message": "The requested resource does not support http method "
                                       f"'{request.method}'."})
        key = request.header("ApiKey")
        if not key:
            return json_response(401, {"message": "Missing API key", "code": "MissingApiKey"})
        if key not in self.api_keys:
            return json_response(401, {"message": "The API key is invalid", "code": "InvalidApiKey"})
        limited = self._count_rate()
        if limited is not None:
            return limited
        if not path_ok or workflow not in WORKFLOWS:
            return json_response(404, {"message": "No workflow found that matches the request."})
        element = request.header("ApplicationElementId") or ""
        if not _GUID.match(element) or element.lower() != WORKFLOWS[workflow]:
            return _internal_error(element)
        if not isinstance(body, dict):
            response = self._error("9001", "The request body must be a JSON object.")
        else:
            try:
                with self._lock:
                    response = self._run(workflow, {k.casefold(): v for k, v in body.items()})
            except SandboxRejected as rejected:
                response = self._error(rejected.code, rejected.message)
        return response if fault is None else self._after(fault.kind, fault.params, response)

    @staticmethod
    def _after(kind: str, params: dict[str, Any], response: Response) -> Response:
        """The answer to a request that took effect, spoilt as fault `kind` says."""
        if kind == "slow":
            response.delay = float(params.get("delay", 2.0))
        elif kind == "hold":
            response.hold = params["hold"]
        elif kind == "http500_after":
            response = html_error_page(500, "Internal Server Error")
        elif kind == "http503_after":
            response = html_error_page(503, "Service Unavailable")
        elif kind == "answer_after":
            response = params["answer"].canned()
        else:   # drop_after: the work is done, the answer is lost
            response = drop_connection()
        return response

    def _run(self, workflow: str, body: dict[str, Any]) -> Response:
        now = self.clock()
        if workflow == "REST_CreateReservation":
            space_id = _text(body, "spaceid")
            self._require_space(space_id)
            start, end = self._time(body, "starttime"), self._time(body, "endtime")
            self._check_times(start, end)
            if start < now:
                raise SandboxRejected("1166", IN_PAST_CREATE)
            self._check_clash(space_id, start, end, None)
            applicant = _text(body, "applicantid", "applicant")
            external = body.get("externalid")
            uid = self._insert(space_id, start, end, _text(body, "description", required=False),
                               applicant, None if external is None else str(external), "api")
            key = "properties" if self.lowercase_create else "Properties"
            return json_response(200, {key: {"UltimoId": int(uid) if self.numeric_ids else uid}})
        if workflow == "REST_UpdateReservation":
            res = self._require_active(_text(body, "ultimoid"))
            start, end = self._time(body, "starttime"), self._time(body, "endtime")
            self._check_times(start, end)
            if res.start < now or start < now:
                raise SandboxRejected("1166", IN_PAST_MODIFY)
            self._check_clash(res.space_id, start, end, res.ultimo_id)
            self._put(replace(res, start=start, end=end))
            return json_response(200, {"properties": {}})
        if workflow == "REST_CancelReservation":
            res = self._require_active(_text(body, "ultimoid"))
            if res.start < now:
                raise SandboxRejected("1166", IN_PAST_MODIFY)
            self._put(replace(res, status="Cancelled"))
            return json_response(200, {"properties": {}})
        space_id = _text(body, "spaceid")
        space = self._require_space(space_id)
        since, till = self._time(body, "from"), self._time(body, "till")
        rows = sorted(
            (r for r in self._active.get(space_id, {}).values() if r.start < till and r.end > since),
            key=lambda r: (r.start, r.ultimo_id),
        )[: self.page_cap]
        return json_response(200, self._get_payload([self._row(r, space) for r in rows]))

    def _get_payload(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if rows or self.empty_style == "list":
            return {"properties": {"Output": {"collection": rows}}}
        if self.empty_style == "null":
            return {"properties": {"Output": {"collection": None}}}
        return {"properties": {"Output": {}}}

    def _row(self, res: _Reservation, space: _Space) -> dict[str, Any]:
        prep_key = "StartTimeIncludingPreperationTime" if self.misspell_preparation else \
            "StartTimeIncludingPreparationTime"
        return {
            "UltimoId": int(res.ultimo_id) if self.numeric_ids else res.ultimo_id,
            "Description": res.description,
            "ApplicantId": res.applicant_id,
            "ApplicantName": self.employees.get(res.applicant_id, ""),
            "StartTime": self._out(res.start),
            "EndTime": self._out(res.end),
            prep_key: self._out(res.start - space.preparation),
            "EndTimeIncludingCleanupTime": self._out(res.end + space.cleanup),
            "Status": res.status,
        }

    def _out(self, value: datetime) -> str:
        return value.astimezone(self.zone).isoformat(timespec="microseconds")

    def _time(self, body: dict[str, Any], name: str) -> datetime:
        value = body.get(name)
        if isinstance(value, str) and _UTC_FORM.match(value):
            return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if isinstance(value, str) and _LOCAL_FORM.match(value):
            return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=self.zone).astimezone(UTC)
        raise SandboxRejected("9001", f"Field '{name}' must be 'yyyy-MM-dd HH:mm:ss' or 'yyyy-MM-ddTHH:mm:ssZ'.")

    # --- rules -----------------------------------------------------------------------------

    def _require_space(self, space_id: str) -> _Space:
        space = self._spaces.get(space_id)
        if space is None:
            raise SandboxRejected("9002", f"Space '{space_id}' does not exist.")
        return space

    def _require_active(self, ultimo_id: str) -> _Reservation:
        res = self._reservations.get(str(ultimo_id))
        if res is None:
            raise SandboxRejected("9003", f"Room reservation '{ultimo_id}' does not exist.")
        if not res.active:
            raise SandboxRejected("9004", f"Room reservation '{ultimo_id}' is already cancelled.")
        return res

    @staticmethod
    def _check_times(start: datetime, end: datetime) -> None:
        if end <= start:
            raise SandboxRejected("9005", "The end time must be after the start time.")

    def _check_clash(self, space_id: str, start: datetime, end: datetime, ignore: str | None) -> None:
        space = self._require_space(space_id)
        lo, hi = start - space.preparation, end + space.cleanup
        for other in self._active.get(space_id, {}).values():
            if other.ultimo_id != ignore and lo < other.end + space.cleanup and other.start - space.preparation < hi:
                raise SandboxRejected("1015", NOT_AVAILABLE)

    def _insert(self, space_id: str, start: datetime, end: datetime, description: str, applicant: str,
                external_id: str | None, via: str) -> str:
        uid = f"{self._next_id:011d}"
        self._next_id += 1
        self._put(_Reservation(uid, space_id, start, end, description, applicant, external_id, via))
        return uid

    def _put(self, res: _Reservation) -> None:
        """Store `res` (new or changed), keeping the per-space index of active ones."""
        self._reservations[res.ultimo_id] = res
        active = self._active.setdefault(res.space_id, {})
        if res.active:
            active[res.ultimo_id] = res
        else:
            active.pop(res.ultimo_id, None)

    def _count_rate(self) -> Response | None:
        """429 past `rate_limit` requests in `rate_window` s, or past `daily_limit` a day."""
        now = time.monotonic()
        day = self.clock().astimezone(UTC).date().isoformat()
        with self._lock:
            while self._recent and self._recent[0] <= now - self.rate_window:
                self._recent.popleft()
            if len(self._recent) >= self.rate_limit:
                return json_response(429, {"message": f"API calls quota exceeded! maximum admitted "
                                           f"{self.rate_limit} per {self.rate_window:g}s."})
            if self._per_day.get(day, 0) >= self.daily_limit:
                return json_response(429, {"message": f"API calls quota exceeded! maximum admitted "
                                           f"{self.daily_limit} per Day."})
            self._recent.append(now)
            self._per_day[day] = self._per_day.get(day, 0) + 1
        return None

    def calls_today(self) -> int:
        """Requests counted against the daily quota today."""
        with self._lock:
            return self._per_day.get(self.clock().astimezone(UTC).date().isoformat(), 0)

    def _error(self, code: str, message: str) -> Response:
        return json_response(400, {"message": message, "type": 3 if self.type_as_number else "3", "code": code})

    def _fault_response(self, kind: str, retry_after: str | float | None, payload: Any = None) -> Response:
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        if kind == "answer":
            return json_response(200, payload)
        if kind == "http500":
            return _internal_error("")
        if kind == "http503":
            return json_response(503, {"message": "The service is unavailable."}, headers)
        if kind in ("http429", "http413"):
            return json_response(int(kind[4:]), {"message": "API calls quota exceeded!"}, headers)
        if kind == "html":
            return html_error_page(502)
        if kind == "garbage":
            return garbage_response()
        return drop_connection()
