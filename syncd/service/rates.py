"""How often each room changes in Ultimo, learned from what its reads find.

A room's rate is the number of Ultimo-side changes (reservations made, moved or
cancelled there, not by syncd) per second. Each complete read reports how many it found
and the read planner says how long the part it read had been unread (its exposure);
near-term and far reads see their own share of a room's changes (`near_share`).

The estimate is empirical Bayes. A room's size predicts its rate: its bookings times a
rate per booking pooled over every room (busier rooms change more; pooled, so that a
quiet estate does not keep the default). Its own counts say how far off that is: its rate
is the prediction times the expected multiplier (one of `GRID`, 1/64 to 64), each weighted
by how common it is among rooms and how likely it makes the room's counts (Poisson). How
common each multiplier is (`RatePrior`) is learned from every room's counts: the spread
that makes them likeliest, fitted by expectation-maximisation, a log-normal guess one
doubling wide counting as two rooms more. Where rooms change as their sizes say, the
spread learned is narrow, and a room's few changes of a day or two are taken for chance
(a room that happened to see none is not starved); where a fifth of the rooms make most
of the changes, it has two humps, each room's count says which it belongs to, and the
busy rooms are learned at their own rate rather than pulled toward the average (a single
smooth prior, used before, learned them at 9 to 13 times the quiet ones where the truth
was 16). How far size predicts is learned too (`BETAS`): the rate per booking applies to
a room's bookings, to their square root, or to none (every room alike), whichever makes
the counts clearly likeliest. Where the busy rooms are busy whatever their size, keeping
size would blur the two humps by the rooms' spread of sizes (a big quiet room taken for
half busy, a small busy room for half quiet); dropped, the median room is learned within
15 % of its rate after a day, where it was 50 % off. Changes and exposure decay with a
half-life of days, so a room that quietens down is read less within a few days, not
never. The counts are kept in the database (`room_state.ultimo_changes`,
`ultimo_exposure_s`, `rates_at`): a restarted service starts from what it had learned, and
fits the spread (and how far size predicts) to them again.

Pure: no I/O, no clock; times are epoch seconds passed in.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo

__all__ = ["GRID", "LEARNED", "OFFICE_HOURS", "OFFICE_RATIO", "ChangeRates", "DayProfile",
           "PendingFit", "RatePrior", "RateState", "busy_hours", "hour_seconds", "office_prior", "read_shape"]

DAY = 86400.0


@dataclass(slots=True)
class RateState:
    """One room's decayed counts at `at` (epoch seconds; None: nothing seen yet)."""

    changes: float = 0.0
    exposure: float = 0.0
    at: float | None = None

    def decayed(self, t: float, half_life: float) -> tuple[float, float]:
        if self.at is None or t <= self.at:
            return self.changes, self.exposure
        f = 0.5 ** ((t - self.at) / half_life)
        return self.changes * f, self.exposure * f


# The multipliers a room's rate may take of what its size predicts: 1/64 to 64, in steps
# of a half doubling.
GRID = tuple(2 ** (k / 2) for k in range(-12, 13))
# How far a room's size predicts its rate, tried in turn: in proportion, as its square root,
# not at all; the one that makes every room's counts likeliest is taken, the first unless
# another makes them clearly likelier (by `SWITCH_EVIDENCE`, a log-likelihood ratio) and
# they hold `LEARNED` changes or more.
BETAS = (1.0, 0.5, 0.0)
SWITCH_EVIDENCE = math.log(20.0)
_LOG_GRID = tuple(math.log(g) for g in GRID)


@dataclass(frozen=True, slots=True)
class RatePrior:
    """The learned spread of rooms' rates: the rate per booking (`kappa`, changes per
    second) and the share of rooms at each multiplier of `GRID`."""

    kappa: float
    weights: tuple[float, ...]
    total: float              # the sizes it was fitted for
    found: float              # the (decayed) changes it was fitted on
    serial: int
    beta: float = 1.0         # how far size predicts: the rate per booking applies to size ** beta


