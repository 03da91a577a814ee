"""Scheduling overhead per task: layerflow vs raw ThreadPoolExecutor vs dask.threaded.get.

No-op tasks on fan-in, chain and random-DAG graphs of 1k / 10k / 100k nodes, 4 workers,
median of 3 runs, all in one process so the ratios are from one run on one machine; a
small run's whole cost (10 tasks, the default worker bound: what a short pipeline pays per
run); then what declaring costs: 1,000,000 ``flow.add`` calls of one function.
Usage: python bench/overhead.py [--sizes 1000,10000,100000] [--repeat 3] [--adds 1000000]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from graphs import SHAPES, dask_noop, timed, to_dask, to_flow  # noqa: E402

import layerflow as lf  # noqa: E402

WORKERS = 4


def raw_tpe(n: int) -> None:
    with ThreadPoolExecutor(WORKERS) as ex:
        futures = [ex.submit(dask_noop) for _ in range(n)]
        for f in futures:
            f.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument("--adds", type=int, default=1_000_000)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    try:
        if args.no_dask:
            raise ImportError
        from dask.threaded import get
    except ImportError:
        get = None
    print(f"Scheduling overhead, us per no-op task ({WORKERS} workers, median of {args.repeat})")
    header = f"{'shape':<11} {'N':>7} {'layerflow':>10} {'raw TPE':>9} {'dask.threaded':>14}"
    header += f" {'lf/TPE':>7} {'dask/lf':>8}"
    print(header)
    print("-" * len(header))
    for shape, make in SHAPES.items():
        for n in sizes:
            parents = make(n)
            flow = to_flow(parents)
            lf_t = timed(partial(flow.run, max_workers=WORKERS), args.repeat) / n * 1e6
            tpe_t = timed(partial(raw_tpe, n), args.repeat) / n * 1e6
            if get is not None:
                dsk = to_dask(parents)
                keys = list(dsk)
                dk_t = timed(partial(get, dsk, keys, num_workers=WORKERS), args.repeat) / n * 1e6
                dk, ratio = f"{dk_t:14.1f}", f"{dk_t / lf_t:7.1f}x"
            else:
                dk, ratio = f"{'-':>14}", f"{'-':>8}"
            print(
                f"{shape:<11} {n:>7} {lf_t:10.1f} {tpe_t:9.1f} {dk} {lf_t / tpe_t:6.2f}x {ratio}",
                flush=True,
            )
    small(get)
    sequential(SHAPES, 10_000, args.repeat, get is not None)
    adding(args.adds, args.repeat)


def small(get: Callable[..., object] | None, n: int = 10, repeat: int = 50) -> None:
    """A whole run of ``n`` independent no-op tasks with the default worker bound, against
    a ``ThreadPoolExecutor`` made for them (as a script would) and ``dask.threaded.get``."""
    print(f"\nSmall runs, ms per run of {n} independent no-op tasks (median of {repeat})")
    flow = lf.Flow("small")
    for k in range(n):
        flow.add(dask_noop, name=f"t{k}")

    def tpe() -> None:
        with ThreadPoolExecutor() as ex:
            list(ex.map(lambda _: dask_noop(), range(n)))

    def median(fn: Callable[[], object]) -> float:
        fn()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3

    lf_ms = median(partial(flow.run, progress=False))
    tpe_ms = median(tpe)
    dk = "-"
    if get is not None:
        dsk = {f"t{k}": (dask_noop,) for k in range(n)}
        dk = f"{median(partial(get, dsk, list(dsk))):.2f}"
    print(f"layerflow {lf_ms:.2f}   ThreadPoolExecutor {tpe_ms:.2f}   dask.threaded {dk}")


def sequential(shapes: dict, n: int, repeat: int, with_dask: bool) -> None:
    """One task at a time in the calling thread: ``mode="sequential"`` against Dask's
    synchronous scheduler (``dask.get``) and a plain loop over the tasks in order."""
    print(f"\nSequential, us per no-op task ({n:,} tasks, the calling thread, median of {repeat})")
    header = f"{'shape':<11} {'layerflow':>10} {'plain loop':>11} {'dask.get':>9} {'dask/lf':>8}"
    print(header)
    print("-" * len(header))
    for shape, make in shapes.items():
        parents = make(n)
        flow = to_flow(parents)
        lf_t = timed(partial(flow.run, mode="sequential"), repeat) / n * 1e6

        def loop(parents: list[list[int]] = parents) -> None:  # the floor: calls in order
            values: list[object] = []
            for ps in parents:
                values.append(dask_noop(*[values[p] for p in ps]))

        loop_t = timed(loop, repeat) / n * 1e6
        dk, ratio = f"{'-':>9}", f"{'-':>8}"
        if with_dask:
            from dask import get as sync_get

            dsk = to_dask(parents)
            dk_t = timed(partial(sync_get, dsk, list(dsk)), repeat) / n * 1e6
            dk, ratio = f"{dk_t:9.1f}", f"{dk_t / lf_t:7.1f}x"
        print(f"{shape:<11} {lf_t:10.1f} {loop_t:11.1f} {dk} {ratio}", flush=True)


def adding(n: int, repeat: int) -> None:
    """Declaring a big flow: ``n`` ``flow.add`` calls of one function, without options, as a
    chain (``inputs=``) and with ``params=``; the function's signature is read once."""

    def f(x: int = 1) -> int:
        return x

    def plain() -> lf.Flow:
        flow = lf.Flow("adds")
        for k in range(n):
            flow.add(f, name=f"t{k}")
        return flow

    def chain() -> lf.Flow:
        flow = lf.Flow("adds")
        flow.add(f, name="t0")
        for k in range(1, n):
            flow.add(f, name=f"t{k}", inputs={"x": f"t{k - 1}"})
        return flow

    def params() -> lf.Flow:
        flow = lf.Flow("adds")
        for k in range(n):
            flow.add(f, name=f"t{k}", params={"x": k})
        return flow

    def seconds(make: Callable[[], lf.Flow]) -> float:  # timed() would time freeing the flow
        times = []
        for _ in range(repeat):
            gc.collect()
            t0 = time.perf_counter()
            flow = make()
            times.append(time.perf_counter() - t0)
            del flow
        return statistics.median(times)

    print(f"\nDeclaring, {n:,} flow.add calls of one function (median of {repeat})")
    header = f"{'adds':<11} {'seconds':>8} {'us/add':>7}"
    print(header)
    print("-" * len(header))
    for label, make in (("plain", plain), ("chain", chain), ("params", params)):
        t = seconds(make)
        print(f"{label:<11} {t:8.2f} {t / n * 1e6:7.2f}", flush=True)


if __name__ == "__main__":
    main()
