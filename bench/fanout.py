"""Fan-out: what a map costs per element, what durability adds, what a kill loses, and
what streaming a per-item pipeline gains (issue #28's targets in brackets).

1. 100,000 no-op elements, 4 workers: us per element with the store off and on, beside
   ``ThreadPoolExecutor.map`` [store on <= 3x store off].
2. 400 elements of 5 ms at 8 workers: extra worker ms per element with the store [<= 0.5].
3. A 10,000-element map (1 ms elements, 8 workers) killed with SIGKILL at about half, then
   resumed: elements run twice that had been stored [none], and the resumed run's time
   against the remaining work at 8 workers.
4. Three mapped stages over 200 items, lognormal durations, 8 workers: makespan streamed
   (``mode="dynamic"``) and with a barrier per stage (``mode="layered"``), over the tight
   lower bound max(work / workers, longest item chain) [streamed <= 1.05x].
5. Durability at scale: 100,000 no-op tasks (the random DAG of ``overhead.py``) with the
   store on and off [<= 2x].

    python bench/fanout.py [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from graphs import random_dag, to_flow  # noqa: E402

import layerflow as lf  # noqa: E402


def _median_wall(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _noop_map(n: int) -> lf.Flow:
    flow = lf.Flow(f"fanout-noop-{n}")
    flow.add(lambda: list(range(n)), name="items")
    flow.add(lambda items: items, name="element", map="items")
    return flow


def _stored(flow: lf.Flow, workers: int):
    def run() -> None:
        with tempfile.TemporaryDirectory(prefix="lf-fanout-") as folder:
            flow.run(max_workers=workers, store=folder)

    return run


def noop_elements(n: int, repeat: int) -> None:
    flow = _noop_map(n)
    off = _median_wall(lambda: flow.run(max_workers=4, store=False), repeat) / n * 1e6
    on = _median_wall(_stored(flow, 4), repeat) / n * 1e6

    def tpe() -> None:
        with ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda x: x, range(n)))

    raw = _median_wall(tpe, repeat) / n * 1e6
    print(f"1. {n:,} no-op elements, us per element (4 workers, median of {repeat})")
    print(
        f"   store off {off:6.1f}   store on {on:6.1f} ({on / off:.2f}x off, target <= 3x)"
        f"   ThreadPoolExecutor.map {raw:6.1f}"
    )


def sleeping_elements(n: int, workers: int, repeat: int) -> None:
    def flow_of(size: int) -> lf.Flow:
        flow = lf.Flow("fanout-5ms")
        flow.add(lambda: list(range(size)), name="items")
        flow.add(lambda items: time.sleep(0.005), name="element", map="items")
        return flow

    # A run with a store pays a fixed cost too (its row, the graph and the end written and
    # synced, the database closed): the same flow over no elements measures it, so that
    # the per-element figure is the elements' own
    full, empty = flow_of(n), flow_of(0)
    off, on, off0, on0 = [], [], [], []
    for _ in range(repeat):  # alternating, as bench/store_cost.py does
        off.append(_median_wall(lambda: full.run(max_workers=workers, store=False), 1))
        on.append(_median_wall(_stored(full, workers), 1))
        off0.append(_median_wall(lambda: empty.run(max_workers=workers, store=False), 1))
        on0.append(_median_wall(_stored(empty, workers), 1))
    t_off, t_on = statistics.median(off), statistics.median(on)
    fixed = statistics.median(on0) - statistics.median(off0)
    extra = (t_on - t_off) * workers / n * 1000
    net = (t_on - t_off - fixed) * workers / n * 1000
    print(
        f"2. {n} elements of 5 ms, {workers} workers: store off {t_off:.3f}s, on {t_on:.3f}s"
        f" -> {extra:.2f} ms extra worker time per element; the store's fixed cost per run"
        f" {fixed * 1000:.0f} ms (no elements), {net:.2f} ms per element without it"
        f" (target <= 0.5)"
    )


_KILLED = """
import sys, time
import layerflow as lf