def _log_likelihood(changes: float, expected: float) -> tuple[list[float], float]:
    """How likely `changes` are at each multiplier of `GRID` when 1 expects `expected`
    (Poisson): the likelihoods scaled so the likeliest is 1, and the log of that scale (up
    to a term of the count alone)."""
    logs = [changes * lg - g * expected for lg, g in zip(_LOG_GRID, GRID, strict=True)]
    top = max(logs)
    scale = top + (changes * math.log(expected) if changes > 0 and expected > 0 else 0.0)
    return [math.exp(x - top) for x in logs], scale


def _fit_spread(rooms: list[tuple[float, float]], start: Sequence[float], base: Sequence[float],
                base_rooms: float, rounds: int = 8) -> tuple[tuple[float, ...], float]:
    """The shares of rooms at each multiplier that make the rooms' (changes, expected at 1)
    likeliest, with `base` counted as `base_rooms` more rooms (so a few rooms' chance
    does not make a spread): expectation-maximisation from `start`, a few rounds each
    time (the counts move little between fits). Also how likely the counts are under
    that spread (log, up to a term of the counts alone), to compare fits.

    A round is two products with the rooms' likelihoods, one by rows (each room's
    likelihood under the spread) and one by columns (each multiplier's share of the
    rooms' posteriors), each a sum of products in one call: at 1,000 rooms this takes
    half the time or less that element-wise arithmetic did (`benchmarks/rates_fit.py`)."""
    both = [_log_likelihood(n, m) for n, m in rooms]
    likes = [like for like, _ in both]
    columns = list(zip(*likes, strict=True)) if likes else [() for _ in GRID]
    weights = list(start)
    for _ in range(rounds):
        inverse = [1.0 / z if z > 0 else 0.0 for z in (sum(map(operator.mul, weights, like)) for like in likes)]
        acc = [base_rooms * b + w * sum(map(operator.mul, column, inverse))
               for b, w, column in zip(base, weights, columns, strict=True)]
        total = sum(acc)
        weights = [a / total for a in acc]
    evidence = sum(scale + math.log(max(1e-300, sum(map(operator.mul, weights, like)))) for like, scale in both)
    return tuple(weights), evidence


@dataclass(slots=True)
class PendingFit:
    """A fit of the spread prepared from the counts as they were (`ChangeRates.prepare`).
    `run` touches nothing shared, so a threaded caller runs it outside its lock (the
    service: outside the pacer's, so room jobs' Ultimo calls do not wait for it) and hands
    it to `ChangeRates.install` under the lock."""

    total: float
    found: float
    cold: bool
    tries: list[tuple[float, float, list[tuple[float, float]], tuple[float, ...] | None]]  # beta, kappa, rows, start
    base: tuple[float, ...]
    base_rooms: float
    after: int                # the serial of the fit it follows (0: none)
    new_found: float          # the counts' news it has seen
    new_reads: int
    loads: int                # loads it has seen
    fitted: tuple[float, float, tuple[float, ...], dict[float, tuple[float, ...]]] | None = None

    def run(self) -> None:
        """Fit every try of how far size predicts; keep the likeliest (size keeps its say
        unless another makes the counts clearly likelier: a likelihood ratio of 20)."""
        best: tuple[float, float, float, tuple[float, ...]] | None = None
        starts: dict[float, tuple[float, ...]] = {}
        for beta, kappa, rows, start in self.tries:
            if self.cold or start is None:
                weights, evidence = _fit_spread(rows, self.base, self.base, self.base_rooms, rounds=40)
            else:
                weights, evidence = _fit_spread(rows, start, self.base, self.base_rooms)
            starts[beta] = weights
            evidence -= 0.0 if beta == BETAS[0] else SWITCH_EVIDENCE
            if best is None or evidence > best[0]:
                best = (evidence, beta, kappa, weights)
        assert best is not None
        _, beta, kappa, weights = best
        self.fitted = (beta, kappa, weights, starts)


