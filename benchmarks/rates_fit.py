"""How long the learned change rates take to fit: the first fit after a start (every kept
count loaded, the spread and how far size predicts fitted from scratch), which the service
makes before its room jobs start, and a refit once a tenth of the rooms have been read
again, which the room job whose read called for it makes outside the pacer's lock (the
others go on meanwhile with the last fit). Estates of rooms of the simulation's sizes, a
fifth of them busy, three days of counts each. Prints figures; asserts nothing.

    python benchmarks/rates_fit.py [--rooms 200 1000 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syncd.service.rates import DAY, ChangeRates  # noqa: E402


def estate(n: int, seed: int) -> tuple[ChangeRates, dict[str, int]]:
    """`n` rooms with three days of counts loaded, as a restarted service has them."""
    rng = random.Random(seed)
    rates, sizes = ChangeRates(), {}
    for i in range(n):
        room = f"room{i}"
        sizes[room] = int(88 * rng.lognormvariate(0, 0.6))
        per_day = 6.0 if i % 5 == 0 else 0.375
        found = sum(1 for _ in range(200) if rng.random() < 3 * per_day / 200)
        rates.load(room, found, 3 * DAY, 3 * DAY)
    return rates, sizes


def timed(n: int, seed: int) -> tuple[float, float]:
    rates, sizes = estate(n, seed)
    started = time.perf_counter()
    first = rates.prior(sizes)
    cold = time.perf_counter() - started
    # Enough new finds that the next call fits again (a fiftieth of those counted).
    for i in range(max(10, n // 10)):
        rates.observe(f"room{i}", 2, 3600.0, 3 * DAY + i)
    started = time.perf_counter()
    again = rates.prior(sizes)
    warm = time.perf_counter() - started
    if again.serial <= first.serial:
        raise SystemExit("rates_fit: the refit did not happen; the figures would not mean what they say")
    return cold, warm


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rooms", type=int, nargs="+", default=[200, 1000, 5000])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    print(f"{'rooms':>6} {'first fit (median of ' + str(args.repeat) + ')':>28} {'refit':>10}")
    for n in args.rooms:
        runs = [timed(n, seed) for seed in range(1, args.repeat + 1)]
        cold = statistics.median(c for c, _ in runs)
        warm = statistics.median(w for _, w in runs)
        print(f"{n:>6} {cold * 1000:>25.0f} ms {warm * 1000:>7.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
