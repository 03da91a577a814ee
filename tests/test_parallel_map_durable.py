"""``lf.parallel_map`` inside a task of a run with a store: each finished item is stored,
and a retry of the task or a resumed run calls only the items that did not finish.

Calls are counted per item (a lock-protected counter, or lines in a file for the crash
test); nothing depends on timing except the crash test's wait for its items to be stored.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import layerflow as lf
from layerflow.store import Store

N = 20


class Calls:
    """How often each item was called, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count: collections.Counter[object] = collections.Counter()

    def __call__(self, x: object) -> None:
        with self.lock:
            self.count[x] += 1

    def total(self) -> int:
        return sum(self.count.values())


class Once:
    """Raises the first time it is asked, then never again."""

    def __init__(self) -> None:
        self.failed = False

    def __call__(self) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("the step fails once, after its items finished")


def stored_items(folder: Path) -> int:
    db = sqlite3.connect(folder / "state.db")
    try:
        return db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    finally:
        db.close()


def flow_of(calls: Calls, fail: Once | None, *, retries: int = 0, name: str = "items") -> lf.Flow:
    """One task that maps ``x -> 2x`` over 20 items, then fails once if ``fail`` says."""
    flow = lf.Flow(name)

    def double(x: int) -> int:
        calls(x)
        return 2 * x

    @flow.task(retries=retries)
    def step() -> list[int]:
        out = lf.parallel_map(double, range(N), max_workers=4)
        if fail is not None:
            fail()
        return out

    return flow


EXPECTED = [2 * x for x in range(N)]


# --- a retry, a resumed run, a new run --------------------------------------------------


def test_a_retry_calls_each_finished_item_once(tmp_path):
    calls = Calls()
    run = flow_of(calls, Once(), retries=1).run(store=tmp_path)
    assert run["step"] == EXPECTED
    assert run.tasks["step"].attempts == 2
    assert calls.count == {x: 1 for x in range(N)}
    assert stored_items(tmp_path) == N


def test_a_resumed_run_calls_no_finished_item_again(tmp_path):
    calls, fail = Calls(), Once()
    flow = flow_of(calls, fail)
    with pytest.raises(lf.TaskFailed):
        flow.run(store=tmp_path)
    assert calls.total() == N
    run = flow.run(store=tmp_path, resume=True)
    assert run["step"] == EXPECTED
    assert calls.count == {x: 1 for x in range(N)}


def test_a_resumed_run_of_a_resumed_run_still_finds_the_first_runs_items(tmp_path):
    calls = Calls()
    fails = iter([True, True, False])

    flow = lf.Flow("chain")

    def double(x: int) -> int:
        calls(x)
        return 2 * x

    @flow.task
    def step() -> list[int]:
        out = lf.parallel_map(double, range(N))
        if next(fails):
            raise RuntimeError("not yet")
        return out

    with pytest.raises(lf.TaskFailed):
        flow.run(store=tmp_path)
    with pytest.raises(lf.TaskFailed):
        flow.run(store=tmp_path, resume=True)
    assert flow.run(store=tmp_path, resume=True)["step"] == EXPECTED
    assert calls.count == {x: 1 for x in range(N)}


def test_a_new_run_with_the_same_store_calls_every_item_again(tmp_path):
    calls = Calls()
    flow = flow_of(calls, None)
    assert flow.run(store=tmp_path)["step"] == EXPECTED
    assert flow.run(store=tmp_path)["step"] == EXPECTED  # not resumed: no reuse
    assert calls.count == {x: 2 for x in range(N)}
    calls2 = Calls()
    with pytest.raises(lf.TaskFailed):
        flow_of(calls2, Once(), name="other").run(store=tmp_path)
    assert flow_of(calls2, None, name="other").run(store=tmp_path)["step"] == EXPECTED
    assert calls2.count == {x: 2 for x in range(N)}


def test_changed_task_code_calls_the_items_again_on_resume(tmp_path):
    calls = Calls()
    with pytest.raises(lf.TaskFailed):
        flow_of(calls, Once()).run(store=tmp_path)

    flow = lf.Flow("items")  # same name, another step: its resume key differs

    def double(x: int) -> int:
        calls(x)
        return 2 * x

    @flow.task
    def step() -> list[int]:
        return lf.parallel_map(double, range(N))  # changed: no longer fails

    assert flow.run(store=tmp_path, resume=True)["step"] == EXPECTED
    assert calls.count == {x: 2 for x in range(N)}


# --- unchanged without a store, outside a task, in other processes ------------------------


def test_without_a_store_a_retry_calls_every_item_again(monkeypatch):
    monkeypatch.delenv("LAYERFLOW_STORE", raising=False)
    calls = Calls()
    run = flow_of(calls, Once(), retries=1).run()
    assert run["step"] == EXPECTED
    assert calls.count == {x: 2 for x in range(N)}