class ChangeRates:
    """The learned change rate of every room (see the module docstring)."""

    def __init__(self, *, half_life_days: float = 3.0, prior_days: float = 0.5,
                 default_per_booking_day: float = 0.01, near_share: float = 0.5, spread_doublings: float = 1.0,
                 base_rooms: float = 2.0) -> None:
        self.half_life = half_life_days * DAY
        self.prior_time = prior_days * DAY
        self.default_kappa = default_per_booking_day / DAY   # changes per second per booking
        self.near_share = near_share
        self.base_rooms = base_rooms
        # The starting guess at the spread: rooms' multipliers log-normal around 1, with a
        # standard deviation of `spread_doublings` doublings.
        raw = [math.exp(-0.5 * (math.log2(g) / spread_doublings) ** 2) for g in GRID]
        self._base = tuple(x / sum(raw) for x in raw)
        self._rooms: dict[str, RateState] = {}
        self._dirty: set[str] = set()
        self._prior: RatePrior | None = None
        self._settled = False       # the last fit has seen every loaded count
        self._new_found = 0.0
        self._new_reads = 0
        self._posterior: dict[str, tuple[tuple[float, ...], float]] = {}
        self._version = 0
        self._loads = 0
        self._by_beta: dict[float, tuple[float, ...]] = {}

    @property
    def version(self) -> int:
        """Moves whenever a count does."""
        return self._version

    def state(self, room: str) -> RateState:
        return self._rooms.setdefault(room, RateState())

    def load(self, room: str, changes: float | None, exposure: float | None, at: float | None) -> None:
        """Seed a room with what the database kept."""
        self._rooms[room] = RateState(max(0.0, changes or 0.0), max(0.0, exposure or 0.0), at)
        self._settled = False
        self._loads += 1
        self._version += 1

    def exposure(self, *, now: float, near_at: float | None, full_at: float | None, full: bool) -> float:
        """Seconds of a read's exposure: the near-term share of changes since the near term
        was last read, and (a full read) the far share since the whole window was."""
        if full_at is None:
            return 0.0
        near_since = now - (near_at if near_at is not None else full_at)
        out = self.near_share * max(0.0, near_since)
        if full:
            out += (1 - self.near_share) * max(0.0, now - full_at)
        return out

    def observe(self, room: str, found: int, exposure: float, at: float) -> None:
        """A read at `at` found `found` changes over `exposure` seconds."""
        if exposure <= 0 and found <= 0:
            return
        st = self.state(room)
        changes, exp = st.decayed(at, self.half_life)
        st.changes, st.exposure, st.at = changes + max(0, found), exp + max(0.0, exposure), at
        self._new_found += max(0, found)
        self._new_reads += 1
        self._dirty.add(room)
        self._version += 1

    def _kappa(self, sizes: dict[str, int | None], beta: float) -> float:
        """Changes per second per booking over every room (the prior's scale), with the
        prior time of the default's weight."""
        weight = self.prior_time * sum(_size(rows, beta) for rows in sizes.values())
        num = self.default_kappa * weight
        den = weight
        for room, st in self._rooms.items():
            num += st.changes
            den += st.exposure * _size(sizes.get(room), beta)
        return num / den if den > 0 else self.default_kappa

    @property
    def last_fit(self) -> RatePrior | None:
        """The spread as last fitted (None: never), due for a refit or not."""
        return self._prior

    def prior(self, sizes: dict[str, int | None]) -> RatePrior:
        """How rooms' rates spread around what their sizes predict, learned from every
        room's counts (see the module docstring); fitted again once enough is new (`due`).
        Between fits a read moves only its own room's rate."""
        job = self.prepare(sizes)
        if job is None:
            assert self._prior is not None
            return self._prior
        job.run()
        return self.install(job)

    def due(self, sizes: dict[str, int | None]) -> bool:
        """Whether the spread is to be fitted again: nothing fitted yet, counts loaded since,
        other sizes, a change found for every fiftieth already counted (at least one), or a
        read of as many rooms as there are."""
        return self._due(sizes, sum(_size(rows) for rows in sizes.values()))

    def _due(self, sizes: dict[str, int | None], total: float) -> bool:
        fit = self._prior
        return fit is None or not self._settled or fit.total != total \
            or self._new_found >= max(1.0, 0.02 * fit.found) or self._new_reads >= max(10, len(sizes))

    def prepare(self, sizes: dict[str, int | None]) -> PendingFit | None:
        """A fit of the spread from the counts as they are now, when one is due (None
        otherwise): its `run` may go on outside the caller's lock, `install` takes it."""
        total = sum(_size(rows) for rows in sizes.values())
        if not self._due(sizes, total):
            return None
        fit = self._prior
        found = sum(st.changes for st in self._rooms.values() if st.exposure > 0)
        tries = []
        for beta in BETAS if found >= LEARNED else BETAS[:1]:
            kappa = self._kappa(sizes, beta)
            rows = [(st.changes, kappa * _size(sizes.get(room), beta) * st.exposure)
                    for room, st in self._rooms.items() if st.exposure > 0]
            tries.append((beta, kappa, rows, self._by_beta.get(beta)))
        return PendingFit(total, found, fit is None or not self._settled, tries, self._base, self.base_rooms,
                          fit.serial if fit else 0, self._new_found, self._new_reads, self._loads)

    def install(self, job: PendingFit) -> RatePrior:
        """Take a fit that has run (`PendingFit.run`); what was counted meanwhile is kept for
        the next. A fit that another has overtaken since it was prepared is dropped."""
        fit = self._prior
        if job.fitted is None or (fit.serial if fit else 0) != job.after:
            if fit is None:
                raise ValueError("a fit of the rates' spread was installed before it ran")
            return fit
        beta, kappa, weights, starts = job.fitted
        self._by_beta.update(starts)
        self._prior = RatePrior(kappa, weights, job.total, job.found, job.after + 1, beta)
        self._settled = job.loads == self._loads
        self._new_found = max(0.0, self._new_found - job.new_found)
        self._new_reads = max(0, self._new_reads - job.new_reads)
        return self._prior

    def rate(self, room: str, rows: int | None, prior: RatePrior) -> float:
        """Changes per second expected of `room` (with `rows` bookings): what its size
        predicts, times the multiplier its own counts make likely under `prior` (the
        spread learned over every room)."""
        st = self._rooms.get(room)
        base = prior.kappa * _size(rows, prior.beta)
        mean = sum(w * g for w, g in zip(prior.weights, GRID, strict=True))
        if st is None or st.exposure <= 0 and st.changes <= 0:
            return base * mean
        key = (prior.serial, st.changes, st.exposure, base)
        hit = self._posterior.get(room)
        if hit is not None and hit[0] == key:
            return hit[1]
        like, _ = _log_likelihood(st.changes, base * st.exposure)
        z = sum(w * x for w, x in zip(prior.weights, like, strict=True))
        multiplier = sum(w * x * g for w, x, g in zip(prior.weights, like, GRID, strict=True)) / z if z > 0 else mean
        self._posterior[room] = (key, base * multiplier)
        return base * multiplier

    def take_dirty(self) -> dict[str, RateState]:
        """The rooms whose counts changed since the last call (to persist)."""
        out = {r: RateState(self._rooms[r].changes, self._rooms[r].exposure, self._rooms[r].at) for r in self._dirty}
        self._dirty.clear()
        return out

    def put_back(self, rooms: Iterable[str]) -> None:
        """Persisting failed: keep these dirty."""
        self._dirty.update(rooms)


