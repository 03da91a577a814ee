"""Backends: CPU-bound work on processes, many coroutines, and parallel_map.

1. 16 pure-Python CPU-bound tasks (~0.2 s each) on the process backend vs one after another.
2. 10,000 coroutines in one flow vs a bare ``asyncio.gather`` of the same coroutines: no-op
   ones, then ones that wait once.
3. ``parallel_map`` over 100,000 tiny items on threads vs ``ThreadPoolExecutor.map``.
All in one process, so the ratios are from one run on one machine.
Usage: python bench/backends.py [--cpu-tasks 16] [--coroutines 10000] [--items 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import layerflow as lf

sys.path.insert(0, str(Path(__file__).parent))
from graphs import timed  # noqa: E402


def spin(n: int) -> int:
    """Pure-Python CPU work: no I/O, holds the GIL."""
    total = 0
    for k in range(n):
        total += k * k % 7
    return total


def calibrate(seconds: float = 0.2) -> int:
    n = 200_000
    t0 = time.perf_counter()
    spin(n)
    return int(n * seconds / (time.perf_counter() - t0))


def cpu_bound(tasks: int) -> None:
    n = calibrate()
    flow = lf.Flow("cpu")
    for k in range(tasks):
        flow.add(spin, name=f"spin{k}", params={"n": n}, executor="process")
    cores = os.cpu_count() or 1

    def pool() -> None:  # the anchor: a fresh pool per run, its start-up counted too
        with ProcessPoolExecutor(cores) as ex:
            list(ex.map(spin, [n] * tasks))

    # medians of 3, interleaved: two busy processes here run 10-25% slower than one alone,
    # and by how much changes from second to second, so one run of each says little
    seq, ppe, ours = [], [], []
    for _ in range(3):
        seq.append(timed(lambda: [spin(n) for _ in range(tasks)]))
        ppe.append(timed(pool))
        ours.append(timed(lambda: flow.run()))
    sequential, anchor, processes = (statistics.median(x) for x in (seq, ppe, ours))
    print(f"{tasks} CPU-bound tasks of ~0.2 s on {cores} cores, median of 3")
    print(
        f"  sequential {sequential:5.2f} s   ProcessPoolExecutor {anchor:5.2f} s "
        f"({sequential / anchor:4.2f}x)   layerflow processes {processes:5.2f} s "
        f"({sequential / processes:4.2f}x)   lf/PPE {processes / anchor:4.2f}x   "
        f"(target >= 1.85x)"
    )


async def _nothing() -> None:
    return None


async def _wait_once() -> None:
    await asyncio.sleep(0)


def coroutines(count: int) -> None:
    """No-op coroutines (they never wait: layerflow's workers run them without an asyncio
    task each), then coroutines that wait once (each needs its own asyncio task)."""
    print(f"{count:,} coroutines, us per task (interleaved, median of 5)")
    for fn, what in ((_nothing, "no-op"), (_wait_once, "waiting once")):

        async def gather(fn=fn) -> None:
            await asyncio.gather(*(fn() for _ in range(count)))

        flow = lf.Flow("coroutines")
        for k in range(count):
            flow.add(fn, name=f"c{k}")
        flow.run()  # the first run imports the async backend
        # interleaved, median of 5: a bare gather's time alone moves by 1.5x between runs
        bare, ours = [], []
        for _ in range(5):
            bare.append(timed(lambda gather=gather: asyncio.run(gather())))
            ours.append(timed(lambda flow=flow: flow.run()))
        b, o = statistics.median(bare), statistics.median(ours)
        target = "(target <= 2x)" if fn is _nothing else ""
        print(
            f"  {what:13s} asyncio.gather {b / count * 1e6:7.1f}   layerflow "
            f"{o / count * 1e6:7.1f}   ratio {o / b:4.2f}x   {target}"
        )


def _identity(x: int) -> int:
    return x


def parallel_map(items: int) -> None:
    data = list(range(items))

    def tpe() -> None:
        with ThreadPoolExecutor() as ex:
            list(ex.map(_identity, data))

    bare = timed(tpe, repeat=3)
    ours = timed(lambda: lf.parallel_map(_identity, data), repeat=3)
    print(f"parallel_map over {items:,} tiny items, threads, us per item (median of 3)")
    print(
        f"  ThreadPoolExecutor.map {bare / items * 1e6:6.1f}   layerflow "
        f"{ours / items * 1e6:6.1f}   ratio {ours / bare:4.2f}x   (target <= 1.5x)"
    )


def live_progress(tasks: int) -> None:
    """A run with the live progress display (rendering into a buffer) against none."""
    import io

    from graphs import random_dag, to_flow

    flow = to_flow(random_dag(tasks))
    flow.plan()
    off: list[float] = []
    live: list[float] = []
    for _ in range(3):  # interleaved, so that drifts of the machine hit both alike
        off.append(timed(lambda: flow.run(max_workers=4)))
        shown = lf.Progress(io.StringIO(), live=True)
        live.append(timed(lambda shown=shown: flow.run(max_workers=4, progress=shown)))
    a, b = sorted(off)[1], sorted(live)[1]
    print(f"{tasks:,}-task random DAG with the live progress display, 4 workers (median of 3)")
    print(f"  without {a:6.2f} s   with {b:6.2f} s   ratio {b / a:4.2f}x   (target <= 1.05x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cpu-tasks", type=int, default=16)
    parser.add_argument("--coroutines", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--progress-tasks", type=int, default=100_000)
    args = parser.parse_args()
    cpu_bound(args.cpu_tasks)
    coroutines(args.coroutines)
    parallel_map(args.items)
    live_progress(args.progress_tasks)


if __name__ == "__main__":
    main()
