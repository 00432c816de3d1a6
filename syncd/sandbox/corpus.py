"""A corpus of malformed answers, as data the sandboxes serve (fault kind ``answer_after``).

Each `Malformed` names the call it spoils (an Ultimo workflow: get, create, update,
cancel; an EWS operation: FindItem, GetItem, CreateItem, UpdateItem, DeleteItem,
SyncFolderItems; a Graph sandbox operation: calendarView, delta, events.list, event.get,
events.create, event.update, event.delete, event.decline) and the answer sent instead of
the real one, after the request took effect. Whatever the answer, syncd must fail that
call with one clear line (a typed error, the room failed), conclude nothing from it (no
cancellation, no "empty room") and lose nothing.

    ultimo.inject("answer_after", workflow=entry.call, answer=entry.response(), count=50)
    ews.inject("answer_after", op=entry.call, answer=entry.response(), count=50)
    graph.inject("answer_after", op=entry.call, answer=entry.response(), count=50)

`ULTIMO`, `EWS` and `GRAPH` hold the entries; tests/test_malformed_answers.py runs each
through the real clients, benchmarks/chaos.py serves them to the real `syncd` process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from syncd.sandbox.httpbase import Response

__all__ = ["EWS", "GRAPH", "ULTIMO", "Malformed"]

_JSON = "application/json; charset=utf-8"
_XML = "text/xml; charset=utf-8"
_HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>"
              b"<body><form action=\"/adfs/ls\"><input name=\"UserName\"></form></body></html>\n")


@dataclass(frozen=True)
class Malformed:
    """One malformed answer: `name`, the `call` it answers, and what is sent."""

    name: str
    call: str
    body: bytes
    status: int = 200
    content_type: str = _JSON

    def response(self) -> Response:
        return Response(self.status, self.body, self.content_type)


# --- Ultimo ------------------------------------------------------------------------------

_ROW = {
    "UltimoId": "00000000001", "Description": "Weekly", "ApplicantId": "00042", "ApplicantName": "Alice",
    "StartTime": "2030-01-07T09:00:00.000000+01:00", "EndTime": "2030-01-07T10:00:00.000000+01:00",
    "StartTimeIncludingPreparationTime": "2030-01-07T08:50:00.000000+01:00",
    "EndTimeIncludingCleanupTime": "2030-01-07T10:10:00.000000+01:00", "Status": "Active",
}


def _js(value: Any) -> bytes:
    return json.dumps(value).encode()


def _rows(*rows: Any) -> bytes:
    return _js({"properties": {"Output": {"collection": list(rows)}}})


def _changed(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of `base` with `changes` made (a value of `_DROP` leaves the key out)."""
    copy = dict(base)
    for key, value in changes.items():
        if value is _DROP:
            copy.pop(key)
        else:
            copy[key] = value
    return copy


def _row(**changes: Any) -> dict[str, Any]:
    return _changed(_ROW, **changes)


_DROP = object()
_GOOD_GET = _rows(_ROW)

