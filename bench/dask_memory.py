"""Dask collections on ``lf.dask.get`` vs ``dask.threaded.get``: peak memory and wall time.

Each workload runs once per scheduler in a fresh Python process, so that the peak resident
memory (``ru_maxrss`` of that child, from ``os.wait4``) is that scheduler's alone; the wall
time is measured in the child around ``compute`` only. The two schedulers alternate, and
each figure is the median of ``--repeat`` runs. Both use as many threads as the machine
has CPUs, Dask's default.

    python bench/dask_memory.py [--repeat 3] [--only readme,transpose,...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SCHEDULERS = ("dask.threaded", "lf.dask.get")


def _collection(name: str):
    """The workload ``name``: what ``compute`` is called on."""
    import dask.array as da

    if name == "readme":  # README's array example
        x = da.random.default_rng(0).random((20_000, 20_000), chunks=(1000, 1000))
        return (x - x.mean(axis=0)).std()
    if name == "transpose":
        x = da.random.default_rng(1).random((20_000, 20_000), chunks=(1000, 1000))
        return (x + x.T).mean(axis=0)
    if name == "dot":
        x = da.random.default_rng(2).random((8_000, 8_000), chunks=(2000, 2000))
        return x.dot(x.T).sum()
    if name == "bag":
        import dask.bag as db

        return (
            db.range(200, npartitions=100)
            .map_partitions(_lines)
            .str.split()
            .flatten()
            .frequencies()
            .topk(10, key=1)
        )
    if name == "groupby":
        import dask

        df = dask.datasets.timeseries(
            start="2000-01-01", end="2000-03-01", freq="1s", partition_freq="1D", seed=3
        )
        return df.groupby("name").agg({"x": "mean", "y": "max", "id": "count"})
    raise SystemExit(f"unknown workload {name!r}")


WORKLOADS = {
    "readme": "README example: (x - x.mean(0)).std(), 20k^2, 1k chunks",
    "transpose": "(x + x.T).mean(axis=0), 20k^2, 1k chunks",
    "dot": "x.dot(x.T).sum(), 8k^2, 2k chunks",
    "bag": "bag word count, 100 partitions, 10M words",
    "groupby": "dataframe groupby, 60 partitions, 5M rows",
}


def _lines(part: list[int]) -> list[str]:
    """Text for one bag partition: 10,000 lines of 10 words from a 5,000-word vocabulary."""
    import random

    rng = random.Random(part[0] if part else 0)
    vocab = [f"w{k}" for k in range(5000)]
    return [" ".join(rng.choices(vocab, k=10)) for _ in range(10_000)]


def _child(workload: str, scheduler: str) -> None:
    import dask

    import layerflow as lf

    collection = _collection(workload)
    get = lf.dask.get if scheduler == "lf.dask.get" else dask.threaded.get
    t0 = time.perf_counter()
    dask.compute(collection, scheduler=get)
    print(json.dumps({"wall": time.perf_counter() - t0}))


def _measure(workload: str, scheduler: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one run in a fresh process."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", workload, scheduler],
        stdout=subprocess.PIPE,
        text=True,
    )
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{workload} on {scheduler} failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])["wall"], usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join(WORKLOADS))
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "SCHEDULER"))
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    names = [n for n in args.only.split(",") if n]
    for name in names:
        if name not in WORKLOADS:
            raise SystemExit(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    print(
        f"Dask collections: peak RSS and wall time per scheduler ({os.cpu_count()} threads, "
        f"a fresh process per run, median of {args.repeat})"
    )
    header = (
        f"{'workload':<56} {'threaded MB':>11} {'lf MB':>7} {'lf/thr':>7}"
        f" {'threaded s':>10} {'lf s':>6} {'lf/thr':>7}"
    )
    print(header)
    print("-" * len(header))
    for name in names:
        runs: dict[str, list[tuple[float, float]]] = {s: [] for s in SCHEDULERS}
        for _ in range(args.repeat):
            for s in SCHEDULERS:  # alternating: drift on the machine hits both alike
                runs[s].append(_measure(name, s))
        wall = {s: statistics.median(w for w, _ in runs[s]) for s in SCHEDULERS}
        rss = {s: statistics.median(m for _, m in runs[s]) for s in SCHEDULERS}
        thr, ours = SCHEDULERS
        print(
            f"{WORKLOADS[name]:<56} {rss[thr]:11.0f} {rss[ours]:7.0f} "
            f"{rss[ours] / rss[thr]:6.2f}x {wall[thr]:10.2f} {wall[ours]:6.2f} "
            f"{wall[ours] / wall[thr]:6.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
