"""Graph shapes shared by the benchmarks: the same structure as a Flow and as a Dask graph.

A shape is a list of parent lists: ``parents[i]`` are the earlier tasks task ``i`` uses.
"""

from __future__ import annotations

import gc
import random
import statistics
import time

import layerflow as lf


def timed(fn, repeat: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeat`` calls, each after a full collection."""
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def chain(n: int) -> list[list[int]]:
    """Each task uses the one before it: pure hand-off latency."""
    return [[]] + [[i - 1] for i in range(1, n)]


def fan_in(n: int) -> list[list[int]]:
    """``n - 1`` independent tasks and one that uses them all."""
    return [[] for _ in range(n - 1)] + [list(range(n - 1))]


def random_dag(n: int, max_parents: int = 3, seed: int = 1) -> list[list[int]]:
    """Each task uses 0 to ``max_parents`` distinct earlier tasks, chosen at random."""
    rng = random.Random(seed)
    out: list[list[int]] = []
    for i in range(n):
        k = rng.randint(0, min(max_parents, i))
        out.append(rng.sample(range(i), k) if k else [])
    return out


SHAPES = {"fan-in": fan_in, "chain": chain, "random DAG": random_dag}


def noop(**upstream: object) -> None:
    """A task that does nothing with its inputs."""
    return None


def dask_noop(*upstream: object) -> None:
    """The same for Dask, which passes values positionally."""
    return None


def to_flow(parents: list[list[int]], fn=noop) -> lf.Flow:
    """The shape as a Flow: task ``t{i}`` receives its parents as keyword arguments."""
    flow = lf.Flow("bench")
    for i, ps in enumerate(parents):
        flow.add(fn, name=f"t{i}", inputs={f"p{k}": f"t{p}" for k, p in enumerate(ps)})
    return flow


def to_dask(parents: list[list[int]], fn=dask_noop) -> dict:
    """The shape as a Dask graph dict with the same keys."""
    return {f"t{i}": (fn, *[f"t{p}" for p in ps]) for i, ps in enumerate(parents)}
