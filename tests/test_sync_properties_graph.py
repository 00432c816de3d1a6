"""The reconciler's properties (tests/test_sync_properties.py) with syncd on Microsoft Graph:
the same state machine, people acting on the same calendars (through the EWS sandbox, which
shares the Graph sandbox's store), crashes included; the calendar faults are Graph's (throttling,
dropped connections, answers lost after the work was done, garbage, lost delta rounds, a refused
token)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule
from test_sync_properties import Reconciler


class GraphReconciler(Reconciler):
    backend = "graph"

    @rule(kind=st.sampled_from(["http429", "http503", "drop", "lost_answer", "garbage", "sync_state_not_found",
                                "http401"]),
          op=st.sampled_from([None, "calendarView", "event.get", "events.list", "events.create", "event.update",
                              "event.delete", "event.decline"]),
          count=st.integers(1, 5))
    def exchange_fails(self, kind: str, op: str | None, count: int) -> None:
        assert self.world.graph is not None
        self.world.graph.inject(kind, count=count, op=op, retry_after=1)
        self.faults = True


GraphReconciler.TestCase.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
TestGraphReconciler = GraphReconciler.TestCase
