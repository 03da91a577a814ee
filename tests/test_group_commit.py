"""Group commit: results that finish together are made durable together, a task counts as
done only once its result is on disk, and a worker is free while its result is stored."""

from __future__ import annotations

import threading
import time

import pytest

import layerflow as lf
from layerflow.store import INLINE_MAX, Store


@pytest.fixture
def batches(monkeypatch):
    """Every batch ``Store.save_results`` is given, as the list of its task names; the
    first batch's commit is held for ``hold[0]`` seconds (so that others pile up)."""
    seen: list[list[str]] = []
    hold = [0.0]
    original = Store.save_results

    def save_results(self, run_id, batch):
        seen.append([item.name for item in batch])
        if len(seen) == 1:
            time.sleep(hold[0])
        return original(self, run_id, batch)

    monkeypatch.setattr(Store, "save_results", save_results)
    return seen, hold


def rows(folder, run_id: str) -> dict[str, str]:
    """name -> status of the tasks a run recorded, read by a connection of its own (so:
    what is committed)."""
    store = Store(folder)
    try:
        return {t["name"]: t["status"] for t in store.tasks_of(run_id)}
    finally:
        store.close()


def stored(folder, run_id: str) -> set[str]:
    """The tasks whose result a run stored, read by a connection of its own."""
    store = Store(folder)
    try:
        return set(store.finished_results(run_id))
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["thread", "async"])
def test_results_that_finish_together_are_committed_together(tmp_path, batches, backend):
    seen, hold = batches
    hold[0] = 0.3  # while the first commit is held, the other seven finish
    flow = lf.Flow("together")
    if backend == "thread":
        barrier = threading.Barrier(8)

        def work(k):
            barrier.wait(timeout=10)
            return k
    else:
        import asyncio

        async def work(k):
            await asyncio.sleep(0.01)
            return k

    for k in range(8):
        flow.add(work, name=f"t{k}", params={"k": k})
    run = flow.run(store=tmp_path, max_workers=8)
    assert run.ok and run.values == {f"t{k}": k for k in range(8)}
    assert sorted(sum(seen, [])) == [f"t{k}" for k in range(8)]  # each stored once
    assert len(seen) <= 3 and max(len(b) for b in seen) >= 4  # in batches, not one by one
    assert rows(tmp_path, run.run_id) == {f"t{k}": "succeeded" for k in range(8)}


def test_a_task_is_reported_done_only_once_its_result_is_on_disk(tmp_path):
    stored_when_reported: dict[str, bool] = {}
    run_id: list[str] = []

    def watch(event):
        if event.kind == "run_started":
            run_id.append(event.run_id)
        if event.kind == "task_succeeded":  # read by another connection: committed
            stored_when_reported[event.task] = event.task in stored(tmp_path, run_id[0])

    flow = lf.Flow("reported")
    for k in range(20):
        flow.add(lambda k=k: k, name=f"t{k}")
    flow.add(
        lambda **up: sum(up.values()), name="total", inputs={f"t{k}": f"t{k}" for k in range(20)}
    )
    run = flow.run(store=tmp_path, max_workers=4, on_event=watch)
    assert run["total"] == sum(range(20))
    assert stored_when_reported == {name: True for name in run.tasks}


def test_a_worker_is_free_while_its_result_is_stored_but_users_wait(tmp_path, batches):
    seen, hold = batches
    hold[0] = 0.4  # the first result takes 0.4 s to store
    events: list[tuple[str, str]] = []
    flow = lf.Flow("free")
    flow.add(lambda: "a", name="a")
    flow.add(lambda: "b", name="b")
    flow.add(lambda a: a + "!", name="uses_a")

    def watch(event):
        if event.task is not None:
            events.append((event.kind, event.task))

    run = flow.run(store=tmp_path, max_workers=1, mode="dynamic", on_event=watch)
    assert run.ok and run["uses_a"] == "a!"
    first = seen[0][0]
    other = "b" if first == "a" else "a"
    # the one worker went on to the other task while the first result was being stored
    assert events.index(("task_started", other)) < events.index(("task_succeeded", first))
    # nothing started on a value before it was stored
    assert events.index(("task_succeeded", "a")) < events.index(("task_started", "uses_a"))


