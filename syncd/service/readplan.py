"""When to read Ultimo: which room's window is due, within what the pacing allows.

Pure: no I/O, no threads, no clock of its own; every time is passed in (aware datetimes).

Pacing (`syncd.service.bucket`): every Ultimo call takes a token from one bucket whose size and
rate keep any 24 hours within the daily budget. Reads leave `read_reserve` tokens for
writes, so writes go first, and have a bucket of their own refilled at their share of
the rate (`1 - write_share`): the rest is banked, up to the main bucket's size, for the
writes of the busy hours.

The day. Both buckets refill along a `Shape` learned from when Ultimo-side changes come
(`syncd.service.rates.DayProfile`, pooled over rooms): reads as the square root of each
hour's change rate, at least `quiet_floor` of their average pace, busy for two hours
after a busy hour, and writes in the same hours. Until a whole day is learned, a guess
(working hours busier, in the configured zone) stands in for what is not. A day's total is
the same as flat; `Pacer`'s 24-hour window holds the budget while the shape moves, and the
bucket refills slower where spending all it gets would fill that window.

Choosing. Each room has a near-term window (now - past_days until the end of the
`near_term_days`-th local day: today and tomorrow by default) and the full window. A
read's value is the waiting piled up since each part was last read (the square of its
age when changes come evenly; hours weighted by the learned profile), times the room's
change rate (learned, `syncd.service.rates.ChangeRates`), the near-term part weighted by
`near_weight` and by an activity boost that decays after the room last changed. A full
read covers both parts; a near-term read is worth choosing only where it costs fewer
calls (rooms with more rows than one Ultimo page). Free tokens go to the due reads with
the most value per call, in that order, after the whole windows the bounds make due
(`_due_by_bound`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from syncd.core.model import TimeWindow, utc
from syncd.service.bucket import FLAT, PacerSnapshot, Shape, TokenBucket, epoch, from_epoch, initial_level
from syncd.service.estimate import DAY, Estimate, estimate, human
from syncd.service.rates import (
    OFFICE_HOURS,
    ChangeRates,
    DayProfile,
    PendingFit,
    RatePrior,
    busy_hours,
    office_prior,
    read_shape,
)
from syncd.ultimo.paging import calls_for_rows

__all__ = ["FULL", "NEAR", "Estimate", "PacerSnapshot", "ReadGrant", "ReadPlanner", "ReadPolicy", "TokenBucket",
           "calls_for_rows", "estimate", "human", "initial_level"]

NEAR = "near"
FULL = "full"
FORCED = 1e15       # score of a read the worst-case bound forces (above any value per call)


@dataclass(frozen=True, slots=True)
class ReadPolicy:
    """The numbers the planner works with; `from_config` derives them from the configuration."""

    daily_budget: int
    interval_seconds: float = 60.0      # no room is read more often than its checks
    past_days: int = 1
    future_days: int = 30
    near_term_days: int = 2
    timezone: str = "Europe/Amsterdam"
    page_limit: int = 100
    capacity: float = 500.0             # bucket size: the largest burst, the bank for busy hours
    read_reserve: float = 50.0          # tokens reads leave for writes
    read_burst: float = 100.0           # size of the reads' own bucket
    near_weight: float = 3.0            # near-term staleness counts this much more than far
    activity_boost: float = 1.0         # extra near-term weight of a room that just changed (1: none)
    activity_half_life: float = 1800.0  # seconds for that boost to halve
    write_share: float = 0.25           # share of the steady rate kept from reads for writes
    split_reads: bool = True            # near-term reads possible (the cycle can read part of the window)
    force_share: float = 0.9            # no whole window is planned to wait past this share of the bound
    near_change_share: float = 0.5      # share of a room's Ultimo-side changes in its near term
    quiet_floor: float = 0.45           # reads in the quietest hour, at least this share of the average
    period_cap: float = 1.0             # no whole window waits more uniform periods of read time (x stretch)
    period_stretch: float = 1.5         # the most a room learned quieter may stretch that cap
    busy_hours: tuple[int, int] = OFFICE_HOURS  # local hours guessed busy until the day is learned

    def __post_init__(self) -> None:
        if not 1 <= self.capacity < self.daily_budget:
            raise ValueError("capacity must be at least 1 and below the daily budget")
        if not 0 <= self.read_reserve < self.capacity:
            raise ValueError("read_reserve must be below capacity")

    @property
    def rate(self) -> float:
        """Tokens per second."""
        return (self.daily_budget - self.capacity) / DAY

    @property
    def read_rate(self) -> float:
        """Tokens per second reads may take in the steady state: the rest goes to writes,
        or is banked (up to `capacity`) for the busy hours' writes."""
        return self.rate * (1 - self.write_share)

    @classmethod
    def for_budget(cls, daily_budget: int, calls_per_10s: int, **kw: Any) -> ReadPolicy:
        """A policy whose buckets suit `daily_budget`: a bank of a tenth of the day (what
        the quiet hours save for the busy hours' writes), a tenth of it kept from reads,
        reads bursting at most a fifth of it."""
        capacity = float(max(2, round(daily_budget / 10)))
        return cls(daily_budget=daily_budget, capacity=capacity,
                   read_reserve=float(max(1, math.floor(capacity / 10))),
                   read_burst=float(max(1, round(capacity / 5))), **kw)

    @classmethod
    def from_config(cls, cfg: object) -> ReadPolicy:
        """From a `syncd.config.schema.Config` (typed loosely to keep this module free of pydantic)."""
        u, s = cfg.ultimo, cfg.sync  # type: ignore[attr-defined]
        return cls.for_budget(
            u.daily_call_budget, u.calls_per_10s,
            interval_seconds=float(s.interval_seconds), past_days=s.past_days, future_days=s.future_days,
            near_term_days=s.near_term_days, timezone=u.timezone, page_limit=u.page_limit,
            busy_hours=s.busy_hour_range,
        )