def test_outside_a_task_nothing_is_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("LAYERFLOW_STORE", raising=False)
    calls = Calls()
    Store(tmp_path)  # a store exists, but no run uses it

    def double(x: int) -> int:
        calls(x)
        return 2 * x

    assert lf.parallel_map(double, range(N)) == EXPECTED
    assert lf.parallel_map(double, range(N)) == EXPECTED
    assert calls.count == {x: 2 for x in range(N)}
    assert stored_items(tmp_path) == 0


def test_a_process_task_keeps_todays_behaviour(tmp_path):
    flow = lf.Flow("in-a-process")

    @flow.task(executor="process")
    def step() -> list[int]:
        return lf.parallel_map(abs, [-1, -2, -3])

    assert flow.run(store=tmp_path)["step"] == [1, 2, 3]
    assert stored_items(tmp_path) == 0  # its worker cannot reach the run's store


# --- async items, coroutine tasks, sequential runs, map elements ---------------------------


def test_async_items_inside_a_thread_task(tmp_path):
    calls, fail = Calls(), Once()
    flow = lf.Flow("async-items")

    async def double(x: int) -> int:
        await asyncio.sleep(0)
        calls(x)
        return 2 * x

    @flow.task(retries=1)
    def step() -> list[int]:
        out = lf.parallel_map(double, range(N), backend="async")
        fail()
        return out

    assert flow.run(store=tmp_path)["step"] == EXPECTED
    assert calls.count == {x: 1 for x in range(N)}


def test_async_items_from_a_coroutine_task_and_a_resume(tmp_path):
    calls, fail = Calls(), Once()
    flow = lf.Flow("coroutine-task")

    async def double(x: int) -> int:
        await asyncio.sleep(0)
        calls(x)
        return 2 * x

    @flow.task
    async def step() -> list[int]:
        out = lf.parallel_map(double, range(N), backend="async", max_workers=5)
        fail()
        return out

    with pytest.raises(lf.TaskFailed):
        flow.run(store=tmp_path)
    assert flow.run(store=tmp_path, resume=True)["step"] == EXPECTED
    assert calls.count == {x: 1 for x in range(N)}


def test_a_sequential_run_retries_without_calling_finished_items(tmp_path):
    calls = Calls()
    run = flow_of(calls, Once(), retries=1).run(store=tmp_path, mode="sequential")
    assert run["step"] == EXPECTED
    assert calls.count == {x: 1 for x in range(N)}


def test_each_map_element_keeps_its_own_items(tmp_path):
    calls = Calls()
    fails = {0: Once(), 1: Once()}
    flow = lf.Flow("elements")

    @flow.task
    def groups() -> list[int]:
        return [0, 1, 2]

    def tag(pair: tuple[int, int]) -> tuple[int, int]:
        calls(pair)
        return pair

    @flow.task(map="groups", retries=1)
    def per_group(groups: int) -> list[tuple[int, int]]:
        # every element maps the same function over the same values: the element's own
        # name keeps their items apart
        out = lf.parallel_map(tag, [(0, k) for k in range(5)])
        if groups in fails:
            fails[groups]()
        return out

    run = flow.run(store=tmp_path)
    assert run["per_group"] == [[(0, k) for k in range(5)]] * 3
    assert calls.count == {(0, k): 3 for k in range(5)}  # once per element, no more


# --- failures of items --------------------------------------------------------------------


def test_fail_fast_stores_the_items_that_finished_before_the_error(tmp_path):
    calls = Calls()
    broken = {7}
    flow = lf.Flow("fail-fast")

    def work(x: int) -> int:
        calls(x)
        if x in broken:
            broken.clear()
            raise ValueError("item 7, once")
        return x

    @flow.task(retries=1)
    def step() -> list[int]:
        return lf.parallel_map(work, range(N), max_workers=1)  # in order, one at a time

    assert flow.run(store=tmp_path)["step"] == list(range(N))
    assert all(calls.count[x] == 1 for x in range(7))  # finished before 7 failed: kept
    assert calls.count[7] == 2


def test_with_fail_fast_off_a_retry_calls_only_the_failed_items(tmp_path):
    calls = Calls()
    broken = {3, 11}
    flow = lf.Flow("continue")

    def work(x: int) -> int:
        calls(x)
        if x in broken:
            broken.discard(x)
            raise ValueError(f"item {x}, once")
        return x

    @flow.task(retries=1)
    def step() -> list[int]:
        return lf.parallel_map(work, range(N), fail_fast=False)

    assert flow.run(store=tmp_path)["step"] == list(range(N))
    assert calls.count == {x: 2 if x in (3, 11) else 1 for x in range(N)}


# --- what is kept -------------------------------------------------------------------------


def test_each_call_of_an_attempt_gets_its_own_results(tmp_path):
    # the n-th call for an item in an attempt is the n-th result: a task that polls
    # sees each poll's answer, and its retry replays them
    state = {"polls": 0}
    fail = Once()
    flow = lf.Flow("polls")

    def poll(job: str) -> int:
        state["polls"] += 1
        return state["polls"]

    @flow.task(retries=1)
    def step() -> list[int]:
        seen = [lf.parallel_map(poll, ["job"])[0] for _ in range(3)]
        fail()
        return seen

    assert flow.run(store=tmp_path)["step"] == [1, 2, 3]
    assert state["polls"] == 3