def test_large_results_get_files_small_ones_live_in_the_database(tmp_path):
    flow = lf.Flow("sizes")
    flow.add(lambda: b"s" * 100, name="small")
    flow.add(lambda: b"L" * (INLINE_MAX + 1), name="large")
    flow.add(lambda small, large: len(small) + len(large), name="both")
    run = flow.run(store=tmp_path)
    files = {p.name for p in (tmp_path / "results").iterdir()}
    assert len(files) == 1 and next(iter(files)).endswith(".pkl")
    resumed = flow.run(store=tmp_path, resume=run.run_id)  # nothing left to run: all reused
    store = Store(tmp_path)
    try:
        found = store.finished_results(run.run_id)
        assert store.load_value(found["small"][1]) == b"s" * 100
        assert store.load_value(found["large"][1]) == b"L" * (INLINE_MAX + 1)
    finally:
        store.close()
    assert resumed["both"] == 100 + INLINE_MAX + 1


@pytest.mark.parametrize("seed", [None, 7])
def test_sequential_mode_with_a_store_keeps_its_order(tmp_path, seed):
    # one at a time in the plan's order (or the seed's): a task whose upstream is still
    # being stored is not overtaken by a later one
    flow = lf.Flow("seq")
    for k in range(12):
        up = {"up": f"t{k - 3}"} if k >= 3 else {}
        flow.add(lambda up=0, k=k: k, name=f"t{k}", inputs=up)
    expected = flow.run(mode="sequential", seed=seed, store=False).order
    run = flow.run(store=tmp_path, mode="sequential", seed=seed)
    assert run.ok and run.order == expected
    assert expected == (flow.plan().order if seed is None else expected)


KILLED_FLOW = """
import json, os, sys, time
import layerflow as lf

here = sys.argv[1]
flow = lf.Flow("killed")
for k in range(300):
    up = {"up": f"t{k - 7}"} if k >= 7 else {}
    flow.add(lambda up=0, k=k: (time.sleep(0.01), k + (up or 0))[1], name=f"t{k}", inputs=up)
log = open(os.path.join(here, "reported"), "a", buffering=1)

def watch(event):
    if event.kind == "task_succeeded":
        log.write(event.task + "\\n")  # in the page cache at once: a SIGKILL keeps it

run = flow.run(store=os.path.join(here, "store"), resume=sys.argv[2] == "resume",
               max_workers=8, on_event=watch)
print(json.dumps({"values": run.values, "statuses": {n: t.status for n, t in run.tasks.items()}}))
"""


