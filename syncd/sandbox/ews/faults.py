"""Faults the EWS sandbox serves: queued by a test or the campaign (`add`), or drawn at
random for a share of all requests (`randomly`).

Before the request takes effect: server_busy (ErrorServerBusy SOAP fault on HTTP 500 with
BackOffMilliseconds), http500 (ErrorInternalServerError SOAP fault), http503 (an HTML
page), http401, drop (the connection closes, nothing done).

After the request took effect (the answer is lost or spoilt): drop_after (closed
unanswered), slow_after (answered after `delay` s, past the client's timeout),
http500_after / http503_after (a gateway's HTML error page), hold (the answer held back by
an httpbase.Hold until released), answer_after (the Response given as `answer` instead: the
malformed-answer corpus).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..httpbase import Response, drop_connection, html_error_page
from .soap import fault

FAULT_KINDS = ("server_busy", "http500", "http503", "http401", "drop",
               "drop_after", "slow_after", "http500_after", "http503_after", "hold", "answer_after")
AFTER_KINDS = ("drop_after", "slow_after", "http500_after", "http503_after", "hold", "answer_after")
_XML = "text/xml; charset=utf-8"


@dataclass
class Fault:
    kind: str
    remaining: int
    op: str | None
    mailbox: str | None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def after(self) -> bool:
        return self.kind in AFTER_KINDS


class EwsFaults:
    """Thread-safe queue of faults; `take(op, mailbox)` spends one per matching request."""

    def __init__(self, unauthorized: Callable[[], Response]) -> None:
        self._unauthorized = unauthorized
        self._lock = threading.Lock()
        self._queue: list[Fault] = []
        self._random: tuple[float, tuple[str, ...], frozenset[str] | None, random.Random, dict[str, Any]] | None = None

    def add(self, kind: str, *, count: int = 1, op: str | None = None, mailbox: str | None = None,
            **params: Any) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, not {kind!r}")
        if count < 1:
            raise ValueError("count must be at least 1")
        if kind in ("hold", "answer_after") and params.get(kind.split("_")[0]) is None:
            raise ValueError(f"fault {kind!r} needs its {kind} argument")
        with self._lock:
            self._queue.append(Fault(kind, count, op, mailbox.lower() if mailbox else None, params))

    def randomly(self, rate: float, kinds: Sequence[str], seed: int | None = None,
                 ops: Sequence[str] | None = None, **params: Any) -> None:
        """Fail a `rate` share of the requests (to `ops`, if given) no queued fault applies
        to, each as one of `kinds` at random; rate 0 stops."""
        if not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        unknown = [k for k in kinds if k not in FAULT_KINDS or k in ("hold", "answer_after")]
        if unknown or (rate and not kinds):
            raise ValueError(f"random faults must be some of {FAULT_KINDS[:-2]}, not {unknown}")
        with self._lock:
            self._random = (rate, tuple(kinds), None if ops is None else frozenset(ops), random.Random(seed),
                            dict(params)) if rate else None

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._random = None

    def pending(self) -> int:
        with self._lock:
            return sum(f.remaining for f in self._queue)

    def take(self, op: str, mailbox: str | None) -> Fault | None:
        with self._lock:
            for item in self._queue:
                if (item.op is None or item.op == op) and (item.mailbox is None or item.mailbox == mailbox):
                    item.remaining -= 1
                    if item.remaining == 0:
                        self._queue.remove(item)
                    return item
            if self._random is not None:
                rate, kinds, ops, rng, params = self._random
                if (ops is None or op in ops) and rng.random() < rate:
                    return Fault(rng.choice(kinds), 1, op, mailbox, params)
        return None

    def before(self, item: Fault) -> Response:
        """The answer to a request refused before it took effect."""
        if item.kind == "server_busy":
            body = fault("ErrorServerBusy", "The server cannot service this request right now. Try again later.",
                         int(item.params.get("back_off_ms", 100)))
            return Response(500, body, _XML)
        if item.kind == "http500":
            return Response(500, fault("ErrorInternalServerError", "An internal server error occurred."), _XML)
        if item.kind == "http503":
            return Response(503, b"<html><body>Service Unavailable</body></html>", "text/html; charset=utf-8")
        if item.kind == "http401":
            return self._unauthorized()
        return drop_connection()

    @staticmethod
    def after(item: Fault, response: Response) -> Response:
        """The answer to a request that took effect, spoilt as the fault says."""
        if item.kind == "slow_after":
            response.delay = float(item.params.get("delay", 2.0))
            return response
        if item.kind == "hold":
            response.hold = item.params["hold"]
            return response
        if item.kind == "http500_after":
            return html_error_page(500, "Internal Server Error")
        if item.kind == "http503_after":
            return html_error_page(503, "Service Unavailable")
        if item.kind == "answer_after":
            answer: Response = item.params["answer"]
            return answer.canned()
        return drop_connection()
