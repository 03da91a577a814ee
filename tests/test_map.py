"""The ``map=`` task option: one scheduled subtask per element of an upstream list.

``@flow.task(map="chunks")`` applies the task to each element of ``chunks``' value as
subtasks ``process[0]``, ``process[1]``, ...; the mapped task's value is the list of results
in order. Concurrency is read from a lock-protected counter inside the element function,
never from wall-clock durations; the only timing assertions are generous upper bounds.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

import layerflow as lf


class Peak:
    """How many element calls are running at once, at most (lock-protected counter)."""

    def __init__(self, target: int) -> None:
        self.cond = threading.Condition()
        self.count = 0
        self.peak = 0
        self.target = target
        self.calls: list[int] = []

    def enter(self, item: int) -> None:
        with self.cond:
            self.count += 1
            self.peak = max(self.peak, self.count)
            self.calls.append(item)
            self.cond.notify_all()
            # Hold on until the bound has been reached once (or 1 s passed), so the peak is
            # reached whenever the scheduler allows it, without relying on durations.
            self.cond.wait_for(lambda: self.peak >= self.target, timeout=1.0)

    def leave(self) -> None:
        with self.cond:
            self.count -= 1


def _triple(chunks):
    """Module level, so a worker process can import it by reference."""
    return chunks * 3


def statuses(run: lf.RunResult) -> dict[str, str]:
    return {name: t.status for name, t in run.tasks.items()}


def chunk_flow(items, fn=None, **options) -> lf.Flow:
    """``chunks`` returns ``items``; ``process`` is mapped over it."""
    flow = lf.Flow("map")
    flow.add(lambda: items, name="chunks")
    flow.add(fn or (lambda chunks: chunks * 2), name="process", map="chunks", **options)
    return flow


# --- values ------------------------------------------------------------------------------


def test_map_applies_the_task_to_each_element_in_order():
    flow = lf.Flow()

    @flow.task
    def chunks():
        return [3, 1, 4, 1, 5]

    @flow.task(map="chunks")
    def process(chunks):
        assert isinstance(chunks, int)  # one element, never the list
        return chunks * 10

    run = flow.run()
    assert run.ok
    assert run["process"] == [30, 10, 40, 10, 50]
    assert run.tasks["process"].status == "succeeded"
    assert run.tasks["process"].value == [30, 10, 40, 10, 50]
    assert [f"process[{k}]" for k in range(5)] == [n for n in run.tasks if n.startswith("process[")]
    # the subtasks are scheduled work; the plan's layers only know the graph's tasks
    assert run.layers == [["chunks"], ["process"]]


def test_each_subtask_has_its_own_task_run():
    flow = chunk_flow([0, 1, 2, 3, 4])
    run = flow.run()
    for k in range(5):
        t = run.tasks[f"process[{k}]"]
        assert isinstance(t, lf.TaskRun)
        assert t.name == f"process[{k}]"
        assert t.status == "succeeded"
        assert t.ok
        assert t.value == k * 2
        assert t.error is None
        assert t.attempts == 1
        assert t.started_at is not None and t.finished_at is not None
        assert t.finished_at >= t.started_at
        assert t.layer == run.tasks["process"].layer == 1
    assert all(f"process[{k}]" in run.order for k in range(5))


def test_inputs_renaming_gives_the_renamed_parameter_one_element():
    flow = lf.Flow()

    @flow.task
    def chunks():
        return ["a", "bb", "ccc"]

    @flow.task(map="chunks", inputs={"chunk": "chunks"})
    def process(chunk):
        return len(chunk)

    assert flow.run()["process"] == [1, 2, 3]


def test_other_parameters_are_passed_unchanged_to_every_element():
    flow = lf.Flow()
    seen = []
    lock = threading.Lock()

    @flow.task
    def chunks():
        return [1, 2, 3, 4]

    @flow.task
    def factor():
        return [10]  # a mutable value: every element gets the very same object

    @flow.task(map="chunks", inputs={"chunk": "chunks"}, params={"plus": 0.5})
    def process(chunk, factor, plus, offset, scale=2):
        with lock:
            seen.append((id(factor), plus, offset, scale))
        return chunk * factor[0] * scale + plus + offset

    run = flow.run({"offset": 1000})
    assert run["process"] == [1020.5, 1040.5, 1060.5, 1080.5]
    assert len(seen) == 4
    assert len({s[0] for s in seen}) == 1
    assert {s[1:] for s in seen} == {(0.5, 1000, 2)}


def test_tuples_and_ranges_are_mapped_like_lists():
    assert chunk_flow((1, 2, 3)).run()["process"] == [2, 4, 6]
    assert chunk_flow(range(4)).run()["process"] == [0, 2, 4, 6]


def test_empty_list_gives_empty_list_and_downstream_still_runs():
    flow = chunk_flow([])
    flow.add(lambda process: ("total", sum(process), len(process)), name="total")
    flow.add(lambda process: process, name="again", map="process")
    run = flow.run()
    assert run.ok
    assert run["process"] == []
    assert run["again"] == []
    assert run["total"] == ("total", 0, 0)
    assert run.tasks["process"].status == "succeeded"
    assert not any("[" in name for name in run.tasks)


def test_single_element():
    flow = chunk_flow([21])
    run = flow.run()
    assert run["process"] == [42]
    assert run.tasks["process[0]"].value == 42
    assert "process[1]" not in run.tasks


def test_large_list_every_value_checked():
    n = 2000
    flow = chunk_flow(list(range(n)), lambda chunks: (chunks, chunks * chunks))
    flow.add(lambda process: len(process), name="count")
    run = flow.run(max_workers=4)
    assert run.ok
    assert run["process"] == [(k, k * k) for k in range(n)]
    assert run["count"] == n
    assert sum(1 for name in run.tasks if name.startswith("process[")) == n
    assert run.tasks[f"process[{n - 1}]"].value == (n - 1, (n - 1) ** 2)


def test_downstream_uses_and_a_second_map_over_the_first_maps_output():
    flow = lf.Flow()

    @flow.task
    def chunks():
        return [1, 2, 3]

    @flow.task(map="chunks")
    def process(chunks):
        return chunks + 1

    @flow.task
    def total(process):
        return sum(process)

    @flow.task(map="process")
    def square(process):
        assert isinstance(process, int)
        return process**2

    @flow.task
    def report(total, square):
        return {"total": total, "squares": square}

    run = flow.run()
    assert run["process"] == [2, 3, 4]
    assert run["square"] == [4, 9, 16]
    assert run["report"] == {"total": 9, "squares": [4, 9, 16]}
    assert [run.tasks[f"square[{k}]"].value for k in range(3)] == [4, 9, 16]
    assert run.layers == [["chunks"], ["process"], ["total", "square"], ["report"]]


# --- retries and timeouts, per element ------------------------------------------------------


def test_retries_apply_per_element():
    counts: dict[int, int] = {}
    lock = threading.Lock()

    def flaky(chunks):
        with lock:
            counts[chunks] = counts.get(chunks, 0) + 1
            attempt = counts[chunks]
        if chunks == 2 and attempt == 1:
            raise ConnectionError("first try of element 2")
        return chunks * 2

    events = []
    flow = chunk_flow(list(range(5)), flaky, retries=2)
    run = flow.run(on_event=events.append)
    assert run.ok
    assert run["process"] == [0, 2, 4, 6, 8]
    assert counts == {0: 1, 1: 1, 2: 2, 3: 1, 4: 1}
    assert {k: run.tasks[f"process[{k}]"].attempts for k in range(5)} == {
        0: 1,
        1: 1,
        2: 2,
        3: 1,
        4: 1,
    }
    assert [e.task for e in events if e.kind == "task_retrying"] == ["process[2]"]


def test_retries_exhausted_fail_only_that_element():
    counts: dict[int, int] = {}
    lock = threading.Lock()

    def always_bad_one(chunks):
        with lock:
            counts[chunks] = counts.get(chunks, 0) + 1
        if chunks == 1:
            raise ConnectionError("element 1 never works")
        return chunks

    run = chunk_flow([0, 1, 2], always_bad_one, retries=2).run(fail_fast=False)
    assert counts == {0: 1, 1: 3, 2: 1}
    assert run.tasks["process[1]"].status == "failed"
    assert run.tasks["process[1]"].attempts == 3
    assert isinstance(run.tasks["process[1]"].error, ConnectionError)
    assert run.tasks["process"].status == "failed"


def test_timeout_applies_per_element_and_fails_at_the_deadline():
    def slow_one(chunks):
        if chunks == 2:
            time.sleep(5)
        return chunks

    flow = chunk_flow([0, 1, 2, 3], slow_one, timeout=0.3)
    t0 = time.monotonic()
    run = flow.run(fail_fast=False)
    elapsed = time.monotonic() - t0
    assert elapsed < 4.0  # at the deadline, not when the sleeping thread wakes up
    timed_out = run.tasks["process[2]"]
    assert timed_out.status == "failed"
    assert isinstance(timed_out.error, lf.TaskTimeout)
    assert isinstance(timed_out.error, TimeoutError)
    for k in (0, 1, 3):
        assert run.tasks[f"process[{k}]"].status == "succeeded"
        assert run.tasks[f"process[{k}]"].value == k
    assert run.tasks["process"].status == "failed"
    assert isinstance(run.tasks["process"].error, lf.TaskTimeout)


def test_timeout_fail_fast_raises_task_failed_for_the_element():
    def slow_one(chunks):
        if chunks == 1:
            time.sleep(5)
        return chunks

    t0 = time.monotonic()
    with pytest.raises(lf.TaskFailed) as info:
        chunk_flow([0, 1, 2], slow_one, timeout=0.3).run()
    assert time.monotonic() - t0 < 4.0
    assert info.value.task == "process[1]"
    assert isinstance(info.value.__cause__, lf.TaskTimeout)


# --- failures -------------------------------------------------------------------------------


def failing_flow(calls: list[str], lock: threading.Lock) -> lf.Flow:
    flow = lf.Flow("failing")

    @flow.task
    def chunks():
        return list(range(6))

    @flow.task(map="chunks")
    def process(chunks):
        if chunks == 3:
            raise ValueError("element 3 is bad")
        return chunks

    @flow.task
    def total(process):
        with lock:
            calls.append("total")
        return sum(process)

    @flow.task(map="process")
    def again(process):
        with lock:
            calls.append("again")
        return process

    @flow.task
    def independent():
        with lock:
            calls.append("independent")
        return "ok"

    @flow.task
    def after_independent(independent):
        return independent + "!"

    return flow


@pytest.mark.parametrize("max_workers", [1, None])
def test_one_element_failing_with_fail_fast(max_workers):
    calls: list[str] = []
    flow = failing_flow(calls, threading.Lock())
    with pytest.raises(lf.TaskFailed) as info:
        flow.run(max_workers=max_workers)
    exc = info.value
    assert exc.task == "process[3]"
    assert isinstance(exc.__cause__, ValueError)
    assert str(exc.__cause__) == "element 3 is bad"
    assert "process[3]" in str(exc)
    result = exc.result
    assert result.status == "failed"
    assert result.tasks["process[3]"].status == "failed"
    assert result.tasks["process[3]"].error is exc.__cause__
    assert result.tasks["process"].status in ("failed", "cancelled")
    assert result.tasks["total"].status == "cancelled"
    assert "total" not in calls
    # 'again' streams from 'process': its elements whose upstream element was done may
    # have run; none ran after the failure stopped the run
    for name, t in result.tasks.items():
        if name.startswith("again["):
            assert t.status in ("succeeded", "cancelled")
    assert result.tasks["again"].status == "cancelled"
    if max_workers == 1:  # one at a time in order: nothing starts after the failure
        assert result.tasks["process[4]"].status == "cancelled"
        assert result.tasks["process[5]"].status == "cancelled"
        assert [result.tasks[f"process[{k}]"].value for k in range(3)] == [0, 1, 2]


def test_one_element_failing_without_fail_fast():
    calls: list[str] = []
    flow = failing_flow(calls, threading.Lock())
    run = flow.run(fail_fast=False)
    assert run.status == "failed"
    assert not run.ok
    for k in (0, 1, 2, 4, 5):
        assert run.tasks[f"process[{k}]"].status == "succeeded"
        assert run.tasks[f"process[{k}]"].value == k
    failed = run.tasks["process[3]"]
    assert failed.status == "failed"
    assert isinstance(failed.error, ValueError)
    assert run.tasks["process"].status == "failed"
    assert run.tasks["process"].error is failed.error
    assert run.tasks["total"].status == "skipped"
    # a failed element ends only its own chain: 'again' ran for every other element
    assert run.tasks["again"].status == "skipped"
    assert run.tasks["again[3]"].status == "skipped"
    assert [run.tasks[f"again[{k}]"].value for k in (0, 1, 2, 4, 5)] == [0, 1, 2, 4, 5]
    assert "total" not in calls and calls.count("again") == 5
    assert run.tasks["independent"].status == "succeeded"
    assert run["after_independent"] == "ok!"
    with pytest.raises(lf.NoValueError):
        run["process"]


def test_failure_in_second_map_leaves_first_map_value():
    flow = chunk_flow([1, 2, 3])
    flow.add(lambda process: 1 / (process - 4), name="inverse", map="process")
    run = flow.run(fail_fast=False)
    assert run["process"] == [2, 4, 6]
    assert run.tasks["inverse[1]"].status == "failed"
    assert isinstance(run.tasks["inverse[1]"].error, ZeroDivisionError)
    assert run.tasks["inverse"].status == "failed"
    assert run.tasks["inverse[0]"].value == -0.5


@pytest.mark.parametrize("value", [7, "abc", b"xyz", {"a": 1}, None])
def test_upstream_that_is_not_a_list_fails_the_mapped_task(value):
    calls = []
    flow = chunk_flow(value, lambda chunks: calls.append(chunks))
    with pytest.raises(lf.TaskFailed) as info:
        flow.run()
    assert info.value.task == "process"
    assert "not a list" in str(info.value)
    assert "not a list" in str(info.value.__cause__)
    assert type(value).__name__ in str(info.value.__cause__)
    assert calls == []  # a str is not split into characters
    assert info.value.result.tasks["process"].status == "failed"

    run = flow.run(fail_fast=False)
    assert run.tasks["process"].status == "failed"
    assert "not a list" in str(run.tasks["process"].error)


def test_not_a_list_is_not_retried():
    flow = chunk_flow(5, retries=3)
    run = flow.run(fail_fast=False)
    assert run.tasks["process"].status == "failed"
    assert run.tasks["process"].attempts == 1


# --- validation before running -------------------------------------------------------------


def test_map_naming_no_task_suggests_the_closest_name():
    ran = []
    flow = lf.Flow()

    @flow.task
    def chunks():
        ran.append("chunks")
        return [1]

    @flow.task(map="chunkz")
    def process(chunks):
        return chunks

    for call in (flow.plan, flow.run):
        with pytest.raises(lf.MissingDependencyError) as info:
            call()
        err = info.value
        assert err.task == "process"
        assert err.missing == "chunkz"
        assert err.suggestion == "chunks"
        assert "chunkz" in str(err) and "'chunks'" in str(err)
    assert ran == []


def test_map_naming_nothing_close():
    flow = lf.Flow()
    flow.add(lambda: [1], name="chunks")
    flow.add(lambda chunks: chunks, name="other", map="nope")
    with pytest.raises(lf.MissingDependencyError) as info:
        flow.run()
    assert info.value.missing == "nope"
    assert "nope" in str(info.value)


def test_map_source_that_no_parameter_receives_is_invalid():
    ran = []
    flow = lf.Flow()

    @flow.task
    def chunks():
        ran.append("chunks")
        return [1, 2]

    @flow.task
    def factor():
        return 2

    @flow.task(map="chunks")
    def process(factor):
        return factor

    for call in (flow.plan, flow.run):
        with pytest.raises(lf.InvalidOptionError) as info:
            call()
        message = str(info.value)
        assert "chunks" in message
        assert "parameter" in message
    assert ran == []


def test_map_accepts_a_task_object_and_rejects_non_names():
    flow = lf.Flow()
    chunks = flow.add(lambda: [1, 2], name="chunks")
    flow.add(lambda chunks: -chunks, name="neg", map=chunks)
    assert flow.run()["neg"] == [-1, -2]
    with pytest.raises(lf.InvalidOptionError):
        flow.add(lambda chunks: chunks, name="bad", map=3)
    with pytest.raises(lf.InvalidOptionError):
        flow.add(lambda chunks: chunks, name="bad", map="")


# --- concurrency, backends, events, modes ----------------------------------------------------


def test_peak_concurrency_of_elements_is_bounded_by_max_workers():
    peak = Peak(target=3)

    def work(chunks):
        peak.enter(chunks)
        try:
            return chunks
        finally:
            peak.leave()

    flow = chunk_flow(list(range(24)), work)
    run = flow.run(max_workers=3)
    assert run["process"] == list(range(24))
    assert sorted(peak.calls) == list(range(24))
    assert peak.peak == 3  # reached, never exceeded


def test_max_workers_bounds_elements_together_with_other_tasks():
    peak = Peak(target=2)

    def work(chunks):
        peak.enter(chunks)
        try:
            return chunks
        finally:
            peak.leave()

    def side():
        return work(-1)

    flow = lf.Flow()
    flow.add(lambda: list(range(8)), name="chunks")
    flow.add(work, name="process", map="chunks")
    for k in range(4):
        flow.add(side, name=f"side{k}")
    run = flow.run(max_workers=2)
    assert run.ok
    assert peak.peak == 2


def test_map_on_the_process_backend_module_function_and_closure():
    offset = 1000

    def shifted(chunks):  # a closure: crosses with cloudpickle
        return (chunks + offset, os.getpid())

    flow = lf.Flow()
    flow.add(lambda: [1, 2, 3, 4], name="chunks")
    flow.add(_triple, name="tripled", map="chunks", executor="process")
    flow.add(shifted, name="shifted", map="chunks", executor="process")
    run = flow.run(max_workers=2)
    assert run["tripled"] == [3, 6, 9, 12]
    assert [v for v, _ in run["shifted"]] == [1001, 1002, 1003, 1004]
    assert all(pid != os.getpid() for _, pid in run["shifted"])


def test_map_with_a_coroutine_element_function():
    peak = Peak(target=0)

    async def process(chunks, factor):
        with peak.cond:
            peak.count += 1
            peak.peak = max(peak.peak, peak.count)
        await asyncio.sleep(0.01)
        with peak.cond:
            peak.count -= 1
        return chunks * factor

    flow = lf.Flow()
    flow.add(lambda: list(range(20)), name="chunks")
    flow.add(lambda: 3, name="factor")
    flow.add(process, map="chunks")
    run = flow.run(max_workers=4)
    assert run["process"] == [k * 3 for k in range(20)]
    assert 1 <= peak.peak <= 4


def test_map_with_a_coroutine_under_run_async():
    async def process(chunks):
        await asyncio.sleep(0)
        return -chunks

    flow = chunk_flow([1, 2, 3], process)
    run = asyncio.run(flow.run_async())
    assert run["process"] == [-1, -2, -3]


def test_async_element_timeout_cancels_only_that_element():
    async def slow(chunks):
        await asyncio.sleep(5 if chunks == 1 else 0)
        return chunks

    t0 = time.monotonic()
    run = chunk_flow([0, 1, 2], slow, timeout=0.3).run(fail_fast=False)
    assert time.monotonic() - t0 < 4.0
    assert isinstance(run.tasks["process[1]"].error, lf.TaskTimeout)
    assert run.tasks["process[0]"].value == 0 and run.tasks["process[2]"].value == 2


def test_events_for_each_subtask():
    events: list[lf.Event] = []
    flow = chunk_flow([5, 6, 7])
    flow.add(lambda process: sum(process), name="total")
    run = flow.run(on_event=events.append)
    assert run["total"] == 36
    kinds = [(e.kind, e.task) for e in events]
    for k in range(3):
        name = f"process[{k}]"
        assert ("task_started", name) in kinds
        assert ("task_succeeded", name) in kinds
        assert kinds.index(("task_started", name)) < kinds.index(("task_succeeded", name))
    for e in events:
        if e.task and e.task.startswith("process["):
            assert e.layer == 1
    # every element succeeded before the task that uses the mapped value started
    started_total = kinds.index(("task_started", "total"))
    assert all(kinds.index(("task_succeeded", f"process[{k}]")) < started_total for k in range(3))
    assert kinds[0][0] == "run_started" and kinds[-1][0] == "run_finished"


def test_events_for_a_failing_element():
    events: list[lf.Event] = []

    def bad_two(chunks):
        if chunks == 2:
            raise KeyError(chunks)
        return chunks

    chunk_flow([0, 1, 2], bad_two).run(fail_fast=False, on_event=events.append)
    failed = [e for e in events if e.kind == "task_failed"]
    assert "process[2]" in [e.task for e in failed]
    assert isinstance(next(e for e in failed if e.task == "process[2]").error, KeyError)


def mode_flow() -> lf.Flow:
    flow = lf.Flow("modes")

    @flow.task
    def chunks():
        return list(range(10))

    @flow.task
    def factor():
        return 7

    @flow.task(map="chunks", inputs={"chunk": "chunks"})
    def process(chunk, factor):
        return chunk * factor

    @flow.task(map="process")
    def squared(process):
        return process * process

    @flow.task
    def total(squared, process):
        return sum(squared) - sum(process)

    @flow.task
    def side(factor):
        return factor + 1

    return flow


@pytest.mark.parametrize("mode", ["layered", "sequential"])
def test_modes_give_the_same_values(mode):
    flow = mode_flow()
    expected = flow.run()
    run = flow.run(mode=mode)
    for name in ("process", "squared", "total", "side"):
        assert run[name] == expected[name]
    assert run["process"] == [k * 7 for k in range(10)]
    assert run["squared"] == [(k * 7) ** 2 for k in range(10)]
    assert statuses(run) == statuses(expected)


def test_sequential_runs_elements_one_at_a_time_in_index_order():
    order: list[int] = []
    peak = Peak(target=0)

    def work(chunks):
        with peak.cond:
            peak.count += 1
            peak.peak = max(peak.peak, peak.count)
        order.append(chunks)
        with peak.cond:
            peak.count -= 1
        return chunks

    run = chunk_flow(list(range(12)), work).run(mode="sequential")
    assert run["process"] == list(range(12))
    assert order == list(range(12))
    assert peak.peak == 1


def test_layered_mode_with_element_retries_and_failures():
    counts: dict[int, int] = {}
    lock = threading.Lock()

    def flaky(chunks):
        with lock:
            counts[chunks] = counts.get(chunks, 0) + 1
            first = counts[chunks] == 1
        if chunks % 3 == 0 and first:
            raise OSError("first attempt")
        return chunks

    flow = chunk_flow(list(range(9)), flaky, retries=1)
    flow.add(lambda process: sum(process), name="total")
    run = flow.run(mode="layered", max_workers=2)
    assert run["total"] == sum(range(9))
    assert [run.tasks[f"process[{k}]"].attempts for k in range(9)] == [2, 1, 1] * 3


def test_layered_barrier_holds_for_a_map_over_an_empty_list():
    release = threading.Event()
    flow = lf.Flow()
    flow.add(lambda: [], name="chunks")
    flow.add(lambda: release.wait(5), name="slow")  # layer 0 stays open until released
    flow.add(lambda chunks: chunks, name="process", map="chunks")  # layer 1
    flow.add(lambda process: "after", name="after")  # layer 2
    events: list[lf.Event] = []

    def on_event(e):
        events.append(e)
        if e.kind == "task_succeeded" and e.task == "chunks":
            release.set()

    run = flow.run(mode="layered", on_event=on_event)
    assert run["after"] == "after"
    seen = [(e.kind, e.task, getattr(e, "layer", None)) for e in events]
    finished = [layer for kind, _, layer in seen if kind == "layer_finished"]
    assert finished == [0, 1, 2]
    assert seen.index(("layer_finished", None, 0)) < seen.index(("task_succeeded", "process", 1))
    assert ("layer_started", None, 1) in seen


def test_outputs_pruning_with_map():
    flow = mode_flow()
    run = flow.run(outputs="total")
    assert run["total"] == sum((k * 7) ** 2 for k in range(10)) - sum(k * 7 for k in range(10))
    assert "side" not in run.tasks


def test_cache_on_a_map_task(tmp_path):
    calls = []
    flow = lf.Flow("mapcache")

    @flow.task
    def items():
        return [1, 2, 3]

    @flow.task(map="items", cache=True)
    def sq(items):
        calls.append(items)
        return items * items

    assert flow.run(store=tmp_path)["sq"] == [1, 4, 9]
    run = flow.run(store=tmp_path)
    assert run["sq"] == [1, 4, 9] and run.tasks["sq"].status == "cached"
    assert sorted(calls) == [1, 2, 3]  # not computed again