def test_items_that_cannot_be_pickled_are_called_again(tmp_path):
    calls, fail = Calls(), Once()
    items = [threading.Lock() for _ in range(3)]  # cannot be pickled
    flow = lf.Flow("unpicklable")

    def work(lock: object) -> int:
        calls(lock)
        return 1

    @flow.task(retries=1)
    def step() -> list[int]:
        out = lf.parallel_map(work, items)
        fail()
        return out

    assert flow.run(store=tmp_path)["step"] == [1, 1, 1]
    assert set(calls.count.values()) == {2}
    assert stored_items(tmp_path) == 0


def test_large_results_go_to_files_and_prune_removes_them_with_their_runs(tmp_path):
    flow = lf.Flow("large")

    @flow.task
    def step() -> int:
        return len(lf.parallel_map(lambda x: bytes(100_000) + bytes([x]), range(3)))

    flow.run(store=tmp_path)
    assert stored_items(tmp_path) == 3
    store = Store(tmp_path)
    assert len(list((tmp_path / "results").glob("*.pkl"))) == 3
    pruned = store.prune(keep=0)
    assert len(pruned.runs) == 1
    assert stored_items(tmp_path) == 0
    assert list((tmp_path / "results").glob("*.pkl")) == []
    assert store.usage()["result_files"] == 0


def test_prune_keeps_items_a_kept_resumed_run_reused(tmp_path):
    calls = Calls()
    fail = Once()
    flow = lf.Flow("keep")

    def double(x: int) -> int:
        calls(x)
        return 2 * x

    @flow.task
    def step() -> list[int]:
        out = lf.parallel_map(double, range(N))
        fail()
        return out

    flow.run(store=tmp_path, fail_fast=False)  # fails; its items are kept
    time.sleep(0.01)  # the resumed run starts later: it is the newer one
    fail.failed = False  # the resumed run fails too, after reusing every item
    flow.run(store=tmp_path, resume=True, fail_fast=False)
    assert calls.total() == N
    Store(tmp_path).prune(keep=1)  # the first run goes; the second reused its items
    assert stored_items(tmp_path) == N
    fail.failed = True
    assert flow.run(store=tmp_path, resume=True)["step"] == EXPECTED
    assert calls.total() == N


def test_a_store_of_the_previous_version_gains_the_items_table(tmp_path):
    Store(tmp_path).close()
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("DROP TABLE items")  # as version 4 left it
    db.execute("PRAGMA user_version = 4")
    db.commit()
    db.close()
    calls = Calls()
    assert flow_of(calls, Once(), retries=1).run(store=tmp_path)["step"] == EXPECTED
    assert calls.count == {x: 1 for x in range(N)}
    assert stored_items(tmp_path) == N


def test_an_item_the_store_cannot_take_is_not_done(tmp_path, monkeypatch):
    def refuse(self, run_id, rows):
        raise lf.StoreError("no room left", path=self.path, kind="full")

    monkeypatch.setattr(Store, "save_items", refuse)
    flow = lf.Flow("full")

    @flow.task
    def step() -> list[int]:
        return lf.parallel_map(abs, [-1, -2, -3])

    with pytest.raises(lf.TaskFailed) as failed:
        flow.run(store=tmp_path)
    assert isinstance(failed.value.__cause__, lf.ResultNotStored)
    assert "could not be stored: no room left" in str(failed.value.__cause__)


# --- a crash ------------------------------------------------------------------------------

CRASHING = textwrap.dedent(
    """
    import os, sys, time
    import layerflow as lf

    store, log, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    flow = lf.Flow("crash")

    def work(x):
        with open(log, "a") as f:
            f.write(f"{x}\\n")
            f.flush()
            os.fsync(f.fileno())
        if mode == "crash" and x >= 10:
            time.sleep(120)  # killed here
        return x * x

    @flow.task
    def step():
        return lf.parallel_map(work, range(20), max_workers=4)

    run = flow.run(store=store, resume=mode == "resume")
    print(run["step"])
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_killed_run_resumes_without_calling_stored_items_again(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(CRASHING)
    store, log = tmp_path / "store", tmp_path / "calls.log"
    env = {**os.environ, "PYTHONPATH": str(Path(lf.__file__).resolve().parent.parent)}
    child = subprocess.Popen(
        [sys.executable, str(script), str(store), str(log), "crash"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # items 0-9 return at once, items 10-13 then block the four workers
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (store / "state.db").exists() and stored_items(store) >= 10:
                break
            assert child.poll() is None, child.communicate()
            time.sleep(0.05)
        else:
            raise AssertionError("the items were not stored in time")
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    stored = stored_items(store)
    assert stored == 10
    before = log.read_text().split()
    done = subprocess.run(
        [sys.executable, str(script), str(store), str(log), "resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([x * x for x in range(20)])
    again = collections.Counter(log.read_text().split()[len(before) :])
    assert not any(again[str(x)] for x in range(10))  # stored before the kill: not called
    assert all(again[str(x)] == 1 for x in range(10, 20))