@pytest.mark.parametrize("after", [0.05, 0.15, 0.3])
def test_a_kill_at_any_moment_loses_nothing_reported_done(tmp_path, after):
    import json
    import signal
    import subprocess
    import sys

    script = tmp_path / "killed.py"
    script.write_text(KILLED_FLOW)

    def start(mode: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(script), str(tmp_path), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    proc = start("fresh")
    deadline = time.monotonic() + 30
    while not (tmp_path / "reported").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # the run has begun (its first task was reported)
    time.sleep(after)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not after it ended
    reported = set((tmp_path / "reported").read_text().split())
    out, err = start("resume").communicate(timeout=60)
    assert out, err
    resumed = json.loads(out)
    reused = {n for n, s in resumed["statuses"].items() if s == "reused"}
    assert reported <= reused  # every task reported done was on disk: none ran again
    expected = {}
    for k in range(300):
        expected[f"t{k}"] = k + (expected[f"t{k - 7}"] if k >= 7 else 0)
    assert resumed["values"] == expected


# --- found in review ---------------------------------------------------------------------


def slow_store(monkeypatch, seconds: float, fail: bool = False) -> None:
    """Every batch takes ``seconds`` to store; with ``fail``, the store cannot take it."""
    from layerflow.errors import ResultNotStored

    original = Store.save_results

    def save_results(self, run_id, batch):
        time.sleep(seconds)
        if fail:
            return [ResultNotStored("disk full", kind="full") for _ in batch]
        return original(self, run_id, batch)

    monkeypatch.setattr(Store, "save_results", save_results)


def test_sequential_order_holds_while_a_maps_list_is_stored(tmp_path, monkeypatch):
    # regression: a map's whole list was stored without holding sequential mode's slot, so
    # a later ready task (its upstream a cache hit) overtook the map's user
    slow_store(monkeypatch, 0.05)

    def build() -> lf.Flow:
        f = lf.Flow("seqmap")
        f.add(lambda: [1, 2, 3], name="chunks")
        f.add(lambda: 0, name="y0")
        f.add(lambda chunks: chunks * 2, name="double", map="chunks")
        f.add(lambda y0: 1, name="y1", cache=True)
        f.add(lambda double: sum(double), name="total")
        f.add(lambda y1: 2, name="y2")
        return f

    order = build().plan().order
    build().run(mode="sequential", store=tmp_path)  # fills y1's cache entry
    run = build().run(mode="sequential", store=tmp_path)
    assert run.tasks["y1"].status == "cached"
    assert [n for n in run.order if "[" not in n] == [n for n in order if n != "double"]


def test_the_run_ends_when_starting_the_next_tasks_fails_on_the_store_thread(tmp_path, monkeypatch):
    # regression: an exception from _kick() ended the store thread, and the run hung
    from layerflow.scheduler.workers import ThreadWorkers

    original = ThreadWorkers._dispatch
    fired: list[int] = []

    def dispatch(self):
        if threading.current_thread().name == "layerflow-store-io" and not fired:
            fired.append(1)
            raise RuntimeError("can't start new thread")
        return original(self)

    monkeypatch.setattr(ThreadWorkers, "_dispatch", dispatch)
    flow = lf.Flow("kick")
    flow.add(lambda: 1, name="a")
    flow.add(lambda: 2, name="b")
    flow.add(lambda a, b: a + b, name="c")
    out: dict[str, object] = {}
    thread = threading.Thread(
        target=lambda: out.setdefault("run", flow.run(store=tmp_path, max_workers=2)),
        daemon=True,
    )
    thread.start()
    thread.join(10)
    assert fired and "run" in out and out["run"]["c"] == 3  # type: ignore[index]


def test_a_ctrl_c_stays_an_interrupt_when_the_last_batch_cannot_be_stored(
    tmp_path, monkeypatch, ctrl_c
):
    # regression: the batch awaited after Ctrl-C failed to store, and the run's outcome
    # turned from "interrupted" to "failed": TaskFailed swallowed the KeyboardInterrupt
    slow_store(monkeypatch, 0.5, fail=True)
    flow = lf.Flow("interrupted")
    flow.add(lambda: 1, name="a")
    flow.add(lambda a: a + 1, name="b")
    ctrl_c(0.2)
    with pytest.raises(lf.RunInterrupted) as info:
        flow.run(store=tmp_path)
    assert info.value.result.status == "interrupted"


@pytest.mark.parametrize("backend", ["thread", "async"])
def test_results_waiting_to_be_stored_are_bounded(tmp_path, batches, backend):
    # a store slower than the tasks: workers wait for it instead of piling up finished
    # work that a crash would lose
    from layerflow.scheduler.storage import _BACKLOG

    seen, hold = batches
    hold[0] = 0.2  # the first commit is slow: 600 tiny tasks would all finish meanwhile
    flow = lf.Flow("bounded")
    if backend == "thread":

        def tiny(k):
            return k
    else:

        async def tiny(k):
            return k

    for k in range(600):
        flow.add(tiny, name=f"t{k}", params={"k": k})
    run = flow.run(store=tmp_path, max_workers=4)
    assert run.ok and len(sum(seen, [])) == 600
    assert max(len(b) for b in seen) <= _BACKLOG + 4 + 1  # the backlog, what was running
