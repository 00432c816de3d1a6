"""A stateful fake Exchange Web Services endpoint on loopback, for the real exchangelib client.

    with EwsSandbox(users={"svc@example.com": "pw"}) as ews:
        ews.add_mailbox("room1@example.com")
        ews.book("room1@example.com", subject="Standup", start=..., end=...)
        Configuration(service_endpoint=ews.url, credentials=Credentials("svc@example.com", "pw"), ...)

One endpoint (``/EWS/Exchange.asmx``), SOAP 1.1 over HTTP/1.1 keep-alive, Basic and NTLM
authentication (NTLMv2 responses are checked against the password), the ConvertId version
probe, GetFolder, FindItem (CalendarView with recurrence expansion, IndexedPageItemView with
restrictions), GetItem, CreateItem (calendar items and meeting responses), UpdateItem,
DeleteItem and SyncFolderItems. `book`/`move`/`cancel`/... act as people and the Resource
Booking Assistant would; `inject` queues faults; `journal` records each served request.

`users=None` accepts any user name and password (authentication is still required).
CalendarView includes items that end exactly at the window start, as real EWS does.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from ..httpbase import Hold, LoopbackServer, Request, Response
from .auth import Authenticator
from .faults import FAULT_KINDS, EwsFaults
from .ops import Context, UnsupportedOperation, first_mailbox
from .people import StorePeople
from .read import convert_id, find_item, get_folder, get_item, sync_folder_items
from .soap import S, T, envelope, fault
from .store import Item, Occurrence, Recurrence, Store, decode_id, iana_zone
from .write import create_item, delete_item, update_item

__all__ = ["EwsSandbox", "Recurrence"]

EWS_PATH = "/EWS/Exchange.asmx"
_XML = "text/xml; charset=utf-8"
OPERATIONS: dict[str, Callable[[ET.Element, Context], ET.Element]] = {
    "ConvertId": convert_id,
    "GetFolder": get_folder,
    "FindItem": find_item,
    "GetItem": get_item,
    "CreateItem": create_item,
    "UpdateItem": update_item,
    "DeleteItem": delete_item,
    "SyncFolderItems": sync_folder_items,
}


class EwsSandbox(StorePeople):
    """A fake EWS server holding room calendars; see the module docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        users: dict[str, str] | None = None,
        auth: Literal["basic", "ntlm", "any"] = "any",
        timezone: str = "Europe/Amsterdam",
        store: Store | None = None,
    ) -> None:
        """`store`: serve these mailboxes (e.g. a GraphSandbox's `store`, so both protocols
        see the same calendars); its zone then wins over `timezone`."""
        if auth not in ("basic", "ntlm", "any"):
            raise ValueError(f"auth must be basic, ntlm or any, not {auth!r}")
        self.auth = auth
        self._auth = Authenticator(auth, users)
        self.store = store if store is not None else Store(ZoneInfo(timezone))
        self.zone = self.store.zone
        self.journal: list[tuple[float, str | None, str]] = []
        self._lock = self.store.lock
        self.faults = EwsFaults(self._auth.unauthorized)
        self._server = LoopbackServer(self._handle, host=host, port=port)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> EwsSandbox:
        """Start serving in the background; returns self."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every connection."""
        self._server.stop()

    @property
    def url(self) -> str:
        """The EWS endpoint, http://127.0.0.1:PORT/EWS/Exchange.asmx."""
        return self._server.url + EWS_PATH

    def __enter__(self) -> EwsSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- acting as people ---------------------------------------------------------------

    def add_mailbox(self, smtp: str) -> None:
        """Create an (empty) mailbox; requests for unknown ones get ErrorNonExistentMailbox."""
        with self._lock:
            self.store.add_mailbox(smtp)

    def _public_id(self, target: Item | Occurrence) -> str:
        return target.id

    def _store_id(self, item_id: str) -> str:
        if decode_id(item_id) is None:        # a Graph id of a shared store
            from ..graph.convert import graph_to_ews_id

            return graph_to_ews_id(item_id) or item_id
        return item_id

    # --- looking -----------------------------------------------------------------------

    def items(self, mailbox: str) -> list[dict[str, Any]]:
        """The stored items (singles and masters, not expanded), ordered by start."""
        with self._lock:
            stored = sorted(self.store.mailbox(mailbox).values(), key=lambda i: (i.start, i.id))
            return [_item_dict(self.store, i) for i in stored]

    def occurrences(self, mailbox: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """The expanded view FindItem's CalendarView gives for this window (no 2-year limit)."""
        with self._lock:
            found = self.store.expand(mailbox, start.astimezone(UTC), end.astimezone(UTC))
            return [_view_dict(x) for x in found]

    # --- faults and journal ---------------------------------------------------------------

    def inject(
        self, kind: str, *, count: int = 1, op: str | None = None, mailbox: str | None = None,
        back_off_ms: int = 100, delay: float = 2.0, hold: Hold | None = None, answer: Response | None = None,
    ) -> None:
        """Answer the next `count` matching requests with a fault (syncd/sandbox/ews/faults.py):
        before the request takes effect server_busy (with `back_off_ms`), http500, http503,
        http401 or drop; after it took effect drop_after, slow_after (`delay` s),
        http500_after, http503_after, hold (`hold`) or answer_after (`answer` sent instead)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, not {kind!r}")
        self.faults.add(kind, count=count, op=op, mailbox=mailbox, back_off_ms=back_off_ms, delay=delay,
                        hold=hold, answer=answer)

    def history(self, mailbox: str) -> list[dict[str, Any]]:
        """Every item ever stored in the mailbox, removed ones included (`removed` True),
        ordered by creation: the journal of what was created, whatever happened since."""
        with self._lock:
            stored = [*self.store.mailbox(mailbox).values(), *self.store.tombstones[mailbox.lower()].values()]
            stored.sort(key=lambda i: (i.created_seq, i.id))
            return [{**_item_dict(self.store, i), "removed": bool(i.removed)} for i in stored]

    def calls(self, mailbox: str | None = None, op: str | None = None) -> int:
        """How many journaled requests match `mailbox` and `op` (None matches all)."""
        with self._lock:
            return sum(
                1 for _, mb, name in self.journal
                if (mailbox is None or mb == mailbox.lower()) and (op is None or name == op)
            )

    def clear_journal(self) -> None:
        with self._lock:
            self.journal.clear()

    # --- HTTP ---------------------------------------------------------------------------

    def _handle(self, request: Request) -> Response:
        if request.path.lower() != EWS_PATH.lower():
            return Response(404, b"Not Found", "text/plain; charset=utf-8")
        if request.method != "POST":
            return Response(405, b"Method Not Allowed", "text/plain; charset=utf-8", headers={"Allow": "POST"})
        denied = self._auth.check(request)
        if denied is not None:
            return denied
        try:
            root = ET.fromstring(request.body)
        except ET.ParseError:
            return Response(500, fault("ErrorSchemaValidation", "The request is not valid XML."), _XML)
        header = root.find(f"{{{S}}}Header")
        body = root.find(f"{{{S}}}Body")
        if body is None or not len(body):
            return Response(500, fault("ErrorSchemaValidation", "The request has no SOAP body."), _XML)
        operation = body[0]
        op = operation.tag.rsplit("}", 1)[-1]
        default_mailbox = _impersonated(header) or (request.header("X-AnchorMailbox") or "").lower() or None
        mailbox = first_mailbox(operation) or _id_mailbox(operation) or default_mailbox
        with self._lock:
            self.journal.append((time.time(), mailbox, op))
            injected = self.faults.take(op, mailbox)
            if injected is not None and not injected.after:
                return self.faults.before(injected)
            handler = OPERATIONS.get(op)
            if handler is None:
                return Response(500, fault("ErrorInvalidRequest", f"The operation {op} is not supported."), _XML)
            zone = _context_zone(header, self.zone)
            try:
                answer = handler(operation, Context(self.store, default_mailbox, zone))
            except UnsupportedOperation as exc:
                return Response(500, fault("ErrorInvalidRequest", f"Not supported by the sandbox: {exc}"), _XML)
            except (ValueError, KeyError) as exc:
                return Response(500, fault("ErrorSchemaValidation", f"The request is invalid: {exc}"), _XML)
            except Exception as exc:  # noqa: BLE001 - a sandbox bug still answers in SOAP, named
                return Response(500, fault("ErrorInternalServerError", f"Sandbox failure: {exc!r}"), _XML)
        response = Response(200, envelope(answer), _XML)
        return response if injected is None else self.faults.after(injected, response)

def _impersonated(header: ET.Element | None) -> str | None:
    if header is None:
        return None
    sid = header.find(f"{{{T}}}ExchangeImpersonation/{{{T}}}ConnectingSID")
    if sid is None:
        return None
    for tag in ("PrimarySmtpAddress", "SmtpAddress", "PrincipalName"):
        value = sid.findtext(f"{{{T}}}{tag}")
        if value:
            return value.strip().lower()
    return None


def _id_mailbox(operation: ET.Element) -> str | None:
    for elem in operation.iter():
        for attr in ("Id", "RecurringMasterId", "OccurrenceId"):
            value = elem.get(attr)
            parts = decode_id(value) if value else None
            if parts:
                return parts[1]
    return None


def _context_zone(header: ET.Element | None, default: ZoneInfo) -> ZoneInfo:
    if header is None:
        return default
    tz = header.find(f"{{{T}}}TimeZoneContext/{{{T}}}TimeZoneDefinition")
    return iana_zone(tz.get("Id") if tz is not None else None, default)


def _ext_dict(ext: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for prop in ext.values():
        name = prop.attrs.get("PropertyName") or prop.attrs.get("PropertyTag") or prop.attrs.get("PropertyId", "")
        out[name] = prop.value if prop.values is None else list(prop.values)
    return out


def _item_dict(store: Store, item: Item) -> dict[str, Any]:
    return {
        "id": item.id,
        "change_key": item.change_key,
        "type": item.kind,
        "subject": item.subject,
        "start": item.start,
        "end": item.end,
        "start_timezone": item.start_tz,
        "end_timezone": item.end_tz,
        "is_all_day": item.is_all_day,
        "uid": item.uid,
        "organizer": item.organizer_email,
        "organizer_name": item.organizer_name,
        "sensitivity": item.sensitivity,
        "location": item.location,
        "body": item.body,
        "extended_properties": _ext_dict(item.ext),
        "is_meeting": item.is_meeting,
        "is_cancelled": item.is_cancelled,
        "my_response_type": item.my_response,
        "declined_to": item.declined_to,
        "declined_occurrences": list(item.declined_occurrences),
        "recurrence": item.recurrence,
        "modified_occurrences": [
            {"original_start": k, "start": o.start, "end": o.end, "subject": o.subject}
            for k, o in sorted(item.overrides.items())
        ],
        "deleted_occurrences": sorted(item.deleted),
        "created": item.created,
        "last_modified": item.modified,
        "source": item.source,
    }


def _view_dict(target: Item | Occurrence) -> dict[str, Any]:
    item = target.master if isinstance(target, Occurrence) else target
    return {
        "id": target.id,
        "change_key": target.change_key,
        "type": target.kind,
        "master_id": item.id if isinstance(target, Occurrence) else None,
        "original_start": target.original_start if isinstance(target, Occurrence) else None,
        "subject": target.subject,
        "start": target.start,
        "end": target.end,
        "is_all_day": item.is_all_day,
        "uid": item.uid,
        "organizer": item.organizer_email,
        "sensitivity": item.sensitivity,
        "location": target.location,
        "extended_properties": _ext_dict(target.ext),
    }