flow = lf.Flow("fanout-killed")
flow.add(lambda: list(range(int(sys.argv[3]))), name="items")

def work(items):
    time.sleep(0.001)
    with open(sys.argv[2], "a") as f:
        f.write(f"{items}\\n")
    return items

flow.add(work, name="work", map="items")
flow.run(store=sys.argv[1], resume=len(sys.argv) > 4 or None, max_workers=8)
"""


def killed_map(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="lf-fanout-kill-") as folder:
        here = Path(folder)
        script, done, store = here / "killed.py", here / "done.txt", here / "store"
        script.write_text(textwrap.dedent(_KILLED))
        args = [sys.executable, str(script), str(store), str(done), str(n)]
        proc = subprocess.Popen(args)
        while not done.exists() or len(done.read_text().split()) < n // 2:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        first = done.read_text().split()
        # what the store holds: the elements the resumed run will not call again
        from layerflow.store import Store

        s = Store(store)
        try:
            runs = s.runs()
            stored = s.finished_elements(runs[0]["run_id"]).get("work", {})
        finally:
            s.close()
        done.write_text("")
        t0 = time.perf_counter()
        subprocess.run([*args, "resume"], check=True)
        took = time.perf_counter() - t0
        again = done.read_text().split()
        twice_stored = sum(1 for k in again if int(k) in stored)
        remaining = n - len(stored)
        ideal = remaining * 0.001 / 8
        print(
            f"3. {n:,}-element map killed at {len(first):,} done ({len(stored):,} stored):"
            f" resumed run called {len(again):,}, of which {twice_stored} stored (target 0);"
            f" {took:.2f}s for {remaining:,} remaining (ideal {ideal:.2f}s at 8 workers,"
            f" plus start-up)"
        )


def streaming(items: int, workers: int, seed: int) -> None:
    rng = random.Random(seed)
    stages = 3
    durations = [
        [min(0.2, rng.lognormvariate(-4.6, 0.8)) for _ in range(items)] for _ in range(stages)
    ]
    flow = lf.Flow("fanout-stages")
    flow.add(lambda: list(range(items)), name="items")
    previous = "items"
    for s in range(stages):
        table = durations[s]

        def stage(x, table=table):
            time.sleep(table[x])
            return x

        flow.add(stage, name=f"stage{s}", map=previous, inputs={"x": previous})
        previous = f"stage{s}"
    work = sum(map(sum, durations))
    chain = max(sum(durations[s][k] for s in range(stages)) for k in range(items))
    bound = max(work / workers, chain)
    streamed = _median_wall(lambda: flow.run(max_workers=workers), 1)
    barrier = _median_wall(lambda: flow.run(max_workers=workers, mode="layered"), 1)
    print(
        f"4. {stages} mapped stages x {items} items (lognormal), {workers} workers:"
        f" bound {bound:.3f}s; streamed {streamed:.3f}s ({streamed / bound:.3f}x,"
        f" target <= 1.05x); barrier per stage {barrier:.3f}s ({barrier / bound:.3f}x)"
    )


def durable_tasks(n: int, repeat: int) -> None:
    flow = to_flow(random_dag(n))
    off = _median_wall(lambda: flow.run(max_workers=4, store=False), repeat) / n * 1e6
    on = _median_wall(_stored(flow, 4), repeat) / n * 1e6
    print(
        f"5. {n:,} no-op tasks (random DAG), us per task: store off {off:.1f}, on {on:.1f}"
        f" ({on / off:.2f}x, target <= 2x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one repeat")
    args = parser.parse_args()
    big = 20_000 if args.quick else 100_000
    repeat = 1 if args.quick else args.repeat
    print("Fan-out and durability (bench/fanout.py)")
    noop_elements(big, repeat)
    sleeping_elements(400, 8, repeat)
    killed_map(2_000 if args.quick else 10_000)
    streaming(200, 8, seed=1)
    durable_tasks(big, repeat)


if __name__ == "__main__":
    main()
