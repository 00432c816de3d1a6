"""Faults, throttling and the request log of the Graph sandbox.

Fault kinds (`GraphSandbox.inject`), each for the next `count` requests matching `op` and
`mailbox` (None matches any):

- ``sync_state_not_found``: 410 ``SyncStateNotFound`` (a delta round must start again);
- ``duplicate_id``: the next delta answer repeats an entry across its first page boundary;
- ``tombstone_without_type``: the next delta answer's ``@removed`` entries carry no ``type``;
- ``http429`` / ``http503`` / ``http504``: throttled or unavailable, with ``Retry-After``
  (``retry_after`` seconds; None leaves the header out);
- ``http401``: 401 InvalidAuthenticationToken although the token is good;
- ``drop``: the connection closes without an answer, nothing done;
- ``slow``: the request is carried out and answered after ``delay`` seconds (a client timeout);
- ``lost_answer``: the request is carried out, then the connection closes without an answer;
- ``hold``: the request is carried out and its answer held back until the given
  `httpbase.Hold` is released (then sent, or with ``drop`` the connection closed): the crash
  campaign kills syncd in between;
- ``garbage``: 200 with a body that is not JSON;
- ``answer_after``: the request is carried out, then answered with the given `answer` (a
  `httpbase.Response`: the malformed answers of `syncd.sandbox.corpus.GRAPH`).

`Faults.randomly` also fails a share of the calendar requests no queued fault applies to
(the crash campaign's fault schedules).

Operation names (for `op`, and in the request log): ``token``, ``discovery``, ``calendar``,
``calendarView``, ``delta``, ``events.list``, ``events.create``, ``event.get``, ``event.update``,
``event.delete``, ``event.decline``, ``event.accept``, ``event.instances``, ``translate``,
``user``.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..httpbase import Hold, Response, drop_connection, garbage_response, json_response

__all__ = ["AFTER_WORK", "Budget", "Call", "DATA_FAULTS", "FAULT_KINDS", "Faults", "InjectedFault", "throttled"]

RESPONSE_FAULTS = ("sync_state_not_found", "http429", "http503", "http504", "http401", "drop", "lost_answer",
                   "garbage", "slow", "hold", "answer_after")
AFTER_WORK = ("lost_answer", "slow", "hold", "answer_after")   # applied to the answer of work carried out
_GIVEN = ("hold", "answer_after")   # kinds that take an object of their own, so never random
DATA_FAULTS = ("duplicate_id", "tombstone_without_type")
FAULT_KINDS = RESPONSE_FAULTS + DATA_FAULTS


@dataclass
class InjectedFault:
    kind: str
    remaining: int
    op: str | None
    mailbox: str | None
    retry_after: float | None
    delay: float = 0.0
    hold: Hold | None = None
    answer: Response | None = None


class Faults:
    """Injected faults, taken one per matching request, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[InjectedFault] = []
        self._random: tuple[float, tuple[str, ...], random.Random, float | None, float] | None = None

    def add(self, kind: str, count: int, op: str | None, mailbox: str | None, retry_after: float | None,
            delay: float = 0.0, hold: Hold | None = None, answer: Response | None = None) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, not {kind!r}")
        if count < 1:
            raise ValueError("count must be at least 1")
        if kind in DATA_FAULTS and op not in (None, "delta"):
            raise ValueError(f"{kind} applies to delta answers only")
        if (kind == "hold") != (hold is not None):
            raise ValueError("a hold fault takes a Hold, and only it does")
        if (kind == "answer_after") != (answer is not None):
            raise ValueError("an answer_after fault takes an answer, and only it does")
        with self._lock:
            self._items.append(InjectedFault(kind, count, op, mailbox.lower() if mailbox else None, retry_after,
                                             delay, hold, answer))

    def randomly(self, rate: float, kinds: tuple[str, ...], *, seed: int | None = None,
                 retry_after: float | None = 1.0, delay: float = 5.0) -> None:
        """From now on fail a `rate` share of the calendar requests (not the token's) no
        queued fault applies to, each as one of `kinds` (response faults but hold and answer_after),
        reproducibly with `seed`; rate 0 stops."""
        if not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        wrong = [k for k in kinds if k not in RESPONSE_FAULTS or k in _GIVEN]
        if wrong or (rate and not kinds):
            raise ValueError(f"random faults must be some of {RESPONSE_FAULTS} but {' and '.join(_GIVEN)}, "
                             f"not {wrong or 'none'}")
        with self._lock:
            self._random = (rate, tuple(kinds), random.Random(seed), retry_after, delay) if rate else None

    def take(self, op: str, mailbox: str | None, kinds: tuple[str, ...]) -> InjectedFault | None:
        with self._lock:
            for item in self._items:
                if item.kind not in kinds:
                    continue
                if item.kind in DATA_FAULTS and op != "delta":
                    continue
                if (item.op is None or item.op == op) and (item.mailbox is None or item.mailbox == mailbox):
                    item.remaining -= 1
                    if item.remaining == 0:
                        self._items.remove(item)
                    return item
            if self._random is not None and mailbox is not None:
                # Asked once before the work and once after: each time for the kinds of that
                # moment, at their share of the rate.
                rate, chosen, rng, retry_after, delay = self._random
                here = [k for k in chosen if k in kinds]
                if here and rng.random() < rate * len(here) / len(chosen):
                    return InjectedFault(rng.choice(here), 1, op, mailbox, retry_after, delay)
        return None

    def pending(self) -> int:
        with self._lock:
            return sum(i.remaining for i in self._items)

    def clear(self) -> None:
        """Forget queued faults and stop random ones."""
        with self._lock:
            self._items.clear()
            self._random = None