ULTIMO: tuple[Malformed, ...] = (
    Malformed("html page with a JSON content type", "get", _HTML_PAGE),
    Malformed("truncated body", "get", _GOOD_GET[: len(_GOOD_GET) // 2]),
    Malformed("empty body", "get", b""),
    Malformed("binary garbage", "get", b"\x00\x01\xfe\xff not json {{{"),
    Malformed("oversized body of nulls", "get", b'{"properties":{"Output":{"collection":['
              + b",".join([b"null"] * 400_000) + b"]}}}"),
    Malformed("oversized unterminated string", "get", b'{"properties":{"Output":{"collection":"' + b"x" * 3_000_000),
    Malformed("top level is a list", "get", _js([_ROW])),
    Malformed("top level is a string", "get", _js("OK")),
    Malformed("top level is null", "get", b"null"),
    Malformed("no properties", "get", _js({"Output": {"collection": [_ROW]}})),
    Malformed("properties null", "get", _js({"properties": None})),
    Malformed("properties empty", "get", _js({"properties": {}})),
    Malformed("Output null", "get", _js({"properties": {"Output": None}})),
    Malformed("properties is a list", "get", _js({"properties": [_ROW]})),
    Malformed("Output is a string", "get", _js({"properties": {"Output": "none"}})),
    Malformed("collection is an object", "get", _js({"properties": {"Output": {"collection": _ROW}}})),
    Malformed("collection is a string", "get", _js({"properties": {"Output": {"collection": "[]"}}})),
    Malformed("row is a number", "get", _rows(42)),
    Malformed("row without UltimoId", "get", _rows(_row(UltimoId=_DROP))),
    Malformed("UltimoId null", "get", _rows(_row(UltimoId=None))),
    Malformed("UltimoId true", "get", _rows(_row(UltimoId=True))),
    Malformed("StartTime unparseable", "get", _rows(_row(StartTime="tomorrow morning"))),
    Malformed("StartTime impossible date", "get", _rows(_row(StartTime="2030-02-30T09:00:00.000000+01:00"))),
    Malformed("EndTime impossible hour", "get", _rows(_row(EndTime="2030-01-07T25:00:00.000000+01:00"))),
    Malformed("EndTime missing", "get", _rows(_row(EndTime=_DROP))),
    Malformed("StartTime a number", "get", _rows(_row(StartTime=1893488400))),
    Malformed("preparation time impossible", "get",
              _rows(_row(StartTimeIncludingPreparationTime="2030-13-07T08:50:00"))),
    Malformed("create answered with an html page as JSON", "create", _HTML_PAGE),
    Malformed("create answered without UltimoId", "create", _js({"properties": {}})),
    Malformed("create answered with UltimoId null", "create", _js({"Properties": {"UltimoId": None}})),
    Malformed("create answered truncated", "create", b'{"Properties":{"UltimoId":"000'),
    Malformed("update answered with a list", "update", _js([])),
    Malformed("update answered truncated", "update", b'{"properti'),
    Malformed("cancel answered with a string", "cancel", _js("cancelled")),
    Malformed("cancel answered with an html page as JSON", "cancel", _HTML_PAGE),
)


# --- EWS ---------------------------------------------------------------------------------

_S = "http://schemas.xmlsoap.org/soap/envelope/"
_M = "http://schemas.microsoft.com/exchange/services/2006/messages"
_T = "http://schemas.microsoft.com/exchange/services/2006/types"
_E = "http://schemas.microsoft.com/exchange/services/2006/errors"
_HEADER = ('<s:Header><t:ServerVersionInfo MajorVersion="15" MinorVersion="1" MajorBuildNumber="2507" '
           'MinorBuildNumber="6" Version="V2017_07_11" /></s:Header>')


def _envelope(body: str) -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<s:Envelope xmlns:s="{_S}" xmlns:m="{_M}" xmlns:t="{_T}">'
            f"{_HEADER}<s:Body>{body}</s:Body></s:Envelope>").encode()


def _soap_fault(code: str, message: str, back_off_ms: int | None = None, detail: bool = True) -> bytes:
    extra = ""
    if back_off_ms is not None:
        extra = (f'<t:MessageXml><t:Value Name="BackOffMilliseconds">{back_off_ms}</t:Value></t:MessageXml>')
    inner = (f'<detail><e:ResponseCode xmlns:e="{_E}">{code}</e:ResponseCode>'
             f'<e:Message xmlns:e="{_E}">{message}</e:Message>{extra}</detail>') if detail else ""
    return _envelope(f'<s:Fault><faultcode xmlns:a="{_T}">a:{code}</faultcode>'
                     f'<faultstring xml:lang="en-US">{message}</faultstring>{inner}</s:Fault>')


def _get_item(item: str, cls: str = "Success", code: str = "NoError") -> bytes:
    return _envelope(f'<m:GetItemResponse><m:ResponseMessages><m:GetItemResponseMessage ResponseClass="{cls}">'
                     f"<m:ResponseCode>{code}</m:ResponseCode><m:Items>{item}</m:Items>"
                     "</m:GetItemResponseMessage></m:ResponseMessages></m:GetItemResponse>")


def _calendar_item(start: str = "2030-01-07T08:00:00Z", end: str = "2030-01-07T09:00:00Z",
                   item_id: str = '<t:ItemId Id="QUFBQQ==" ChangeKey="Q0sx" />') -> str:
    return (f"<t:CalendarItem>{item_id}<t:Subject>Weekly</t:Subject><t:Sensitivity>Normal</t:Sensitivity>"
            "<t:UID>040000008200E00074C5B7101A82E00800000000000000000000000000000001</t:UID>"
            f"<t:Start>{start}</t:Start><t:End>{end}</t:End><t:IsAllDayEvent>false</t:IsAllDayEvent>"
            "<t:IsCancelled>false</t:IsCancelled><t:CalendarItemType>Single</t:CalendarItemType>"
            "<t:Organizer><t:Mailbox><t:Name>Alice</t:Name><t:EmailAddress>alice@example.com</t:EmailAddress>"
            "<t:RoutingType>SMTP</t:RoutingType></t:Mailbox></t:Organizer></t:CalendarItem>")


_GOOD_FIND = _envelope(
    '<m:FindItemResponse><m:ResponseMessages><m:FindItemResponseMessage ResponseClass="Success">'
    '<m:ResponseCode>NoError</m:ResponseCode><m:RootFolder TotalItemsInView="1" IncludesLastItemInRange="true">'
    '<t:Items><t:CalendarItem><t:ItemId Id="QUFBQQ==" ChangeKey="Q0sx" /></t:CalendarItem></t:Items>'
    "</m:RootFolder></m:FindItemResponseMessage></m:ResponseMessages></m:FindItemResponse>")

# Every SOAP fault code syncd treats in its own way (calendars/ews/backend.py), and one it does not know.
_FAULTS = (
    ("ErrorServerBusy", "The server cannot service this request right now. Try again later.", 50),
    ("ErrorInternalServerError", "An internal server error occurred. The operation failed.", None),
    ("ErrorInvalidRequest", "The request is invalid.", None),
    ("ErrorSchemaValidation", "The request failed schema validation.", None),
    ("ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it.", None),
    ("ErrorAccessDenied", "Access is denied. Check credentials and try again.", None),
    ("ErrorImpersonateUserDenied", "The account does not have permission to impersonate the requested user.", None),
    ("ErrorFolderNotFound", "The specified folder could not be found in the store.", None),
    ("ErrorMailboxStoreUnavailable", "The mailbox database is temporarily unavailable.", None),
    ("ErrorInvalidSmtpAddress", "The SMTP address format is invalid.", None),
    ("ErrorInvalidServerVersion", "The specified server version is invalid.", None),
    ("ErrorTimeoutExpired", "The operation has timed out.", None),
    ("ErrorSomethingNewInExchange", "A code syncd has never seen.", None),
)

EWS: tuple[Malformed, ...] = (
    Malformed("html page with an XML content type", "FindItem", _HTML_PAGE, content_type=_XML),
    Malformed("empty body", "FindItem", b"", content_type=_XML),
    Malformed("XML body cut short", "FindItem", _GOOD_FIND[: len(_GOOD_FIND) * 2 // 3], content_type=_XML),
    Malformed("XML body cut inside a tag", "GetItem", _get_item(_calendar_item())[:700], content_type=_XML),
    Malformed("binary garbage", "FindItem", b"\x00\x01\xfe\xff<<<not xml", content_type=_XML),
    Malformed("oversized body of junk", "FindItem", b"<junk>" + b"x" * 3_000_000, content_type=_XML),
    Malformed("JSON instead of SOAP", "FindItem", b'{"error": "unavailable"}', content_type=_JSON),
    Malformed("envelope with an empty body", "FindItem", _envelope(""), content_type=_XML),
    Malformed("answer of another operation", "FindItem", _get_item(_calendar_item()), content_type=_XML),
    Malformed("FindItem success without RootFolder", "FindItem", _envelope(
        '<m:FindItemResponse><m:ResponseMessages><m:FindItemResponseMessage ResponseClass="Success">'
        "<m:ResponseCode>NoError</m:ResponseCode></m:FindItemResponseMessage></m:ResponseMessages>"
        "</m:FindItemResponse>"), content_type=_XML),
    Malformed("FindItem without response messages", "FindItem",
              _envelope("<m:FindItemResponse></m:FindItemResponse>"), content_type=_XML),
    Malformed("Start unparseable", "GetItem", _get_item(_calendar_item(start="next tuesday")), content_type=_XML),
    Malformed("Start impossible date", "GetItem", _get_item(_calendar_item(start="2030-02-30T08:00:00Z")),
              content_type=_XML),
    Malformed("End impossible hour", "GetItem", _get_item(_calendar_item(end="2030-01-07T25:00:00Z")),
              content_type=_XML),
    Malformed("End before Start", "GetItem", _get_item(_calendar_item(end="2030-01-07T07:00:00Z")),
              content_type=_XML),
    Malformed("item without ItemId", "GetItem", _get_item(_calendar_item(item_id="")), content_type=_XML),
    Malformed("error message of an unknown kind", "GetItem",
              _get_item("", cls="Error", code="ErrorSomethingNewInExchange"), content_type=_XML),
    *(Malformed(f"SOAP fault {code}", "FindItem", _soap_fault(code, message, back_off), 500, _XML)
      for code, message, back_off in _FAULTS),
    Malformed("SOAP fault without detail", "FindItem", _soap_fault("ErrorInternalServerError", "Failed", detail=False),
              500, _XML),
    Malformed("CreateItem answered cut short", "CreateItem", _envelope("<m:CreateItemResponse><m:Resp")[:-20],
              content_type=_XML),
    Malformed("CreateItem answered with an html page", "CreateItem", _HTML_PAGE, content_type=_XML),
    Malformed("UpdateItem answered cut short", "UpdateItem", _envelope("<m:UpdateItemResponse>")[:-30],
              content_type=_XML),
    Malformed("DeleteItem answered with an html page", "DeleteItem", _HTML_PAGE, content_type=_XML),
)


# --- Microsoft Graph ---------------------------------------------------------------------

_EVENT = {
    "@odata.etag": 'W/"Q0sx"', "id": "AAMkAGI2TG93AAA=", "type": "singleInstance", "seriesMasterId": None,
    "start": {"dateTime": "2030-01-07T08:00:00.0000000", "timeZone": "UTC"},
    "end": {"dateTime": "2030-01-07T09:00:00.0000000", "timeZone": "UTC"},
    "changeKey": "Q0sx", "originalStartTimeZone": "W. Europe Standard Time",
    "iCalUId": "040000008200E00074C5B7101A82E00800000000000000000000000000000001", "subject": "Weekly",
    "sensitivity": "normal", "isAllDay": False, "isCancelled": False, "showAs": "busy", "originalStart": None,
    "organizer": {"emailAddress": {"name": "Alice", "address": "alice@example.com"}},
}


def _event(**changes: Any) -> dict[str, Any]:
    return _changed(_EVENT, **changes)


def _view(*items: Any, **extra: Any) -> bytes:
    return _js({"@odata.context": "$metadata#events", "value": list(items), **extra})


def _at(text: Any, zone: Any = "UTC") -> dict[str, Any]:
    return {"dateTime": text, "timeZone": zone}


_GOOD_VIEW = _view(_EVENT)
_PROXY_PAGE = (b"<html><head><title>404 Not Found</title></head><body><center><h1>404 Not Found</h1>"
                     b"</center><hr><center>nginx</center></body></html>\n")

GRAPH: tuple[Malformed, ...] = (
    Malformed("html page with a JSON content type", "calendarView", _HTML_PAGE),
    Malformed("empty body", "calendarView", b""),
    Malformed("truncated body", "calendarView", _GOOD_VIEW[: len(_GOOD_VIEW) // 2]),
    Malformed("binary garbage", "calendarView", b"\x00\x01\xfe\xff not json {{{"),
    Malformed("oversized body of nulls", "calendarView",
              b'{"value":[' + b",".join([b"null"] * 400_000) + b"]}"),
    Malformed("top level is a list", "calendarView", _js([_EVENT])),
    Malformed("top level is null", "calendarView", b"null"),
    Malformed("no value", "calendarView", _js({"@odata.context": "$metadata#events"})),
    Malformed("value null", "calendarView", _js({"value": None})),
    Malformed("value is an object", "calendarView", _js({"value": _EVENT})),
    Malformed("an error object with status 200", "calendarView",
              _js({"error": {"code": "ErrorInternalServerError", "message": "Something went wrong."}})),
    Malformed("item is a number", "calendarView", _view(_EVENT, 42)),
    Malformed("item is null", "calendarView", _view(None, _EVENT)),
    Malformed("item without id", "calendarView", _view(_event(id=_DROP, iCalUId=_DROP))),
    Malformed("id is an object", "calendarView", _view(_event(id={"value": "AAMk"}))),
    Malformed("iCalUId is a list", "calendarView", _view(_event(iCalUId=["040000008200"]))),
    Malformed("changeKey and etag missing", "calendarView", _view(_event(changeKey=_DROP, **{"@odata.etag": _DROP}))),
    Malformed("start missing", "calendarView", _view(_event(start=_DROP))),
    Malformed("start is a string", "calendarView", _view(_event(start="2030-01-07T08:00:00Z"))),
    Malformed("start unparseable", "calendarView", _view(_event(start=_at("next tuesday")))),
    Malformed("start impossible date", "calendarView", _view(_event(start=_at("2030-02-30T08:00:00.0000000")))),
    Malformed("end impossible hour", "calendarView", _view(_event(end=_at("2030-01-07T25:00:00.0000000")))),
    Malformed("start is a number", "calendarView", _view(_event(start=_at(1893488400)))),
    Malformed("end before start", "calendarView", _view(_event(end=_at("2030-01-07T07:00:00.0000000")))),
    Malformed("time zone unknown", "calendarView", _view(_event(start=_at("2030-01-07T08:00:00", "Mars Time")))),
    Malformed("time zone a number", "calendarView", _view(_event(start=_at("2030-01-07T08:00:00", 60)))),
    Malformed("isCancelled a string", "calendarView", _view(_event(isCancelled="false"))),
    Malformed("isAllDay a string", "event.get", _js(_event(isAllDay="false"))),
    Malformed("organizer is a string", "calendarView", _view(_event(organizer="alice@example.com"))),
    Malformed("emailAddress is a list", "calendarView", _view(_event(organizer={"emailAddress": ["alice"]}))),
    Malformed("extended properties a number", "calendarView", _view(_event(singleValueExtendedProperties=7))),
    Malformed("occurrence with an unreadable original start", "calendarView",
              _view(_event(type="occurrence", originalStart="the first monday"))),
    Malformed("nextLink to another host", "calendarView",
              _view(_EVENT, **{"@odata.nextLink": "https://graph.example.net/v1.0/users/x/calendar/calendarView"})),
    Malformed("nextLink a number", "calendarView", _view(_EVENT, **{"@odata.nextLink": 2})),
    Malformed("html error page with status 404", "calendarView", _PROXY_PAGE, 404, "text/html"),
    Malformed("html error page with status 500", "calendarView", _PROXY_PAGE, 500, "text/html"),
    Malformed("delta page without value", "delta", _js({"@odata.deltaLink": "delta?$deltatoken=x"})),
    Malformed("delta page with neither link", "delta", _js({"value": []})),
    Malformed("delta answered with an html page", "delta", _HTML_PAGE),
    Malformed("delta link to another host", "delta",
              _js({"value": [], "@odata.deltaLink": "https://graph.example.net/v1.0/delta?$deltatoken=x"})),
    Malformed("stamp search answered without value", "events.list", _js({"@odata.context": "$metadata#events"})),
    Malformed("stamp search answered with an item that is a string", "events.list", _view("AAMkAGI2TG93AAA=")),
    Malformed("stamp search answered truncated", "events.list", _GOOD_VIEW[:40]),
    Malformed("event answered with an html page", "event.get", _HTML_PAGE),
    Malformed("event answered with an empty object", "event.get", _js({})),
    Malformed("event answered with an unreadable start", "event.get", _js(_event(start=_at("soon")))),
    Malformed("event answered with an html 404 page", "event.get", _PROXY_PAGE, 404, "text/html"),
    Malformed("create answered with an html page", "events.create", _HTML_PAGE, 201),
    Malformed("create answered truncated", "events.create", _js(_EVENT)[:60], 201),
    Malformed("create answered with a list", "events.create", _js([_EVENT]), 201),
    Malformed("create answered with an html 502 page", "events.create", _PROXY_PAGE, 502, "text/html"),
    Malformed("update answered with an html page", "event.update", _HTML_PAGE),
    Malformed("update answered truncated", "event.update", _js(_EVENT)[:50]),
    Malformed("update answered with an html 404 page", "event.update", _PROXY_PAGE, 404, "text/html"),
    Malformed("delete answered with an html 500 page", "event.delete", _PROXY_PAGE, 500, "text/html"),
    Malformed("delete answered with an html 404 page", "event.delete", _PROXY_PAGE, 404, "text/html"),
    Malformed("decline answered with an html 500 page", "event.decline", _PROXY_PAGE, 500, "text/html"),
)
