"""Regression (issue 9, defect 4): `calls_per_10s` holds as Ultimo counts, on arrival.

The client's rate limiter knows when a call starts and when its answer arrives; Ultimo
counts the call when it arrives, somewhere between. Here a loopback hop between client and
Ultimo sandbox holds chosen requests back before passing them on (a slow network path);
the sandbox counts arrivals in its own sliding window and answers 429 past its limit, so
any 429 is a window in which Ultimo saw more calls than the configured share."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from syncd.config.schema import UltimoConfig
from syncd.core.model import TimeWindow
from syncd.sandbox.httpbase import LoopbackServer, Request, Response
from syncd.sandbox.ultimo.server import UltimoSandbox
from syncd.ultimo.budget import DailyBudget, RateLimiter
from syncd.ultimo.client import UltimoClient

KEY = "rate-key"
SHARE, WINDOW = 5, 1.0       # the share and the window, shrunk from 50 per 10 s to keep the test short


class SlowPath:
    """Passes requests on to `target`, holding the n-th back `delays[n]` seconds first."""

    def __init__(self, target: str, delays: dict[int, float]) -> None:
        self.target = target
        self.delays = delays
        self.seen = 0
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=10)
        self._server = LoopbackServer(self._handle).start()
        self.url = self._server.url

    def _handle(self, request: Request) -> Response:
        with self._lock:
            n, self.seen = self.seen, self.seen + 1
        time.sleep(self.delays.get(n, 0.0))
        answer = self._http.post(self.target + request.path, content=request.body,
                                 headers={k: v for k, v in request.headers.items() if k.lower() != "host"})
        return Response(answer.status_code, answer.content, answer.headers.get("content-type", ""))

    def close(self) -> None:
        self._server.stop()
        self._http.close()


@pytest.fixture
def ultimo() -> Iterator[UltimoSandbox]:
    box = UltimoSandbox(api_keys=(KEY,), rate_limit=SHARE, rate_window=WINDOW).start()
    box.add_space("C-25")
    try:
        yield box
    finally:
        box.stop()


@pytest.mark.parametrize("slow", [[0], [0, 6], [2, 3, 9]])
def test_the_configured_share_holds_where_ultimo_counts(ultimo: UltimoSandbox, slow: list[int]) -> None:
    """Sequential reads; the `slow` ones take 0.4 s to reach Ultimo. Counting each call from
    its start only, the call after a window's worth started one window after the slow one
    began, while Ultimo had counted the slow one 0.4 s later: one call too many."""
    path = SlowPath(ultimo.url.removesuffix("/api/V1"), dict.fromkeys(slow, 0.4))
    cfg = UltimoConfig(base_url=path.url + "/api/V1", api_key=KEY, max_retries=0, timeout_seconds=5.0)
    client = UltimoClient(cfg, budget=DailyBudget(None, 10_000), limiter=RateLimiter(SHARE, WINDOW))
    day = datetime.now(UTC) + timedelta(days=1)
    try:
        for _ in range(12):
            client.get_reservations("C-25", TimeWindow(day, day + timedelta(hours=1)))
    finally:
        client.close()
        path.close()
    statuses = [call.status for call in ultimo.journal]
    assert statuses == [200] * 12, "Ultimo counted more calls in one window than the configured share"
