"""The Dask backend's overhead per task against Dask itself, on the same cluster.

No-op tasks on random DAGs (0-3 parents each) of 1k and 10k nodes, run with
``flow.run(backend="dask", client=...)`` and submitted directly as one graph with
``client.get`` (the ``client.compute`` path for a plain graph), both bringing every value
back, on one local cluster (2 single-threaded worker processes, ``allowed-failures: 0``),
median of 3, in one run.
Usage: python bench/dask_backend.py [--sizes 1000,10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from graphs import random_dag, timed, to_dask, to_flow  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    import dask
    import distributed

    # as layerflow's own cluster, and as it asks of others: Dask does not run a task again
    # when its worker dies (with allowed-failures > 0 each task asks the scheduler first)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    client = distributed.Client(cluster)
    print(
        f"Dask backend overhead, us per no-op task ({args.workers} worker processes, "
        f"median of {args.repeat}; target: layerflow within 1.5x of Dask's own)"
    )
    header = f"{'graph':<11} {'N':>7} {'layerflow':>10} {'client.get':>11} {'lf/dask':>8}"
    print(header)
    print("-" * len(header))
    try:
        for n in [int(s) for s in args.sizes.split(",")]:
            parents = random_dag(n)
            flow = to_flow(parents)
            dsk = to_dask(parents)
            keys = list(dsk)
            run = partial(flow.run, backend="dask", client=client)
            lf_t = timed(run, args.repeat) / n * 1e6
            dk_t = timed(partial(client.get, dsk, keys), args.repeat) / n * 1e6
            print(f"{'random DAG':<11} {n:>7} {lf_t:10.1f} {dk_t:11.1f} {lf_t / dk_t:7.2f}x")
    finally:
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
