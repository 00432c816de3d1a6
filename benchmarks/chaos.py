"""The crash-and-fault campaign: the real `syncd reconcile` and `syncd run` processes against
both sandboxes.

    python benchmarks/chaos.py --mode short            # CI: under a minute per backend
    python benchmarks/chaos.py --mode long --seed 7    # 300+ kills, 20+ fault schedules
    make chaos CHAOS=long CHAOS_ARGS="--seed 7 --time-limit 3600"
    python benchmarks/chaos.py --backend graph         # syncd on Microsoft Graph

Each run is a fresh world (benchmarks/chaos_world.py: both sandboxes on loopback, three
rooms, a SQLite database, people who book, move and cancel). A run has two phases:

1. kills: people edit, a `syncd reconcile` process (or, for one kill in six of a short run
   and half of a long run's, the service, `syncd run`) starts and is killed with SIGKILL,
   either once a write (Create/Update/Cancel in Ultimo, CreateItem/UpdateItem/DeleteItem
   in EWS, or with `--backend graph` the POST, PATCH or DELETE of an event) was performed
   and its answer is held back by the sandbox, or at a random instant of the pass. Half of
   the service's unheld kills are a SIGTERM instead, as systemd stops it: it must finish
   the write in flight and exit 0. Then faults stop and passes run until both sides agree.
2. fault schedules: a fifth of all calls fail on each side (errors before the work,
   answers lost after it: connection reset, timeout, 5xx; on Graph also 429 with
   Retry-After, a refused token, a lost delta round; answers from the malformed corpus,
   syncd/sandbox/corpus.py, for Ultimo and for EWS or Graph) while people keep editing
   during the passes; then faults stop and passes run until both sides agree.

Printed per run and in total: kills (how many landed during writes, how many with an
answer held, how many of the service), the service's stops (and any that did not exit 0),
duplicates ever created (from the sandboxes' journals: cancelled and removed ones count),
lost bookings, wrong cancellations, the most passes needed to converge after faults stop,
tracebacks in syncd's output. The goal is 0, 0, 0, <= 2, 0, and every stop exiting 0 (the
long mode also needs 300 kills and 20 schedules); the exit status is 1 when a goal is
missed, and a run that missed one keeps its folder.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_world import ULTIMO_WRITES, World  # noqa: E402

from syncd.sandbox import corpus  # noqa: E402
from syncd.sandbox.httpbase import Hold  # noqa: E402

MODES = {   # runs, kills per run, schedules per run, passes per schedule, kills of `syncd run` per run
    "short": (1, 6, 1, 3, 1),
    "long": (30, 16, 1, 4, 8),  # about 11 of 16 kills land during writes: 30 runs reach 300
}
ULTIMO_RANDOM = ("http500", "http503", "html", "drop", "garbage", "http429",
                 "drop_after", "slow", "http500_after", "http503_after")
EWS_RANDOM = ("server_busy", "http500", "http503", "drop", "drop_after", "slow_after", "http500_after",
              "http503_after")
GRAPH_RANDOM = ("http429", "http503", "http504", "http401", "drop", "garbage", "sync_state_not_found",
                "lost_answer", "slow")
CORPUS_PER_SCHEDULE = 4
MAX_PASSES = 6
_ULTIMO_CALL = {"get": "REST_GetReservationsForSpace", "create": "REST_CreateReservation",
                "update": "REST_UpdateReservation", "cancel": "REST_CancelReservation"}


@dataclass
class Figures:
    kills: int = 0
    kills_in_writes: int = 0
    kills_held: int = 0
    kills_service: int = 0      # of `syncd run` (the others of `syncd reconcile`)
    stops: int = 0              # `syncd run` stopped with SIGTERM, as systemd stops it
    stops_in_writes: int = 0
    bad_stops: int = 0          # a stopped `syncd run` that did not exit 0
    run_ended: int = 0          # a `syncd run` that ended by itself (it must not)
    schedules: int = 0
    duplicates: int = 0
    lost: int = 0
    wrong_cancellations: int = 0
    passes: list[int] = field(default_factory=list)
    tracebacks: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, other: Figures) -> None:
        for name in ("kills", "kills_in_writes", "kills_held", "kills_service", "stops", "stops_in_writes",
                     "bad_stops", "run_ended", "schedules", "duplicates", "lost", "wrong_cancellations", "tracebacks"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.passes += other.passes
        self.notes += other.notes

    def line(self) -> str:
        worst = max(self.passes, default=0)
        return (f"kills {self.kills} ({self.kills_in_writes} during writes, {self.kills_held} with an answer held, "
                f"{self.kills_service} of syncd run); stops of syncd run {self.stops} ({self.stops_in_writes} during "
                f"writes, {self.bad_stops} not exit 0); "
                f"fault schedules {self.schedules}; duplicates {self.duplicates}; lost {self.lost}; "
                f"wrong cancellations {self.wrong_cancellations}; passes to converge {worst} max "
                f"(over {len(self.passes)} recoveries); tracebacks {self.tracebacks}")

    def missed(self, mode: str) -> list[str]:
        goals = []
        if self.duplicates or self.lost or self.wrong_cancellations or self.tracebacks:
            goals.append("duplicates, lost bookings, wrong cancellations and tracebacks must all be 0")
        if self.bad_stops or self.run_ended:
            goals.append("syncd run must exit 0 when stopped with SIGTERM and never end by itself")
        if max(self.passes, default=0) > 2 or not self.passes:
            goals.append("every recovery must converge within 2 passes")
        if mode == "long" and (self.kills < 300 or self.schedules < 20):
            goals.append("the long campaign needs 300 kills and 20 fault schedules")
        return goals


class Campaign:
    def __init__(self, seed: int, mode: str, deadline: float, verbose: bool, series: bool = False,
                 kills: int | None = None, schedules: int | None = None, backend: str = "ews",
                 database: str | None = None) -> None:
        self.rng = random.Random(seed)
        self.series = series
        self.backend = backend
        self.database = database
        _, mode_kills, mode_schedules, self.passes, self.service_kills = MODES[mode]
        self.kills = mode_kills if kills is None else kills
        self.schedules = mode_schedules if schedules is None else schedules
        self.mode = mode
        self.deadline = deadline
        self.verbose = verbose
        self.corpus_next = {"ultimo": 0, "ews": 0, "graph": 0}

    def say(self, text: str) -> None:
        if self.verbose:
            print(f"    {text}", flush=True)

    def run(self, number: int) -> Figures:
        kills, schedules, passes = self.kills, self.schedules, self.passes
        world = World(random.Random(self.rng.random()), series=self.series, backend=self.backend,
                      database=self.database)
        figures = Figures()
        try:
            for _ in range(6):
                world.edit()
            self.converge(world, figures, "seeded")
            # Which kills are of `syncd run` (the service; half of its unheld ones are SIGTERM
            # stops, as systemd stops it) and which of `syncd reconcile`.
            of_service = set(self.rng.sample(range(kills), min(kills, self.service_kills)))
            for k in range(kills):
                if time.monotonic() > self.deadline:
                    break
                self.kill_once(world, figures, service=k in of_service)
            self.converge(world, figures, "after kills")
            for n in range(schedules):
                if n and time.monotonic() > self.deadline:   # every run has one schedule at least
                    break
                self.schedule(world, figures, passes)
                self.converge(world, figures, "after a fault schedule")
            check = world.check()
            figures.duplicates, figures.lost = check.duplicates, check.lost
            figures.wrong_cancellations = check.wrong_cancellations
            figures.notes += [f"run {number}: {n}" for n in check.notes if not n.startswith("unsettled")]
        finally:
            # A clean run's folder goes; one that found something stays, for a look.
            clean = not (figures.duplicates or figures.lost or figures.wrong_cancellations or figures.tracebacks
                         or max(figures.passes, default=0) > 2 or figures.bad_stops or figures.run_ended)
            world.close(keep=not clean)
            if not clean:
                kept = f" (database: schema {world.schema})" if world.schema else ""
                figures.notes.append(f"run {number}: its database, configuration and logs are kept in {world.folder}"
                                     + kept)
        return figures

    def kill_once(self, world: World, figures: Figures, *, service: bool = False) -> None:
        wanted = [w for w in (world.edit() for _ in range(self.rng.randint(2, 4))) if w]
        held = self.rng.random() < 0.5 and wanted
        stop = service and not held and self.rng.random() < 0.5
        if held:
            hold = Hold(drop=True)
            op = self.rng.choice(wanted)
            if op in ULTIMO_WRITES:
                world.ultimo.inject("hold", workflow=op, hold=hold)
            else:
                world.hold_calendar_write(op, hold)
            result = world.serve(hold=hold) if service else world.reconcile(hold=hold)
        elif service:
            result = world.serve(after_first_write=self.rng.uniform(0.0, 1.0), stop=stop)
        else:
            result = world.reconcile(kill_in_writes=self.rng.uniform(0.0, 1.0))
        world.ultimo.faults.clear()
        world.calendar_faults().clear()
        self.tally(result, figures)
        command = "syncd run" if service else "syncd reconcile"
        if service and result.status is not None and held:
            stop, held = True, False     # the held write did not come in time: the service was stopped
        if stop:
            figures.stops += 1
            figures.stops_in_writes += result.writes > 0
            if result.status != 0:
                figures.bad_stops += 1
                figures.notes.append(f"syncd run stopped with SIGTERM exited {result.status}: "
                                     + _errors(result.stdout + result.stderr))
            self.say(f"syncd run stopped (exit {result.status}) after {result.seconds:.1f}s, {result.writes} writes")
        elif result.status is None:
            figures.kills += 1
            figures.kills_in_writes += result.writes > 0
            figures.kills_held += bool(held)
            figures.kills_service += service
            self.say(f"{command} killed {'with ' + op + ' answer held' if held else 'at random'} after "
                     f"{result.seconds:.1f}s, {result.writes} writes")
        else:
            if service:
                figures.notes.append(f"syncd run ended by itself (exit {result.status}): "
                                     + _errors(result.stdout + result.stderr))
                figures.run_ended += 1
            self.say(f"{command} ended by itself ({result.status}) after {result.seconds:.1f}s")

    def schedule(self, world: World, figures: Figures, passes: int) -> None:
        figures.schedules += 1
        seed = self.rng.randrange(2**32)
        world.ultimo.faults.randomly(0.2, ULTIMO_RANDOM, seed=seed, delay=3.0)
        if world.graph is not None:
            world.graph.faults.randomly(0.2, GRAPH_RANDOM, seed=seed + 1, delay=3.0, retry_after=1)
        else:
            world.ews.faults.randomly(0.2, EWS_RANDOM, seed=seed + 1, delay=3.0, back_off_ms=100)
        for entry in self.corpus_entries("ultimo", corpus.ULTIMO):
            world.ultimo.inject("answer_after", workflow=_ULTIMO_CALL[entry.call], answer=entry.response())
        if world.graph is not None:
            for entry in self.corpus_entries("graph", corpus.GRAPH):
                world.graph.inject("answer_after", op=entry.call, answer=entry.response())
        else:
            for entry in self.corpus_entries("ews", corpus.EWS):
                world.ews.inject("answer_after", op=entry.call, answer=entry.response())
        stop = threading.Event()

        def people() -> None:
            while not stop.wait(self.rng.uniform(0.2, 0.8)):
                world.edit()

        editor = threading.Thread(target=people, daemon=True)
        editor.start()
        try:
            for _ in range(passes):
                result = world.reconcile()
                self.tally(result, figures)
                self.say(f"faulty pass: exit {result.status}, {result.writes} writes, {result.seconds:.1f}s")
        finally:
            stop.set()
            editor.join()
            world.ultimo.faults.clear()
            world.calendar_faults().clear()

    def corpus_entries(self, side: str, entries: tuple[corpus.Malformed, ...]) -> list[corpus.Malformed]:
        start = self.corpus_next[side]
        self.corpus_next[side] = start + CORPUS_PER_SCHEDULE
        return [entries[(start + i) % len(entries)] for i in range(CORPUS_PER_SCHEDULE)]

    def converge(self, world: World, figures: Figures, when: str) -> None:
        """Passes without faults until both sides agree and a pass exits 0; then one more
        that must write nothing."""
        for n in range(1, MAX_PASSES + 1):
            result = world.reconcile()
            self.tally(result, figures)
            check = world.check()
            if result.status == 0 and check.converged:
                clean = world.reconcile()
                self.tally(clean, figures)
                if clean.writes or clean.status != 0:
                    n += 1
                    figures.notes.append(f"{when}: the pass after converging wrote {clean.writes} times "
                                         f"(exit {clean.status})")
                figures.passes.append(n)
                self.say(f"{when}: converged in {n} pass(es)")
                return
            if n == MAX_PASSES:
                figures.passes.append(n + 1)
                figures.notes.append(f"{when}: not converged after {n} passes (exit {result.status}): "
                                     + "; ".join(check.notes[:3]) + " | " + _errors(result.stdout))

    def tally(self, result: object, figures: Figures) -> None:
        tracebacks = result.tracebacks  # type: ignore[attr-defined]
        if tracebacks:
            figures.tracebacks += tracebacks
            figures.notes.append("traceback: " + result.stderr.strip().splitlines()[-1][:200])  # type: ignore[attr-defined]


def _errors(stdout: str) -> str:
    return " / ".join(line.strip() for line in stdout.splitlines() if "error" in line or "HALTED" in line)[:400]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="short")
    parser.add_argument("--seed", type=int, default=None, help="random seed (printed; default: from the clock)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds after which no new run or kill starts, nor a run's second schedule "
                             "(default: 240 short, 5400 long)")
    parser.add_argument("--runs", type=int, default=None, help="number of runs (default by mode)")
    parser.add_argument("--kills", type=int, default=None, help="kills per run (default by mode)")
    parser.add_argument("--schedules", type=int, default=None, help="fault schedules per run (default by mode)")
    parser.add_argument("--series", action="store_true",
                        help="people also book daily series in Exchange, move and delete single occurrences")
    parser.add_argument("--backend", choices=("ews", "graph"), default="ews",
                        help="the calendar protocol syncd talks (graph: to the Graph sandbox, which shares "
                             "the EWS sandbox's store)")
    parser.add_argument("--database", default=None, metavar="URL",
                        help="a PostgreSQL server (e.g. $SYNCD_TEST_POSTGRES_URL): each run gets a schema of its own "
                             "there (default: SQLite in the run's folder)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every pass")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 100_000
    limit = args.time_limit if args.time_limit is not None else (240 if args.mode == "short" else 5400)
    runs = args.runs if args.runs is not None else MODES[args.mode][0]
    began = time.monotonic()
    campaign = Campaign(seed, args.mode, began + limit, args.verbose, args.series, args.kills, args.schedules,
                        backend=args.backend, database=args.database)
    print(f"chaos: {args.mode} campaign on {args.backend.upper() if args.backend == 'ews' else 'Graph'}"
          f"{' and PostgreSQL' if args.database else ''}, seed {seed}, {runs} runs, time limit {limit:g}s", flush=True)
    total = Figures()
    for number in range(1, runs + 1):
        if time.monotonic() > campaign.deadline:
            print(f"chaos: time limit reached before run {number}")
            break
        started = time.monotonic()
        figures = campaign.run(number)
        total.add(figures)
        print(f"run {number}: {figures.line()} [{time.monotonic() - started:.0f}s]", flush=True)
    print(f"total: {total.line()} [{time.monotonic() - began:.0f}s, seed {seed}]")
    for note in total.notes[:40]:
        print(f"  {note}")
    missed = total.missed(args.mode)
    for goal in missed:
        print(f"chaos: goal missed: {goal}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
