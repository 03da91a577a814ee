"""Planning a large random DAG: resolve + validate + order + layers + critical path.

Compared in one run with graphlib (the standard library's TopologicalSorter) on the same
graph. Time is measured without tracing; memory (peak Python allocation of the planning
step, the declared flow excluded) in a second pass under tracemalloc.
Usage: python bench/plan.py [--n 1000000]
"""

from __future__ import annotations

import argparse
import gc
import graphlib
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from graphs import random_dag, to_flow  # noqa: E402


def plan_all(flow):
    plan = flow.plan()
    plan.layers  # noqa: B018
    plan.critical_path()
    return plan


def graphlib_order(parents):
    ts = graphlib.TopologicalSorter(
        {f"t{i}": [f"t{p}" for p in ps] for i, ps in enumerate(parents)}
    )
    return list(ts.static_order())


def measure(fn, *args):
    gc.collect()
    t0 = time.perf_counter()
    out = fn(*args)
    elapsed = time.perf_counter() - t0
    del out
    gc.collect()
    tracemalloc.start()
    out = fn(*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del out
    return elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--no-graphlib", action="store_true")
    args = parser.parse_args()
    n = args.n
    parents = random_dag(n)
    flow = to_flow(parents)
    print(f"Planning a random DAG of {n:,} nodes (0-3 parents each)")
    print(f"{'planner':<32} {'seconds':>8} {'bytes/node':>11}")
    t, peak = measure(plan_all, flow)
    print(f"{'layerflow (order+layers+crit.)':<32} {t:8.2f} {peak / n:11.0f}", flush=True)
    if not args.no_graphlib:
        tg, peakg = measure(graphlib_order, parents)
        print(f"{'graphlib static_order':<32} {tg:8.2f} {peakg / n:11.0f}")
        print(f"layerflow is {tg / t:.1f}x faster than graphlib")


if __name__ == "__main__":
    main()