# --- choosing reads -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadGrant:
    """A read the planner allows now: `scope` near or full, the window it covers, the
    calls it is expected to take."""

    room: str
    scope: str
    window: TimeWindow
    cost: int


@dataclass(slots=True)
class _Room:
    near_at: float | None = None
    full_at: float | None = None
    changed_at: float | None = None
    rows: int | None = None
    paused_until: float = 0.0
    held: int = 0
    cost_key: tuple[int, float, bool] | None = None
    cost: tuple[int, int] = (1, 1)
    profiled: bool = False          # read completely by this process: the client knows its rows


@dataclass(frozen=True, slots=True)
class Candidate:
    room: str
    scope: str
    score: float
    cost: int


class ReadPlanner:
    """Decides, room by room, whether an Ultimo read is due now and which window.

    The caller (one lock around it when threads share it) claims a read with `claim`,
    charges every call it makes to `bucket`, and reports the outcome with `done`. With
    `fit_inline` False the caller also refits the learned rates' spread, outside its lock:
    `pending_fit` after each `done`, run, `install_fit` (as `syncd.service.pacer.Pacer`
    does); until then the last fit serves."""

    def __init__(self, policy: ReadPolicy, rooms: Sequence[str], bucket: TokenBucket, *,
                 fit_inline: bool = True) -> None:
        self.policy = policy
        self.bucket = bucket
        # Paces reads to their share of the steady rate; the main bucket stays the limit.
        self.reads = TokenBucket(policy.read_burst, policy.read_rate, policy.read_burst, bucket.at)
        self._order = {name: i for i, name in enumerate(rooms)}
        self._rooms = {name: _Room() for name in rooms}
        self._zone = ZoneInfo(policy.timezone)
        # The queue is kept for a few seconds (or until something changes): every room
        # job asks for it, and the order moves slowly.
        self._version = 0
        self._queue: tuple[float, int, float, list[Candidate]] | None = None
        self._queue_ttl = min(5.0, policy.interval_seconds / 12)
        self._share: tuple[int, float] | None = None
        self.rates = ChangeRates(near_share=policy.near_change_share)
        self._bound: tuple[int, float] | None = None
        self._forced: tuple[float, int, frozenset[str]] | None = None
        # When in the day changes happen (learned) and the shapes that follow from it:
        # of the changes (for a read's value) and of the reads (both buckets refill along it).
        self.profile = DayProfile()
        self.changes_shape = FLAT
        self._shaped: tuple[int, float] | None = None     # (profile version, when) of the shapes
        self._mean: tuple[tuple[int, int], float] | None = None
        # Learned rates, worked out once per change of the counts or of a room's rows.
        self._rows_version = 0
        self._rates_key: tuple[int, int] | None = None
        self._rates: dict[str, float] = {}
        self._prior_key: tuple[int, int] | None = None
        self._prior: RatePrior | None = None
        # False: the rates' spread is refitted by the caller, outside its lock (`pending_fit`),
        # and meanwhile the last fit serves.
        self.fit_inline = fit_inline
        self._fit_checked: tuple[int, int] | None = None

    # -- the day's shape --------------------------------------------------------------

    @staticmethod
    def shapes_for(policy: ReadPolicy, profile: DayProfile | dict[str, object] | None,
                   now: datetime | None = None) -> tuple[Shape, Shape]:
        """(reads, changes) shapes for a learned `profile` (or a kept one): reads by the
        square-root rule over the hours, at least `quiet_floor` of their average. Both
        buckets follow the reads' shape: writes come when people book, in the same hours,
        and a bucket shaped by a guess at the writes alone starved the reads when writes
        came later in the day than the guess. Until a whole day is learned the profile
        is mixed with a guess (`office_prior`, `policy.busy_hours` in `policy.timezone` on
        the day of `now`; flat without `now` or when they are the whole day) as far as it
        has been read: a first day that ran flat through the night and then followed a
        morning's finds had spent the evening's calls by the afternoon."""
        if isinstance(profile, dict):
            learned = DayProfile()
            profile = learned if learned.load(profile) else None
            if profile is not None and now is not None:
                profile.follow(ZoneInfo(policy.timezone), epoch(now))     # kept before a clock change
        share = 0.0 if profile is None else profile.share()
        if share <= 0 and now is None:
            return FLAT, FLAT        # nothing (or too little) learned, and no guess: evenly
        base = [1.0] * 24 if now is None else office_prior(ZoneInfo(policy.timezone), now, hours=policy.busy_hours)
        weights = profile.weights() if profile is not None and share > 0 else base
        changes = [b + (w - b) * share for b, w in zip(base, weights, strict=True)]
        return Shape(read_shape(changes, policy.quiet_floor)), Shape(changes)

    def day_message(self, zone: tzinfo, now: datetime) -> str:
        """How reads spread over the day, for `syncd status` and the start-up message."""
        hours = busy_hours(self.profile, zone, at=now)
        if hours is None:
            start, end = self.policy.busy_hours
            head = "until syncd has read a whole day and learned when Ultimo bookings change, reads "
            if end - start >= 24:
                return head + "are spread evenly over the day (sync.busy_hours: round the clock)"
            return head + f"lean to working hours ({start:02d}:00-{end:02d}:00 {self.policy.timezone})"
        return (f"Ultimo bookings change mostly {hours}: reads follow, and never fall below "
                f"{self.policy.quiet_floor:.0%} of their average pace in the quiet hours")

    def load_profile(self, data: dict[str, object], now: datetime) -> None:
        """Take the day profile a predecessor kept (ignored when malformed)."""
        if self.profile.load(data):
            self._reshape(now, force=True)

    def _reshape(self, now: datetime, *, force: bool = False) -> None:
        """Follow the learned profile: at most once an hour (the shapes move slowly, and
        the window holds the daily bound while they do)."""
        t = epoch(now)
        force = self.profile.follow(self._zone, t) or force
        if not force and self._shaped is not None and (self._shaped[0] == self.profile.version
                                                       or t < self._shaped[1] + 3600.0):
            return
        self.profile.refit()
        self._shaped = (self.profile.version, t)
        reads, changes = self.shapes_for(self.policy, self.profile, now)
        if reads != self.bucket.shape:
            self.bucket.reshape(reads, now)
        if reads != self.reads.shape:
            self.reads.reshape(reads, now)
        if changes != self.changes_shape:
            self.changes_shape = changes
            self._version += 1

    # -- what is known ------------------------------------------------------------

    def load(self, room: str, *, ultimo_read_at: datetime | None, changed_at: datetime | None,
             rows: int | None, rate: tuple[float | None, float | None, datetime | None] | None = None) -> None:
        """Seed a room from the database (a full read at `ultimo_read_at`; `rate`: the
        learned (changes, exposure seconds, as of) of `syncd.service.rates`)."""
        self._version += 1
        r = self._rooms[room]
        r.full_at = r.near_at = None if ultimo_read_at is None else epoch(ultimo_read_at)
        r.changed_at = None if changed_at is None else epoch(changed_at)
        r.rows = rows
        self._rows_version += 1
        if rate is not None:
            changes, exposure, at = rate
            self.rates.load(room, changes, exposure, None if at is None else epoch(at))

    def note_change(self, room: str, at: datetime) -> None:
        """The room changed (on either side): read its near term more often for a while."""
        self._version += 1
        self._rooms[room].changed_at = epoch(at)

    def pause(self, room: str, until: datetime) -> None:
        """A failing room leaves the queue until `until`, so it blocks nobody."""
        self._version += 1
        self._rooms[room].paused_until = epoch(until)

    def done(self, grant: ReadGrant, at: datetime, *, ok: bool, rows: int | None = None,
             found: int | None = None) -> None:
        """The granted read finished at `at` (`ok`: it read the window completely;
        `found`: the Ultimo-side changes it found, for the room's learned rate)."""
        self._version += 1
        r = self._rooms[grant.room]
        r.held = max(0, r.held - grant.cost)
        if not ok:
            return
        t = epoch(at)
        if found is not None:
            full = grant.scope == FULL
            if r.full_at is not None:
                # The room's rate relative to the average room's: what the hours covered
                # should have held, whatever the level the rates have been learned to so far
                # (a level still rising on a first day would make its later hours look quiet).
                lam, share = self._rate(grant.room) / self._mean_rate(), self.rates.near_share
                near_since = r.near_at if r.near_at is not None else r.full_at
                parts = [(near_since, t, lam * share)] + ([(r.full_at, t, lam * (1 - share))] if full else [])
                self.profile.observe(found, parts, t)
            exposure = self.rates.exposure(now=t, near_at=r.near_at, full_at=r.full_at, full=full)
            self.rates.observe(grant.room, found, exposure, t)
        r.profiled = True
        r.near_at = t
        if grant.scope == FULL:
            r.full_at = r.near_at
            if rows is not None and rows != r.rows:
                r.rows = rows
                self._rows_version += 1

    # -- windows and costs ---------------------------------------------------------

    def windows(self, now: datetime) -> tuple[TimeWindow, TimeWindow]:
        """(near-term, full) windows at `now`."""
        p = self.policy
        start = utc(now) - timedelta(days=p.past_days)
        local_today: date = utc(now).astimezone(self._zone).date()
        near_end = datetime.combine(local_today + timedelta(days=p.near_term_days), time(0), self._zone)
        full = TimeWindow(start, utc(now) + timedelta(days=p.future_days))
        near = TimeWindow(start, min(near_end.astimezone(UTC), full.end))
        return near, full

    def costs(self, room: str, now: datetime) -> tuple[int, int]:
        """Expected calls for (near-term, full) reads, rows estimated from the last full
        read spread evenly over the full window, cut as the client cuts them
        (`syncd.ultimo.paging.calls_for_rows`: by known density once this process has
        read the room, halving before)."""
        return self._costs(self._rooms[room], self._near_share(now))

    def _near_share(self, now: datetime) -> float:
        slot = int(epoch(now) // 300)        # the share moves by minutes in a month: 5 minutes will do
        if self._share is None or self._share[0] != slot:
            near, full = self.windows(now)
            self._share = (slot, (near.end - near.start) / (full.end - full.start))
        return self._share[1]

    def _costs(self, r: _Room, share: float) -> tuple[int, int]:
        if not r.rows:
            return 1, 1
        if r.cost_key != (r.rows, share, r.profiled):
            limit, known = self.policy.page_limit, r.profiled
            r.cost_key = (r.rows, share, known)
            r.cost = (calls_for_rows(r.rows * share, limit, known=known), calls_for_rows(r.rows, limit, known=known))
        return r.cost

    # -- the decision ---------------------------------------------------------------

    def _rate(self, room: str) -> float:
        """A room's learned rate of Ultimo-side changes per second (`syncd.service.rates`)."""
        key = (self.rates.version, self._rows_version)
        if self._rates_key != key:
            self._rates_key, self._rates = key, {}
        lam = self._rates.get(room)
        if lam is None:
            lam = self._rates[room] = self.rates.rate(room, self._rooms[room].rows, self._rate_prior())
        return lam

    def _mean_rate(self) -> float:
        key = (self.rates.version, self._rows_version)
        if self._mean is None or self._mean[0] != key:
            rates = [self._rate(name) for name in self._rooms]
            self._mean = (key, max(1e-12, sum(rates) / max(1, len(rates))))
        return self._mean[1]

    def _rate_prior(self) -> RatePrior:
        """How rooms' rates spread around what their sizes predict (learned, refitted as
        `ChangeRates.prior` decides)."""
        key = (self.rates.version, self._rows_version)
        if self._prior is None or self._prior_key != key:
            self._prior_key = key
            # Fitted by the caller (`pending_fit`): the last fit serves; the first is made here.
            last = None if self.fit_inline else self.rates.last_fit
            self._prior = last if last is not None else self.rates.prior(self._sizes())
        return self._prior

    def _sizes(self) -> dict[str, int | None]:
        return {name: r.rows for name, r in self._rooms.items()}

    def pending_fit(self) -> PendingFit | None:
        """A refit of the rates' spread, when one has become due since the last look, to run
        outside the caller's lock (`PendingFit.run`) and hand back to `install_fit`."""
        key = (self.rates.version, self._rows_version)
        if key == self._fit_checked:
            return None
        self._fit_checked = key
        return self.rates.prepare(self._sizes())

    def install_fit(self, job: PendingFit) -> None:
        """Take a refit that has run: every rate is worked out again under it."""
        before = self._prior
        if self.rates.install(job) is not before:
            self._prior_key = self._rates_key = self._mean = None
            self._version += 1

    def bound(self, now: datetime | None = None) -> float:
        """Seconds no part of any room's window goes unread for longer (in the steady
        state): twice the period of uniform polling with the calls left for reads, and
        not below twice the check interval. A room's whole window is read before a
        `force_share` of it has passed, whatever the plan prefers (see `_due_by_bound`)."""
        key = self._version
        if self._bound is None or self._bound[0] != key:
            p = self.policy
            # The steady state: every room's rows known, its reads cut by density.
            full = sum(calls_for_rows(r.rows or 0, p.page_limit) for r in self._rooms.values())
            period = full / p.read_rate if p.read_rate > 0 else math.inf
            self._bound = (key, 2.0 * max(period, p.interval_seconds))
        return self._bound[1]

    def _boost(self, r: _Room, t: float) -> float:
        p = self.policy
        if r.changed_at is None or t < r.changed_at:
            return 1.0
        return 1.0 + (p.activity_boost - 1.0) * 0.5 ** ((t - r.changed_at) / p.activity_half_life)

    def candidate(self, room: str, now: datetime, share: float | None = None) -> Candidate | None:
        """The room's most valuable due read and its value per call, or None (not due, paused).
        `share`: the near-term window's part of the full one (computed when not given)."""
        r, t, p = self._rooms[room], epoch(now), self.policy
        if t < r.paused_until or r.held:
            return None
        share = self._near_share(now) if share is None else share
        c_near, c_full = self._costs(r, share)
        if r.full_at is None:
            return Candidate(room, FULL, math.inf, c_full)
        age_n = t - (r.near_at if r.near_at is not None else r.full_at)
        age_f = t - r.full_at
        if age_f >= p.interval_seconds and room in self._due_by_bound(t):
            # The worst-case bound comes first: the oldest whole window before any preference.
            return Candidate(room, FULL, FORCED + age_f, c_full)
        # Value = weight x change rate x age squared: picking the most value per call then
        # reads each part at intervals growing with the square root of its cost, which
        # keeps the mean lag lowest for the calls spent (so the far horizon of a busy room
        # is not starved by cheap near-term reads elsewhere).
        # The waiting piled up since each part was read, at the rate the day's profile
        # gives each hour (age squared when flat).
        lam, shape = self._rate(room), self.changes_shape
        v_near = p.near_weight * self._boost(r, t) * lam * shape.moment(t - age_n, t)
        v_far = lam * shape.moment(t - age_f, t)
        options = []
        if age_f >= p.interval_seconds:
            options.append(Candidate(room, FULL, (v_near + v_far) / c_full, c_full))
        if p.split_reads and age_n >= p.interval_seconds and c_near < c_full:
            options.append(Candidate(room, NEAR, v_near / c_near, c_near))
        return max(options, key=lambda c: c.score, default=None)

    def _due_by_bound(self, t: float) -> frozenset[str]:
        """Rooms whose whole window must be read now: oldest first, a room is due when its
        age plus the time the reads of every older window take reaches `force_share` of
        the bound (deadlines in order, started early enough for a backlog), or when its
        age in read time (hours weighted by the read shape: busy hours count more)
        reaches `period_cap` uniform periods (a preference, not a deadline: no backlog),
        stretched for a room learned quieter than the average room by the square root of
        how much (at most `period_stretch` times). The first keeps the bound in the quiet
        hours; the second keeps the square-root rule from leaving rooms far behind in the
        busy ones on a rate it may have learned too low (uniform polling's tail is what it
        must beat), while the rooms that rarely change still give their reads to the ones
        that do."""
        cached = self._forced
        if cached is not None and cached[0] == t and cached[1] == self._version:
            return cached[2]
        p = self.policy
        bound = self.bound()
        limit = p.force_share * bound
        cap = p.period_cap * bound / 2
        rate = p.read_rate if p.read_rate > 0 else 1e-9
        shape = self.reads.shape
        mean = self._mean_rate()
        ahead = 0.0
        due = []
        for name, r in sorted(((n, r) for n, r in self._rooms.items() if r.full_at is not None),
                              key=lambda item: item[1].full_at or 0.0):
            ahead += calls_for_rows(r.rows or 0, p.page_limit, known=r.profiled)
            age = t - (r.full_at or t)
            # A room learned quieter than the average may wait longer, as the square root of
            # how much quieter (the square-root rule's own spacing), at most `period_stretch`
            # times (1.5: more let the quiet rooms' changes make the skewed workload's tail).
            stretch = min(p.period_stretch, max(1.0, math.sqrt(mean / max(self._rate(name), 1e-12))))
            # When the reads of every older window are done, at the reads' shaped rate.
            if age + (shape.advance(t, ahead / rate) - t) >= limit or shape.integral(t - age, t) >= cap * stretch:
                due.append(name)
        out = frozenset(due)
        self._forced = (t, self._version, out)
        return out

    def queue(self, now: datetime) -> list[Candidate]:
        """Every due read, most valuable per call first (ties: configuration order)."""
        t = epoch(now)
        cached = self._queue
        if cached is not None and cached[1] == self._version and cached[0] <= t < cached[0] + self._queue_ttl \
                and t < cached[2]:
            return cached[3]
        share = self._near_share(now)
        found = [c for name in self._rooms if (c := self.candidate(name, now, share)) is not None]
        found.sort(key=lambda c: (-c.score, self._order[c.room]))
        self._queue = (t, self._version, self._next_due(t), found)
        return found

    def _next_due(self, t: float) -> float:
        """When the next room not due at `t` becomes due (or unpaused)."""
        soonest = math.inf
        for r in self._rooms.values():
            if r.paused_until > t:
                soonest = min(soonest, r.paused_until)
            last = r.near_at if r.near_at is not None else r.full_at
            if last is not None and last + self.policy.interval_seconds > t:
                soonest = min(soonest, last + self.policy.interval_seconds)
        return soonest

    def spare(self, now: datetime) -> float:
        """Tokens reads may still claim now: what the reads' own bucket holds, and above the
        write reserve in the main one, not yet held by a claim. When the main bucket is
        full, reads may take what would otherwise overflow."""
        p = self.policy
        held = sum(r.held for r in self._rooms.values())
        level = self.bucket.level(now)
        main = level - p.read_reserve - held
        # What would overflow the main bucket goes to reads too, in the queue's order (so
        # a small spare, not the whole bucket: the order, and the bound, hold).
        overflow = max(0.0, level - 0.95 * p.capacity)
        return min(main, max(0.0, self.reads.level(now)) + overflow)

    def claim(self, room: str, now: datetime) -> ReadGrant | None:
        """A read for `room` if one is due and the spare tokens cover every more valuable
        due read before it; None otherwise. The grant's cost is held until `done`."""
        self._reshape(now)
        spare = self.spare(now)
        if spare < 1:
            return None
        # A read dearer than any bucket can hold counts as the most it can: it must not
        # block every other room for ever.
        most = min(self.policy.capacity - self.policy.read_reserve, self.policy.read_burst)
        ahead = 0.0
        for c in self.queue(now):
            ahead += min(c.cost, most)
            if ahead > spare:
                return None
            if c.room == room:
                near, full = self.windows(now)
                self._rooms[room].held = c.cost
                self._version += 1
                # A read on tokens that would overflow the main bucket does not overdraw the
                # reads' own one: that would hold back the reads after it (the bound's first).
                self.reads.take(min(c.cost, max(0.0, self.reads.level(now))), now)
                return ReadGrant(room, c.scope, near if c.scope == NEAR else full, c.cost)
        return None

    def learned_rate(self, room: str) -> float:
        """`room`'s learned rate of Ultimo-side changes, per day."""
        return self._rate(room) * DAY

    def last_read(self, room: str) -> tuple[datetime | None, datetime | None]:
        """(near-term, full) read times of `room`."""
        r = self._rooms[room]
        return from_epoch(r.near_at if r.near_at is not None else r.full_at), from_epoch(r.full_at)

    # -- what the budget allows --------------------------------------------------------

    def estimate(self, now: datetime) -> Estimate:
        """The staleness each room will have in the steady state (no activity boosts)."""
        share = self._near_share(now)
        return estimate(self.policy, {name: (*self._costs(r, share), self._rate(name)) for name, r in self._rooms.items()},
                        bound=self.bound(now))
