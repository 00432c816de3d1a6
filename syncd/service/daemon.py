"""`syncd run`: the long-running service.

    start  instance lock -> database (upgraded when behind) -> health endpoint (503 while
           starting) -> pacer from the ledger -> settle interrupted writes -> one job per
           room -> READY=1
    run    every sync.interval_seconds per room (never two jobs at once for one room): one
           cheap Exchange change check, an Ultimo read when the pacer grants one, and a
           sync when either has something; a heartbeat job feeds the watchdog, keeps the
           pacer's snapshot and checks the lock
    stop   SIGTERM/SIGINT: no new write starts, the write in flight finishes and is
           committed, jobs end, STOPPING=1, exit 0

A standby (`--standby` or `service.standby`, PostgreSQL only) starts its health endpoint
(role "standby"), says READY=1 with a standby status, and waits for the instance lock
(`syncd.service.lock`: taken within about 1 s of the active process dying, about 12 s of
its machine vanishing); then it starts as above, settling the active instance's
interrupted writes from the journal before anything else.

Failures back off exponentially up to a cap: a failing room alone, a failing system
(unreachable, refusing credentials, over quota) for every room. The scheduler decides
only when; what a sync does is `syncd.engine.cycle.SyncEngine.sync_room`, as for reconcile.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine, or_, update
from sqlalchemy.exc import SQLAlchemyError

from syncd.config.schema import Config
from syncd.core.model import Room
from syncd.engine.cycle import RoomResult, SyncEngine, start_run
from syncd.engine.executor import SYSTEM_FAILURES
from syncd.errors import CalendarError, SyncdError, UsageError
from syncd.service import lock
from syncd.service.estimate import carried_over
from syncd.service.health import HealthServer, HealthSnapshot
from syncd.service.metrics import ServiceMetrics
from syncd.service.pacer import Pacer, save_snapshot, start_hold_off, start_state
from syncd.service.rates import RateState
from syncd.service.readplan import FULL, NEAR, ReadGrant, ReadPolicy
from syncd.service.sdnotify import Notifier
from syncd.service.standby import wait_for_lock
from syncd.service.state import ServiceState
from syncd.service.status import collect_status
from syncd.store import db
from syncd.store.schema import RoomState
from syncd.ultimo.budget import DailyBudget, RateLimiter

log = structlog.get_logger("syncd.daemon")


@dataclass(frozen=True)
class ServiceOptions:
    """Knobs the configuration does not carry (tests make them small)."""

    backoff_base: float | None = None      # first back-off; default sync.interval_seconds
    backoff_cap: float = 1800.0            # longest back-off
    heartbeat_seconds: float = 5.0
    snapshot_seconds: float = 30.0
    workers: int = 4
    stuck_seconds: float | None = None     # a room job running longer is "stuck"; default max(900, 10 x interval)
    pacer_max_wait: float = 60.0
    hold_off: float | None = None          # None: from the ledger (pacer.start_hold_off)


BuildSync = Callable[[Config, Engine, Pacer, threading.Event, int], SyncEngine]


def build_sync(cfg: Config, engine: Engine, pacer: Pacer, stop: threading.Event, run_id: int) -> SyncEngine:
    """The production SyncEngine: the configured calendar backend, and an Ultimo client whose
    every call passes the pacer."""
    from syncd.calendars.factory import open_calendar
    from syncd.ultimo.client import UltimoClient

    ultimo = UltimoClient(cfg.ultimo, budget=pacer, limiter=RateLimiter(cfg.ultimo.calls_per_10s, 10.0))
    return SyncEngine(cfg, engine, calendar=open_calendar(cfg), ultimo=ultimo, stop=stop, run_id=run_id)


class Service:
    """One `syncd run` process. `run()` blocks until stopped; gives the exit status."""

    def __init__(self, cfg: Config, *, options: ServiceOptions | None = None, notifier: Notifier | None = None,
                 build: BuildSync = build_sync, now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 standby: bool | None = None) -> None:
        self.cfg = cfg
        self.standby = cfg.service.standby if standby is None else standby
        self.options = options or ServiceOptions()
        self.notifier = notifier or Notifier()
        self._build = build
        self._now = now
        self.rooms = [Room(r.mailbox, r.space_id) for r in cfg.rooms]
        self.interval = float(cfg.sync.interval_seconds)
        self.stop_event = threading.Event()
        self.exit_status = 0
        self.unfinished = False                 # jobs still running when the grace ran out
        self.health: HealthServer | None = None
        self.metrics = ServiceMetrics(self.snapshot)
        self.state = ServiceState(self.rooms, now=now, base=self.options.backoff_base or self.interval,
                                  cap=max(self.options.backoff_cap, self.interval),
                                  stuck_seconds=self.options.stuck_seconds or max(900.0, 10 * self.interval))
        self._pacer: Pacer | None = None
        self._sync: SyncEngine | None = None
        self._engine: Engine | None = None
        self._run_id: int | None = None
        self._last_snapshot = 0.0

    # --- control ---------------------------------------------------------------------

    def request_stop(self, reason: str = "requested", status: int | None = None) -> None:
        """Ask the service to stop (from a signal handler or any thread)."""
        if status is not None:
            self.exit_status = status
        if not self.stop_event.is_set():
            log.info("service.stopping", reason=reason)
            self.stop_event.set()
            if self._pacer is not None:
                self._pacer.stop()

    def run(self) -> int:
        """Start, serve until stopped, stop. Raises AnotherInstanceRunning, DatabaseError or
        ConfigError when it cannot start."""
        restore = self._install_signals()
        # A room job still running at its next tick is skipped by design (coalesce, one
        # instance): not worth a warning each time.
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
        held: lock.InstanceLock | None = None
        try:
            held = self._stand_by() if self.standby else lock.acquire(self.cfg.database.url)
            if held is None:
                return self.exit_status              # stopped while standing by
            self._start_health()
            self._engine = db.open_database(self.cfg)
            scheduler = self._start()
            try:
                self._serve(held)
            finally:
                self._shutdown(scheduler)
        finally:
            if self.health is not None:
                self.health.stop()
            if self._engine is not None:
                self._engine.dispose()
            if held is not None:
                held.release()
            restore()
        return self.exit_status

    def _start_health(self) -> None:
        if self.cfg.service.health_listen and self.health is None:
            self.health = HealthServer(self.cfg.service.health_listen, self.snapshot, metrics=self.metrics,
                                       status=self.status).start()
            log.info("service.health_listening", url=self.health.url)

    def _stand_by(self) -> lock.InstanceLock | None:
        """Take the instance lock, waiting for it as a standby; None when stopped first."""
        self.state.standby = True
        self._start_health()
        try:
            return wait_for_lock(self.cfg.database.url, self.stop_event, self.notifier)
        finally:
            self.state.standby = False

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for sig in previous:
            signal.signal(sig, lambda signum, _frame: self.request_stop(signal.Signals(signum).name))

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    # --- start ------------------------------------------------------------------------

    def _start(self) -> BackgroundScheduler:
        engine = self._engine
        assert engine is not None
        now = self._now()
        names = [r.mailbox for r in self.rooms]
        policy = ReadPolicy.from_config(self.cfg)
        hold_off = self.options.hold_off if self.options.hold_off is not None else start_hold_off(engine, now)
        taken = start_state(engine, policy, now)
        pacer = Pacer(policy, names, DailyBudget(engine, self.cfg.ultimo.daily_call_budget),
                      level=taken.level, window=taken.window, profile=taken.profile, sleep=self.stop_event.wait,
                      max_wait=self.options.pacer_max_wait, hold_off=hold_off)
        pacer.observe_ledger(engine)
        self._pacer = pacer
        self.state.pacer = pacer
        self.state.load(engine, pacer)
        estimate = pacer.planner.estimate(now)
        fields = {"rooms": len(self.rooms), "daily_call_budget": self.cfg.ultimo.daily_call_budget,
                  "worst_case_bound_s": round(estimate.bound_seconds or 0),
                  "staleness": {r.room: {"near_term_s": round(r.near_seconds), "far_s": round(r.far_seconds)}
                                for r in estimate.rooms}}
        fields["day_profile"] = pacer.planner.day_message(self.cfg.display_zone, now)
        if estimate.fresh:
            log.info("service.ultimo_budget", message=estimate.message(), **fields)
        else:
            log.warning("service.ultimo_budget_too_small", message=estimate.message(), **fields)
        before = taken.window.count(now.timestamp())
        note = carried_over(before, taken.level, policy.capacity, policy.rate, policy.daily_budget)
        if note is not None:
            log.info("service.ultimo_calls_carried_over", message=note, calls_last_24h=before,
                     burst=round(taken.level), burst_capacity=round(policy.capacity))
        self._run_id = start_run(engine, "service", now)
        self._sync = self._build(self.cfg, engine, pacer, self.stop_event, self._run_id)
        self.state.throttling = getattr(self._sync.calendar, "throttling", None)
        try:
            settled = self._sync.settle_journal()
            if settled:
                log.info("service.journal_settled", writes=settled)
        except SyncdError as e:
            # Each room settles its own again before its first sync.
            log.warning("service.journal_unsettled", error=str(e))
        scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(self.options.workers), "service": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": max(1, int(self.interval))},
        )
        for i, room in enumerate(self.rooms):
            # Spread the rooms over one interval, so their calls do not all come at once.
            first = datetime.fromtimestamp(now.timestamp() + i * self.interval / len(self.rooms), UTC)
            scheduler.add_job(self._room_job, "interval", args=[room], seconds=self.interval, next_run_time=first,
                              id=f"room:{room.mailbox}", name=f"sync {room.mailbox}")
        scheduler.add_job(self._heartbeat, "interval", seconds=self.options.heartbeat_seconds, next_run_time=now,
                          id="heartbeat", executor="service")
        scheduler.start()
        return scheduler

    # --- serve -----------------------------------------------------------------------

    def _serve(self, held: lock.InstanceLock) -> None:
        self.state.ready = True
        self.notifier.ready(self.state.status_line())
        log.info("service.ready", rooms=len(self.rooms), interval_seconds=self.interval,
                 lock=held.description, watchdog_seconds=self.notifier.watchdog_seconds)
        tick = min(self.notifier.watchdog_seconds or 5.0, 5.0)
        while not self.stop_event.wait(tick):
            if self.notifier.watchdog_seconds and self.state.alive(3 * self.options.heartbeat_seconds + tick):
                self.notifier.watchdog()
            if not held.held():
                log.error("service.lock_lost", lock=held.description)
                self.request_stop("instance lock lost", status=1)

    def _heartbeat(self) -> None:
        self.state.beat()
        mono = time.monotonic()
        if mono - self._last_snapshot < self.options.snapshot_seconds:
            return
        self._last_snapshot = mono
        self._persist()
        self.notifier.status(self.state.status_line())

    def _persist(self, *, final: str | None = None) -> None:
        if self._pacer is None or self._engine is None or self._run_id is None:
            return
        try:
            if final is None:
                foreign = self._pacer.observe_ledger(self._engine)
                if foreign:
                    log.info("service.ultimo_calls_elsewhere", calls=foreign)
            save_snapshot(self._engine, self._run_id, self._pacer.snapshot(), self.state.totals(),
                          status=final, finished_at=self._now() if final else None)
            record_checks(self._engine, self.state.take_checks())
            rates = self._pacer.take_rates()
            try:
                record_rates(self._engine, rates)
            except SyncdError:
                self._pacer.keep_rates(rates)
                raise
        except SyncdError as e:
            self.state.count_error("database")
            log.error("service.snapshot_failed", error=str(e))

    # --- one room ----------------------------------------------------------------------

    def _room_job(self, room: Room) -> None:
        if self.stop_event.is_set() or self._sync is None or self._pacer is None:
            return
        with self.state.running(room.mailbox):
            try:
                self._room_pass(room, self._sync, self._pacer)
            except Exception:  # noqa: BLE001 - a bug in one pass must not end the room's job
                self.state.count_error("internal")
                log.exception("room.job_failed", room=room.mailbox)

    def _room_pass(self, room: Room, sync: SyncEngine, pacer: Pacer) -> None:
        state = self.state
        if not state.may_run(room.mailbox, ("exchange",)):
            return
        try:
            changed = sync.exchange_changed(room)
        except CalendarError as e:
            state.failed(room.mailbox, "exchange" if isinstance(e, SYSTEM_FAILURES) else None, str(e))
            return
        if changed:
            pacer.note_change(room.mailbox)
        # The check has moved the stored sync state on: a change it saw is remembered
        # ("dirty") until a read of the calendar succeeds. Every room starts dirty.
        dirty = state.exchange_checked(room.mailbox, changed)
        if not state.may_run(room.mailbox, ("ultimo",)):
            return          # Exchange-side changes would be written to Ultimo: wait for it
        grant = pacer.claim(room.mailbox)
        if not dirty and grant is None:
            log.debug("room.checked", room=room.mailbox)
            return
        lags = state.lags(room.mailbox)
        refused = pacer.refusals_here()
        kwargs: dict[str, Any] = {}
        if grant is not None and grant.scope == NEAR:
            kwargs["ultimo_window"] = grant.window
        # An Ultimo read comes with an Exchange read: an event is created in Exchange only
        # when Exchange was read too (Exchange does not refuse a double booking).
        started = time.monotonic()
        result = sync.sync_room(room, read_exchange=True, read_ultimo=grant is not None, **kwargs)
        self.metrics.cycle_seconds.observe(time.monotonic() - started)
        paced = pacer.refusals_here() > refused
        if grant is not None:
            pacer.done(grant, ok=result.ultimo_read,
                       rows=result.ultimo_count if grant.scope == FULL else None, found=ultimo_side_changes(result))
        self._record(room, result, grant, paced=paced, lags=lags, changed=dirty)

    def _record(self, room: Room, result: RoomResult, grant: ReadGrant | None, *, paced: bool,
                lags: dict[str, float | None], changed: bool) -> None:
        state, name = self.state, room.mailbox
        writes = sum(result.writes.values())
        if writes or result.conflicts_new:
            self._pacer.note_change(name)  # type: ignore[union-attr]
        state.synced(name, result, grant)
        if result.failed_system and paced and result.failed_system == "ultimo":
            state.count_error("paced")
        elif result.failed_system:
            state.failed(name, result.failed_system, "; ".join(result.errors) or "failed")
        elif result.errors or result.halted:
            state.failed(name, None, "; ".join(result.errors) or str(result.halted))
        else:
            state.succeeded(name)
        log.info("room.cycle", room=name, space_id=room.space_id, exchange_changed=changed,
                 ultimo_read=grant.scope if grant is not None and result.ultimo_read else None,
                 ultimo_calls=result.ultimo_calls, calendar_calls=result.calendar_calls + 1, writes=writes,
                 conflicts_new=result.conflicts_new, conflicts_open=result.conflicts_open,
                 errors=len(result.errors), halted=result.halted, paced=paced,
                 exchange_lag_s=_round(lags["exchange"]), ultimo_lag_s=_round(lags["ultimo"]),
                 seconds=round(result.seconds, 3))

    # --- stop ----------------------------------------------------------------------------

    def _shutdown(self, scheduler: BackgroundScheduler) -> None:
        self.state.ready = False
        self.state.stopping = True
        self.request_stop("shutting down")
        self.notifier.stopping("stopping: finishing the write in flight")
        scheduler.shutdown(wait=False)
        grace = self.cfg.service.shutdown_grace_seconds
        if not self.state.wait_idle(grace):
            self.unfinished = True
            self.exit_status = self.exit_status or 1
            log.error("service.stop_timeout", grace_seconds=grace, running=self.state.running_rooms())
        self._persist(final="ok" if self.exit_status == 0 else "failed")
        if self._sync is not None and not self.unfinished:
            self._sync.close()
        log.info("service.stopped", exit_status=self.exit_status, **self.state.totals())

    # --- health ----------------------------------------------------------------------------

    def snapshot(self) -> HealthSnapshot:
        return self.state.snapshot(self.cfg.ultimo.daily_call_budget)

    def status(self) -> dict[str, Any]:
        """What `syncd status` prints, as data (the health endpoint's /status)."""
        engine = self._engine
        if engine is None:
            raise RuntimeError("the service has not opened its database yet")
        return collect_status(self.cfg, engine, in_service=True)


def record_checks(engine: Engine, checks: dict[str, datetime]) -> None:
    """Store when each room's calendar was last confirmed unchanged (RoomState.exchange_read_at,
    never moved backwards). Raises DatabaseError."""
    if not checks:
        return
    try:
        with engine.begin() as conn:
            for room, at in checks.items():
                conn.execute(update(RoomState).where(
                    RoomState.room == room,
                    or_(RoomState.exchange_read_at.is_(None), RoomState.exchange_read_at < at),
                ).values(exchange_read_at=at))
    except SQLAlchemyError as e:
        raise db.database_error(e, engine.url, "write") from None


def record_rates(engine: Engine, rates: dict[str, RateState]) -> None:
    """Keep each room's learned change rate (RoomState.ultimo_changes, ultimo_exposure_s,
    rates_at) so that a restarted service starts from it. Raises DatabaseError."""
    if not rates:
        return
    try:
        with engine.begin() as conn:
            for room, st in rates.items():
                conn.execute(update(RoomState).where(RoomState.room == room).values(
                    ultimo_changes=st.changes, ultimo_exposure_s=st.exposure,
                    rates_at=None if st.at is None else datetime.fromtimestamp(st.at, UTC)))
    except SQLAlchemyError as e:
        raise db.database_error(e, engine.url, "write") from None


def ultimo_side_changes(result: RoomResult) -> int:
    """Changes made in Ultimo (not by syncd) that a pass's read found: the writes they
    caused in the calendar."""
    w = result.writes
    return int(w.get("exchange_created", 0) + w.get("exchange_moved", 0) + w.get("exchange_removed", 0))


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def cmd_run(cfg: Config, args: Any) -> int:
    """`syncd run [--standby]`: gives the exit status (0 after SIGTERM/SIGINT)."""
    standby = bool(getattr(args, "standby", False)) or cfg.service.standby
    if standby and not lock.supports_standby(cfg.database.url):
        raise UsageError("--standby needs PostgreSQL (database.url is SQLite): on SQLite only one machine "
                         "runs syncd")
    service = Service(cfg, standby=standby)
    status = service.run()
    if service.unfinished:
        # A job is stuck in a call past the grace period: its thread would keep the
        # interpreter from exiting. Everything is committed or journalled; go.
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(status)
    return status
