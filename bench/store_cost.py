"""What the store costs per task: the same runs with the store on and off.

400 independent sleeping tasks of 5 ms and of 20 ms, 8 workers; each run with the store in a
fresh folder (``store=path``: every result made durable before its task counts as done) and
without (``store=False``), alternating, median of ``--repeat``. "Extra worker time per
task" is (makespan on - makespan off) x workers / tasks: what each task's durability cost a
worker. Issue #19's targets: at most 0.5 ms on the 5 ms tasks, at most 1.05x the store-off
makespan on the 20 ms tasks.

    python bench/store_cost.py [--tasks 400] [--workers 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import layerflow as lf


def _flow(n: int, seconds: float) -> lf.Flow:
    flow = lf.Flow(name=f"store-cost-{int(seconds * 1000)}ms")

    def work() -> int:
        time.sleep(seconds)
        return 1

    for k in range(n):
        flow.add(work, name=f"t{k}")
    return flow


def _wall(flow: lf.Flow, workers: int, store: object) -> float:
    t0 = time.perf_counter()
    flow.run(max_workers=workers, store=store)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, w = args.tasks, args.workers
    print(f"The store's cost: {n} sleeping tasks, {w} workers, median of {args.repeat}")
    header = (
        f"{'task':>6} {'store off (s)':>14} {'store on (s)':>13} {'on/off':>7}"
        f" {'extra ms/task':>14}"
    )
    print(header)
    print("-" * len(header))
    for seconds in (0.005, 0.020):
        flow = _flow(n, seconds)
        off, on = [], []
        for _ in range(args.repeat):
            off.append(_wall(flow, w, False))
            with tempfile.TemporaryDirectory(prefix="lf-store-cost-") as folder:
                on.append(_wall(flow, w, folder))
        t_off, t_on = statistics.median(off), statistics.median(on)
        extra = (t_on - t_off) * w / n * 1000
        print(
            f"{seconds * 1000:4.0f}ms {t_off:14.3f} {t_on:13.3f} {t_on / t_off:6.2f}x"
            f" {extra:14.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