def _size(rows: int | None, beta: float = 1.0) -> float:
    return float((rows or 0) + 10) ** beta


HOUR = 3600.0
LEARNED = 20.0      # changes found before the profile shapes anything (or is shown)
OFFICE_HOURS = (7, 19)   # local hours the first day's guess takes as busy (`office_prior`)
OFFICE_RATIO = 9.0       # how much busier it takes them to be


def hour_seconds(since: float, until: float) -> list[float]:
    """Seconds of [since, until) in each UTC hour of the day (index 0: 00:00-01:00 UTC)."""
    out = [0.0] * 24
    if until <= since:
        return out
    days = int((until - since) // DAY)
    if days:
        out = [days * HOUR] * 24
        since += days * DAY
    t = since
    while t < until:
        start = (t // HOUR) * HOUR
        end = min(until, start + HOUR)
        out[int(start // HOUR) % 24] += end - t
        t = end
    return out


class DayProfile:
    """When in the day Ultimo-side changes happen, pooled over every room.

    Per UTC hour: the changes reads found there, and the exposure there (seconds of the
    hour a read covered, times the room's rate relative to the average room's); turned
    by an hour when the local clock changes (`follow`), so the hours stay local ones. A read
    learns only that its changes happened since the part it read was last read, so they
    are spread over those hours in proportion to what the profile expects of each. What
    it expected when a change was found is often wrong (at first it expects every hour
    alike, so a change of 06:30 found at 08:00 after a night's gap lands half in the
    night), and guesses left as they were pull the busy hours' edges into the quiet
    ones, where fewer reads then find them later still. So the most recent finds (`keep`
    of them) are spread again by the newer profile when the planner reshapes (`refit`:
    expectation-maximisation over them, the older finds as they lie). An hour's weight is
    (found + prior) / (flat + prior), where flat is what the hour would hold of all the
    changes found if they came evenly over the exposure; 24 of them scaled to mean 1.
    Relative rates and a total matched to what was found keep the weights free of the
    level the rates have been learned to (on a first day, a level still rising would make
    its later hours look quiet). With nothing learned every hour weighs the same. Counts
    decay with a half-life of days, so a changed working pattern is learned again within
    a week or two. Pure: epoch seconds passed in.
    """

    def __init__(self, *, half_life_days: float = 7.0, prior_changes: float = 2.0, keep: int = 2000) -> None:
        self.half_life = half_life_days * DAY
        self.prior = prior_changes
        self.found = [0.0] * 24
        self.exposure = [0.0] * 24
        self.at: float | None = None
        self.first: float | None = None      # the first read it learned from
        self.offset: int | None = None       # the local zone's UTC offset (seconds) its hours are aligned to
        self.version = 0
        # The recent finds: (when, changes, hours covered, where they were put), in memory
        # only; `found` holds them as put (decayed from when), with every older find.
        self._recent: deque[tuple[float, float, list[float], list[float]]] = deque(maxlen=keep)
        self._fitted = 0

    def _decay(self, t: float) -> None:
        if self.at is not None and t > self.at:
            f = 0.5 ** ((t - self.at) / self.half_life)
            self.found = [x * f for x in self.found]
            self.exposure = [x * f for x in self.exposure]
        if self.at is None or t > self.at:
            self.at = t
        if self.first is None:
            self.first = t

    def learned(self, least: float = LEARNED) -> bool:
        """Enough to shape anything by: `least` changes found, over at least a whole day
        of reads (a morning's finds say nothing yet of the afternoon, and reads moved into
        the morning on them would be missed in the 24-hour window by the evening)."""
        return self.share(least) >= 1.0

    def share(self, least: float = LEARNED) -> float:
        """How far to trust the profile, 0 to 1: nothing before `least` finds, then the
        part of a day it has read."""
        if sum(self.found) < least or self.at is None or self.first is None:
            return 0.0
        return min(1.0, (self.at - self.first) / DAY)

    def weights(self) -> list[float]:
        """The 24 hourly weights (UTC hours), mean 1."""
        found, covered = sum(self.found), sum(self.exposure)
        scale = found / covered if covered > 0 else 0.0
        raw = [(f + self.prior) / (e * scale + self.prior) for f, e in zip(self.found, self.exposure, strict=True)]
        mean = sum(raw) / 24
        return [x / mean for x in raw]

    def observe(self, found: int, parts: list[tuple[float, float, float]], at: float) -> None:
        """A read at `at` found `found` changes in the parts it read, each given as (since,
        until, weight: the room's rate relative to the average room's times the part's
        share of its changes)."""
        cover = [0.0] * 24
        for since, until, rate in parts:
            if rate > 0:
                for h, s in enumerate(hour_seconds(since, until)):
                    cover[h] += s * rate
        if not any(cover) and found <= 0:
            return
        self._decay(at)
        put = self._spread(found, cover, self.weights())
        for h in range(24):
            self.exposure[h] += cover[h]
            self.found[h] += put[h]
        if found > 0 and any(put):
            self._recent.append((at, float(found), cover, put))
        self.version += 1

    @staticmethod
    def _spread(found: float, cover: list[float], weights: list[float]) -> list[float]:
        pull = [c * x for c, x in zip(cover, weights, strict=True)]
        total = sum(pull)
        return [found * x / total for x in pull] if found > 0 and total > 0 else [0.0] * 24

    def refit(self, rounds: int = 3) -> None:
        """Spread the recent finds again by the profile they make (see the class docstring);
        a few rounds each time, from where the last left off, as the profile moves slowly."""
        if not self._recent or self._fitted == self.version or self.at is None:
            return
        now = self.at
        for _ in range(rounds):
            w = self.weights()
            for k, (at, found, cover, put) in enumerate(self._recent):
                new = self._spread(found, cover, w)
                f = 0.5 ** ((now - at) / self.half_life)
                for h in range(24):
                    self.found[h] = max(0.0, self.found[h] + (new[h] - put[h]) * f)
                self._recent[k] = (at, found, cover, new)
        self.version += 1
        self._fitted = self.version

    def follow(self, zone: tzinfo, at: float) -> bool:
        """Keep the learned hours on the local clock: when `zone`'s offset from UTC moves by
        whole hours (daylight saving time begins or ends), turn the UTC hours by as much, so
        that a site busy from 07:00 is read busy from 07:00 the next morning rather than an
        hour off for the week its counts would take to learn it again. True when turned."""
        offset = datetime.fromtimestamp(at, UTC).astimezone(zone).utcoffset()
        seconds = int(offset.total_seconds()) if offset is not None else 0
        if self.offset is None or seconds == self.offset:
            self.offset = seconds
            return False
        shift, rest = divmod(seconds - self.offset, 3600)
        self.offset = seconds
        if rest:
            return False        # by part of an hour (a half-hour change, as on Lord Howe Island): left as it is

        def turn(xs: list[float]) -> list[float]:
            # Local hour L was UTC hour L - old offset; it is now UTC hour L - new offset.
            return [xs[(h + shift) % 24] for h in range(24)]

        self.found, self.exposure = turn(self.found), turn(self.exposure)
        for k, (when, found, cover, put) in enumerate(self._recent):
            self._recent[k] = (when, found, turn(cover), turn(put))
        self.version += 1
        return True

    def to_json(self) -> dict[str, object]:
        return {"found": [round(x, 4) for x in self.found], "exposure": [round(x, 4) for x in self.exposure],
                "at": self.at, "first": self.first, "offset": self.offset}

    def load(self, data: object) -> bool:
        """Take what a predecessor kept (see `to_json`); False (nothing taken) when malformed."""
        try:
            d = dict(data)  # type: ignore[call-overload]
            found = [max(0.0, float(x)) for x in d["found"]]
            exposure = [max(0.0, float(x)) for x in d["exposure"]]
            at = None if d.get("at") is None else float(d["at"])
            # Kept before the first read was: taken as a day before the last.
            first = (None if at is None else at - DAY) if d.get("first") is None else float(d["first"])
            # Kept by a version that did not keep it: aligned to the offset of the first follow.
            offset = None if d.get("offset") is None else int(d["offset"])
        except (TypeError, KeyError, ValueError):
            return False
        if len(found) != 24 or len(exposure) != 24 or not all(map(math.isfinite, found + exposure)):
            return False
        self.found, self.exposure, self.at, self.first, self.offset = found, exposure, at, first, offset
        self._recent.clear()
        self.version += 1
        return True


def office_prior(zone: tzinfo, at: datetime, *, ratio: float = OFFICE_RATIO,
                 hours: tuple[int, int] = OFFICE_HOURS) -> list[float]:
    """What is guessed of the day before anything is learned: bookings change `ratio`
    times as often in working hours (`hours`: local, on the day of `at`, by default
    `OFFICE_HOURS`; the configuration's `sync.busy_hours`) as outside them (9: nine changes
    in ten come in the twelve working hours); 24 UTC-hour weights of mean 1, all 1 when the
    hours are the whole day. A site busier at other hours corrects it within its first day
    (`ReadPlanner.shapes_for`), and the quiet hours' floor keeps its nights read meanwhile."""
    start, end = hours
    day = at.astimezone(zone).date()
    midnight = datetime.combine(day, time(0), zone).astimezone(UTC)
    raw = [1.0] * 24
    for h in range(24):
        local = (midnight + timedelta(hours=h)).astimezone(zone)
        raw[(midnight + timedelta(hours=h)).hour] = ratio if start <= local.hour < end else 1.0
    mean = sum(raw) / 24
    return [x / mean for x in raw]


def read_shape(weights: list[float], floor: float, carry: int = 2) -> list[float]:
    """How reads should spread over the day given when changes happen (hourly `weights`,
    mean 1): the square-root rule over time (reads where changes are, as the square
    root of their rate, which keeps the mean lag least for a fixed number of reads),
    never below `floor` of the average so the quiet hours keep the worst-case bound.
    An hour is read at least as the `carry` hours before it are: the changes piled up
    in a busy hour wait for the reads after it, which need about one sweep of every room
    at the busy pace (one to two hours) to reach them all; a sharp drop at the end of the
    day would leave the last of them for the night's slow sweep."""
    shape = [math.sqrt(max(0.0, *(weights[h - j] for j in range(carry + 1)))) for h in range(24)]
    for _ in range(50):
        mean = sum(shape) / 24
        if mean <= 0:
            return [1.0] * 24
        nxt = [max(floor, x / mean) for x in shape]
        if all(abs(a - b) < 1e-9 for a, b in zip(nxt, shape, strict=True)):
            break
        shape = nxt
    mean = sum(shape) / 24
    return [x / mean for x in shape]


def busy_hours(profile: DayProfile, zone: tzinfo, *, at: datetime | None = None, least: float = LEARNED) -> str | None:
    """The hours (in `zone`, on the day of `at`) when changes come above the day's average,
    e.g. "07:00-18:00", or None until `least` changes have been found over a whole day of
    reads (`DayProfile.learned`)."""
    if not profile.learned(least):
        return None
    w = profile.weights()
    day = (at or datetime.now(UTC)).astimezone(zone).date()
    midnight = datetime.combine(day, time(0), zone).astimezone(UTC)
    local = []        # (local start, busy) per UTC hour of that day
    for h in range(24):
        start = midnight + timedelta(hours=h)
        local.append((start.astimezone(zone), w[start.hour] > 1.0))
    spans: list[list[datetime]] = []
    for start, busy in local:
        if busy:
            if spans and spans[-1][1] == start:
                spans[-1][1] = start + timedelta(hours=1)
            else:
                spans.append([start, start + timedelta(hours=1)])
    if not spans:
        return None
    return ", ".join(f"{a:%H:%M}-{b:%H:%M}" for a, b in spans)
