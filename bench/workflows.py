"""Real workflow shapes: WfCommons recipes run as sleeping tasks, under 8 workers.

Five scientific workflows (Montage, Epigenomics, 1000Genome, Seismology, Cycles) are drawn
from the ``wfcommons`` package's recipes, offline and seeded, at about 200 tasks each; their
task runtimes are scaled to ``--work`` seconds of sleep in all. Each shape runs:

- layerflow, dynamic, no store (so no history: ranked by task counts), median of ``--repeat``;
- layerflow with a store that holds no history of the flow: the store's cost alone;
- layerflow with the store on, after one recorded run (ranked by the durations it
  recorded; every run also pays the store's cost per task), median of ``--repeat``;
- the same ranking without the store's cost: the recorded durations given to a run
  without a store (as ``makespan.py``'s "with history"), median of ``--repeat``;
- layerflow layer by layer (a barrier between layers), once;
- ``dask.threaded.get`` on the same graph, once;

and each wall time is divided by the tight lower bound of ``makespan.py`` (no schedule can
beat 1.000). Issue #19's target: history never makes a run slower: "store, history" no
worse than "store, new" (the same store's cost, without history), nor "ranking only" than
"no store".

    python bench/workflows.py [--tasks 200] [--work 8] [--workers 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from makespan import critical_path, release_bound, to_flow, wall_with_history  # noqa: E402

from layerflow.recorder import flow_key  # noqa: E402
from layerflow.store import Store  # noqa: E402

#: the recipes, by the name the WfCommons papers give them
RECIPES = {
    "Montage": "MontageRecipe",
    "Epigenomics": "EpigenomicsRecipe",
    "1000Genome": "GenomeRecipe",
    "Seismology": "SeismologyRecipe",
    "Cycles": "CyclesRecipe",
}


def shape(recipe: str, tasks: int, seed: int) -> tuple[list[list[int]], list[float]]:
    """One generated workflow: each task's parents (earlier tasks) and its runtime (s)."""
    import networkx as nx
    import numpy as np
    from wfcommons import WorkflowGenerator
    from wfcommons.wfchef import recipes

    random.seed(seed)  # the generator draws from both
    np.random.seed(seed)
    workflow = WorkflowGenerator(getattr(recipes, recipe).from_num_tasks(tasks)).build_workflow()
    order = list(nx.topological_sort(workflow))
    index = {name: k for k, name in enumerate(order)}
    parents = [sorted(index[p] for p in workflow.predecessors(name)) for name in order]
    runtimes = [max(float(workflow.nodes[name]["task"].runtime), 0.0) for name in order]
    return parents, runtimes


def scaled(runtimes: list[float], total: float) -> list[float]:
    factor = total / sum(runtimes)
    return [r * factor for r in runtimes]


def timed(call, *args, **kwargs) -> float:
    gc.collect()
    t0 = time.perf_counter()
    call(*args, **kwargs)
    return time.perf_counter() - t0


def nap(seconds: float, *upstream: object) -> None:
    """``sleeper`` for Dask's tuples, which pass upstream values positionally."""
    time.sleep(seconds)


def dask_graph(parents: list[list[int]], durations: list[float]) -> dict:
    return {
        f"t{i}": (nap, d, *[f"t{p}" for p in ps])
        for i, (ps, d) in enumerate(zip(parents, durations, strict=True))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--work", type=float, default=8.0, help="seconds of sleep per shape")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    import dask.threaded

    w = args.workers
    print(
        f"Workflow shapes (WfCommons recipes, ~{args.tasks} tasks, {args.work:g} s of sleep, "
        f"{w} workers), wall time / tight lower bound; median of {args.repeat} where shown"
    )
    header = (
        f"{'shape':<12} {'tasks':>5} {'tight (s)':>9} {'no store':>9} {'store, new':>10}"
        f" {'store, history':>14} {'history/new':>11} {'ranking only':>12} {'layered':>8}"
        f" {'dask':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, recipe in RECIPES.items():
        parents, runtimes = shape(recipe, args.tasks, args.seed)
        durations = scaled(runtimes, args.work)
        tight = release_bound(parents, durations, w)
        assert tight >= max(critical_path(parents, durations), sum(durations) / w) - 1e-9
        flow = to_flow(parents, durations)
        with tempfile.TemporaryDirectory(prefix="lf-workflows-") as folder:
            flow.run(max_workers=w, store=folder)  # the one recorded run: history from now on
            store = Store(folder)
            recorded = store.durations(flow_key(flow.plan().graph))
            store.close()
            none, new, hist, rank = [], [], [], []
            for k in range(args.repeat):  # interleaved: the machine's drift hits all alike
                none.append(timed(flow.run, max_workers=w, store=False))
                empty = Path(folder) / f"empty-{k}"  # a store without this flow's history
                Store(empty).close()
                new.append(timed(flow.run, max_workers=w, store=empty))
                hist.append(timed(flow.run, max_workers=w, store=folder))
                rank.append(wall_with_history(flow, w, recorded))
        layered = timed(flow.run, max_workers=w, mode="layered", store=False)
        graph = dask_graph(parents, durations)
        dask_time = timed(dask.threaded.get, graph, list(graph), num_workers=w)
        t_none, t_new, t_hist, t_rank = (statistics.median(x) for x in (none, new, hist, rank))
        print(
            f"{name:<12} {len(parents):>5} {tight:9.2f} {t_none / tight:8.3f}x"
            f" {t_new / tight:9.3f}x {t_hist / tight:13.3f}x {t_hist / t_new:10.3f}x"
            f" {t_rank / tight:11.3f}x {layered / tight:7.3f}x {dask_time / tight:5.3f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
