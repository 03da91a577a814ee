"""Makespan under a bounded pool: dynamic vs layered scheduling of sleeping tasks.

500-node random DAGs whose tasks sleep for lognormal durations scaled to 20 s of work in
all (seeded, so every run sleeps the same), in two shapes: "wide" (parents drawn from
anywhere earlier: few layers) and "deep" (parents drawn from the previous 20 tasks: many
layers). Each flow runs once per mode and worker count, one run at a time; wall times are
compared with the lower bound max(critical path, total work / workers), with a tighter lower
bound (see ``release_bound``), and the dynamic time with ``plan.simulate``'s prediction.
Usage: python bench/makespan.py [--scale 1.0] [--n 500] [--seed 1]
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import layerflow as lf  # noqa: E402
from layerflow.recorder import flow_key  # noqa: E402
from layerflow.store import Store  # noqa: E402

WORKERS = (4, 8)
TOTAL_WORK = 20.0  # seconds of sleep per DAG at --scale 1
WINDOW = 20  # how far back a "deep" task looks for its parents


def wide(n: int, rng: random.Random, max_parents: int = 5) -> list[list[int]]:
    """Each task uses 0 to ``max_parents`` distinct tasks from anywhere earlier."""
    out: list[list[int]] = []
    for i in range(n):
        k = rng.randint(0, min(max_parents, i))
        out.append(rng.sample(range(i), k) if k else [])
    return out


def deep(n: int, rng: random.Random, max_parents: int = 3) -> list[list[int]]:
    """Each task but the first uses 1 to ``max_parents`` of the ``WINDOW`` tasks before it."""
    out: list[list[int]] = [[]]
    for i in range(1, n):
        recent = range(max(0, i - WINDOW), i)
        out.append(rng.sample(recent, rng.randint(1, min(max_parents, len(recent)))))
    return out


SHAPES = {"wide": wide, "deep": deep}


def lognormal(n: int, rng: random.Random, total: float, sigma: float = 1.0) -> list[float]:
    """``n`` lognormal durations scaled so that they add up to ``total`` seconds."""
    raw = [rng.lognormvariate(0.0, sigma) for _ in range(n)]
    factor = total / sum(raw)
    return [d * factor for d in raw]


def critical_path(parents: list[list[int]], durations: list[float]) -> float:
    """The longest chain of dependent tasks, in seconds (parents always come earlier)."""
    finish: list[float] = []
    for ps, d in zip(parents, durations, strict=True):
        finish.append(d + max((finish[p] for p in ps), default=0.0))
    return max(finish, default=0.0)


def release_bound(parents: list[list[int]], durations: list[float], workers: int) -> float:
    """A lower bound on any schedule's makespan, at least max(critical path, work/workers).

    No task can start before its head (the longest chain of work before it), so the work
    left after time ``a`` -- all of every task whose head is >= ``a``, the rest of those
    straddling it -- needs ``a + work_after(a) / workers`` at least; the same holds
    mirrored, with tails. Where the critical path and work/workers are close, this is well
    above both (deep DAGs at 4 workers: about 6%), and no scheduler can beat it."""
    n = len(parents)
    head = [0.0] * n
    for i, ps in enumerate(parents):
        head[i] = max((head[p] + durations[p] for p in ps), default=0.0)
    succs: list[list[int]] = [[] for _ in range(n)]
    for i, ps in enumerate(parents):
        for p in ps:
            succs[p].append(i)
    tail = [0.0] * n  # the longest chain of work after each task
    for i in range(n - 1, -1, -1):
        tail[i] = max((tail[s] + durations[s] for s in succs[i]), default=0.0)
    best = max(critical_path(parents, durations), sum(durations) / workers)
    for release in (head, tail):
        for a in sorted(set(release)):
            work = sum(max(0.0, min(d, r + d - a)) for r, d in zip(release, durations, strict=True))
            best = max(best, a + work / workers)
    return best


def sleeper(seconds: float, **upstream: object) -> None:
    """A task that sleeps for its own duration and ignores its inputs."""
    time.sleep(seconds)


def to_flow(parents: list[list[int]], durations: list[float]) -> lf.Flow:
    """The shape as a Flow of sleepers: task ``t{i}`` sleeps ``durations[i]`` seconds."""
    flow = lf.Flow("makespan")
    for i, (ps, d) in enumerate(zip(parents, durations, strict=True)):
        flow.add(
            sleeper,
            name=f"t{i}",
            inputs={f"p{k}": f"t{p}" for k, p in enumerate(ps)},
            params={"seconds": d},
        )
    return flow


def wall(flow: lf.Flow, workers: int, mode: str, **options) -> float:
    gc.collect()
    t0 = time.perf_counter()
    flow.run(max_workers=workers, mode=mode, **options)
    return time.perf_counter() - t0


def wall_with_history(flow: lf.Flow, workers: int, history: dict[str, float]) -> float:
    """A dynamic run ranked by past durations, without a store's cost per task: the
    ranking alone (``flow.run(store=False)`` reads no history, as it reads no store)."""
    from layerflow.options import RunOptions
    from layerflow.plan import Plan
    from layerflow.scheduler import execute

    plan = Plan(flow.plan().graph, history=lambda: history)
    gc.collect()
    t0 = time.perf_counter()
    execute(plan, {}, RunOptions(max_workers=workers))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 20 s of work")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    total = TOTAL_WORK * args.scale
    print(
        f"Makespan, {args.n} sleeping tasks, {total:g} s of work per DAG, seed {args.seed} "
        f"(targets: dynamic/bound <= 1.05 and dynamic < layered; 'tight' is a lower bound "
        f"no schedule can beat)"
    )
    header = f"{'DAG':<5} {'workers':>7} {'layers':>6} {'bound (s)':>10} {'tight (s)':>10}"
    header += f" {'dynamic (s)':>12} {'dyn/bound':>10} {'dyn/tight':>10} {'layered (s)':>12}"
    header += f" {'lay/bound':>10} {'simulate (s)':>13} {'hist/bound':>11} {'hist/tight':>11}"
    print(header)
    print("-" * len(header))
    for k, (shape, make) in enumerate(SHAPES.items()):
        rng = random.Random(args.seed * 1000 + k)
        parents = make(args.n, rng)
        durations = lognormal(args.n, rng, total)
        flow = to_flow(parents, durations)
        plan = flow.plan()
        named = {f"t{i}": d for i, d in enumerate(durations)}
        cp = critical_path(parents, durations)
        assert abs(cp - sum(named[t] for t in plan.critical_path(named))) < 1e-9
        for workers in WORKERS:
            bound = max(cp, sum(durations) / workers)
            tight = release_bound(parents, durations, workers)
            dyn = wall(flow, workers, "dynamic", store=False)
            lay = wall(flow, workers, "layered", store=False)
            sim = plan.simulate(named, max_workers=workers)
            # the same, once the store has seen one run: ranks by past durations
            with tempfile.TemporaryDirectory() as folder:
                flow.run(max_workers=workers, store=folder)  # recorded
                store = Store(folder)
                history = store.durations(flow_key(plan.graph))
                store.close()
                hist = wall_with_history(flow, workers, history)
            print(
                f"{shape:<5} {workers:>7} {len(plan.layers):>6} {bound:10.2f} {tight:10.2f}"
                f" {dyn:12.2f} {dyn / bound:9.3f}x {dyn / tight:9.3f}x {lay:12.2f}"
                f" {lay / bound:9.3f}x {sim:13.2f} {hist / bound:10.3f}x {hist / tight:10.3f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