def throttled(status: int, code: str, message: str, retry_after: float | None) -> Response:
    response = json_response(status, {"error": {"code": code, "message": message}})
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(0, math.ceil(retry_after)))
    return response


def fault_response(fault: InjectedFault) -> Response:
    """The answer for a response fault (lost_answer is handled by the caller, after the work)."""
    if fault.kind == "sync_state_not_found":
        return json_response(410, {"error": {"code": "SyncStateNotFound", "message":
                                             "The sync state generation is not found; generation=0;sandbox."}})
    if fault.kind == "http429":
        return throttled(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.",
                         fault.retry_after)
    if fault.kind == "http503":
        return throttled(503, "ServiceUnavailable", "The service is temporarily unavailable (MailboxConcurrency).",
                         fault.retry_after)
    if fault.kind == "http504":
        return throttled(504, "GatewayTimeout", "The gateway did not receive a timely response.", fault.retry_after)
    if fault.kind == "http401":
        response = json_response(401, {"error": {"code": "InvalidAuthenticationToken",
                                                 "message": "Access token validation failure."}})
        response.headers["WWW-Authenticate"] = 'Bearer realm="", error="invalid_token"'
        return response
    if fault.kind == "garbage":
        return garbage_response()
    return drop_connection()


class Budget:
    """Requests per app and mailbox in a sliding window, and requests in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], deque[float]] = {}
        self._in_flight: dict[tuple[str, ...], int] = {}

    def spend(self, app: str, mailbox: str, limit: int | None, window: float) -> float | None:
        """Count one request; gives None if within the budget, else the seconds until it is not."""
        if limit is None:
            return None
        now = time.monotonic()
        with self._lock:
            seen = self._seen.setdefault((app, mailbox), deque())
            while seen and seen[0] <= now - window:
                seen.popleft()
            if len(seen) >= limit:
                return seen[0] + window - now
            seen.append(now)
            return None

    def enter(self, key: tuple[str, ...], limit: int) -> bool:
        """Start a request under `key`; False (and nothing counted) when `limit` are in flight."""
        with self._lock:
            if self._in_flight.get(key, 0) >= limit:
                return False
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            return True

    def leave(self, key: tuple[str, ...]) -> None:
        with self._lock:
            self._in_flight[key] = max(0, self._in_flight.get(key, 0) - 1)

    def reset(self) -> None:
        with self._lock:
            self._seen.clear()


@dataclass(frozen=True)
class Call:
    """One request as the sandbox saw it. The Authorization header's text is never kept: only
    whether one was present, and the app its token belongs to."""

    time: float
    method: str
    path: str
    query: dict[str, list[str]]
    op: str
    mailbox: str | None
    authorized: bool
    app: str | None
    status: int
    prefer: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
