"""Dask graphs on layerflow: ``layerflow.dask.get`` vs ``dask.threaded.get``, per task.

The graphs of bench/overhead.py (fan-in, chain, random DAG; 1k / 10k / 100k no-op tasks),
built as Dask graph dicts and computed by both in one process, 4 workers, median of 3.
``layerflow.dask.get`` includes translating the Dask graph (dask's convert_legacy_graph,
then one pass building the layerflow graph), shown alone in the "translate" column.
Usage: python bench/dask_get.py [--sizes 1000,10000,100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from dask.threaded import get as threaded_get  # noqa: E402
from graphs import SHAPES, timed, to_dask  # noqa: E402

import layerflow as lf  # noqa: E402
from layerflow.dask import _translate  # noqa: E402

WORKERS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"Dask graphs, us per no-op task ({WORKERS} workers, median of {args.repeat})")
    header = f"{'shape':<11} {'N':>7} {'lf.dask.get':>12} {'translate':>10}"
    header += f" {'dask.threaded':>14} {'dask/lf':>8}"
    print(header)
    print("-" * len(header))
    for shape, make in SHAPES.items():
        for n in sizes:
            dsk = to_dask(make(n))
            keys = [f"t{n - 1}"]  # the sink (the chain's end, the fan-in's sum)
            if shape == "random DAG":
                keys = list(dsk)  # a random DAG has many sinks: ask for every key
            per = 1e6 / n
            ours = timed(partial(lf.dask.get, dsk, keys, max_workers=WORKERS), args.repeat)
            translate = timed(partial(_translate, dsk, keys, None, {}), args.repeat)
            theirs = timed(partial(threaded_get, dsk, keys, num_workers=WORKERS), args.repeat)
            print(
                f"{shape:<11} {n:>7} {ours * per:12.1f} {translate * per:10.1f} "
                f"{theirs * per:14.1f} {theirs / ours:7.1f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
