"""Fan-out that streams and survives: per-item pipelines, zip, skip, and every element
durable (resume after a budget stop or a SIGKILL, the cache element by element)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from functools import partial

import pytest

import layerflow as lf


def _statuses(run, task):
    return Counter(t.status for name, t in run.tasks.items() if name.startswith(f"{task}["))


# --- per-item pipelines ----------------------------------------------------------------


def _chain(slow: int, events: list, lock: threading.Lock) -> lf.Flow:
    flow = lf.Flow("chain")

    @flow.task
    def items():
        return list(range(8))

    @flow.task(map="items")
    def fetch(items):
        time.sleep(0.6 if items == slow else 0.01)
        return items * 10

    @flow.task(map="fetch")
    def parse(fetch):
        return fetch + 1

    @flow.task(map="parse")
    def classify(parse):
        return -parse

    def seen(e):
        with lock:
            events.append((e.kind, e.task))

    flow.seen = seen  # type: ignore[attr-defined]
    return flow


def test_a_map_over_a_map_streams_element_by_element():
    events: list = []
    flow = _chain(7, events, threading.Lock())
    run = flow.run(on_event=flow.seen)
    assert run["classify"] == [-(k * 10 + 1) for k in range(8)]
    # the whole chain of element 0 ended before the slowest fetch did: no barrier
    slow_end = events.index(("task_succeeded", "fetch[7]"))
    assert events.index(("task_succeeded", "classify[0]")) < slow_end
    assert events.index(("task_started", "parse[6]")) < slow_end


def test_streaming_respects_every_other_dependency():
    flow = lf.Flow("other")
    gate = threading.Event()
    order: list[str] = []

    @flow.task
    def items():
        return [1, 2, 3]

    @flow.task(map="items")
    def fetch(items):
        return items

    @flow.task
    def config():
        gate.wait(5)
        order.append("config")
        return 100

    @flow.task(map="fetch")
    def parse(fetch, config):
        order.append("parse")
        return fetch + config

    threading.Timer(0.2, gate.set).start()
    run = flow.run()
    assert run["parse"] == [101, 102, 103]
    assert order[0] == "config"


def test_without_fail_fast_a_failed_element_ends_only_its_chain():
    flow = lf.Flow("chain-fail")
    ran: list[int] = []

    @flow.task
    def items():
        return list(range(5))

    @flow.task(map="items")
    def fetch(items):
        if items == 2:
            raise ValueError("bad element")
        return items

    @flow.task(map="fetch")
    def parse(fetch):
        ran.append(fetch)
        return fetch

    @flow.task
    def report(parse):
        return parse

    run = flow.run(fail_fast=False)
    assert run.status == "failed"
    assert sorted(ran) == [0, 1, 3, 4]
    assert run.tasks["parse[2]"].status == "skipped"
    assert run.tasks["parse"].status == "skipped"
    assert run.tasks["report"].status == "skipped"


def test_layered_mode_keeps_its_barrier():
    events: list = []
    flow = _chain(7, events, threading.Lock())
    flow.run(mode="layered", on_event=flow.seen)
    slow_end = events.index(("task_succeeded", "fetch[7]"))
    assert events.index(("task_started", "parse[0]")) > slow_end


def test_elements_stream_on_async_and_process_backends():
    flow = lf.Flow("async-chain")

    @flow.task
    def items():
        return [1, 2, 3]

    @flow.task(map="items")
    async def double(items):
        return items * 2

    @flow.task(map="double")
    async def plus(double):
        return double + 1

    assert flow.run()["plus"] == [3, 5, 7]


# --- zip and other lists ---------------------------------------------------------------


def test_zip_maps_several_lists_element_by_element():
    flow = lf.Flow("zip")
    flow.add(lambda: ["a", "b", "c"], name="names")
    flow.add(lambda: [1, 2, 3], name="counts")
    flow.add(lambda names, counts: names * counts, name="repeat", map=["names", "counts"])
    assert flow.run()["repeat"] == ["a", "bb", "ccc"]


def test_zip_of_different_lengths_names_both():
    flow = lf.Flow("zip-bad")
    flow.add(lambda: ["a", "b", "c"], name="names")
    flow.add(lambda: [1, 2], name="counts")
    flow.add(lambda names, counts: names * counts, name="repeat", map=["names", "counts"])
    with pytest.raises(lf.TaskFailed) as info:
        flow.run()
    error = info.value.__cause__
    assert isinstance(error, lf.MapError)
    assert "'names' has 3" in str(error) and "'counts' has 2" in str(error)


def test_zip_of_two_streaming_maps():
    flow = lf.Flow("zip-stream")
    flow.add(lambda: [1, 2, 3], name="items")
    flow.add(lambda items: items * 2, name="a", map="items")
    flow.add(lambda items: items * 3, name="b", map="items")
    flow.add(lambda a, b: a + b, name="both", map=["a", "b"])
    assert flow.run()["both"] == [5, 10, 15]


def test_map_over_a_flow_input_and_over_a_param():
    flow = lf.Flow("inputs")
    flow.add(lambda urls: urls.upper(), name="shout", map="urls")
    flow.add(
        lambda item, suffix: item + suffix,
        name="tag",
        map="item",
        params={"item": ["x", "y"], "suffix": "!"},
    )
    run = flow.run({"urls": ["a", "b"]})
    assert run["shout"] == ["A", "B"]
    assert run["tag"] == ["x!", "y!"]


def test_map_over_an_input_that_is_not_a_list():
    flow = lf.Flow("inputs-bad")
    flow.add(lambda urls: urls, name="echo", map="urls")
    with pytest.raises(lf.TaskFailed, match=r"maps over 'urls', which is int, not a list"):
        flow.run({"urls": 3})


def test_map_naming_nothing_says_what_map_takes():
    flow = lf.Flow("inputs-missing")
    flow.add(lambda x=1: x, name="echo", map="nothing")
    with pytest.raises(lf.MissingDependencyError, match="map takes a task, a flow input"):
        flow.plan()


@pytest.mark.parametrize("bad", [[], 3, ["a", "a"]])
def test_map_option_is_checked(bad):
    with pytest.raises(lf.InvalidOptionError, match="map"):
        lf.Task(lambda a: a, name="t", map=bad)


# --- skip ------------------------------------------------------------------------------


def test_skip_is_not_a_failure_and_skips_what_depends_on_it():
    flow = lf.Flow("skip")

    @flow.task
    def check():
        raise lf.Skip("nothing new today")

    @flow.task
    def publish(check):
        return "published"

    @flow.task
    def other():
        return 1

    events: list = []
    run = flow.run(on_event=lambda e: events.append((e.kind, e.task, getattr(e, "reason", None))))
    assert run.ok and run.status == "succeeded"
    assert run.tasks["check"].status == "skipped"
    assert isinstance(run.tasks["check"].error, lf.Skip)
    assert run.tasks["publish"].status == "skipped"
    assert run["other"] == 1
    assert ("task_skipped", "check", "nothing new today") in events


def test_skip_is_never_retried():
    calls = []
    flow = lf.Flow("skip-retry")

    @flow.task(retries=3)
    def once():
        calls.append(1)
        raise lf.Skip()

    assert flow.run().tasks["once"].status == "skipped"
    assert len(calls) == 1


def test_a_mapped_task_that_skips_is_a_filter_and_its_chain_is_skipped():
    flow = lf.Flow("filter")
    flow.add(lambda: list(range(6)), name="items")

    def keep_even(items):
        if items % 2:
            raise lf.Skip("odd")
        return items

    flow.add(keep_even, name="even", map="items")
    flow.add(lambda even: even * 10, name="times", map="even")
    flow.add(lambda times: times, name="all")
    run = flow.run()
    assert run.ok
    assert run["even"] == [0, 2, 4]
    assert run["all"] == [0, 20, 40]
    assert run.tasks["times[1]"].status == "skipped"
    assert _statuses(run, "times") == Counter(succeeded=3, skipped=3)


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_skip_works_on_the_backends(backend):
    flow = lf.Flow("skip-backend")
    flow.add(lambda: [1, 2, 3], name="items")
    flow.add(_odd_only, name="odd", map="items")
    assert flow.run(backend=backend)["odd"] == [1, 3]


def _odd_only(items):
    if items % 2 == 0:
        raise lf.Skip("even")
    return items


# --- durable elements ------------------------------------------------------------------


def _billing_flow(calls: list) -> lf.Flow:
    flow = lf.Flow("billing")
    flow.add(lambda: list(range(60)), name="items")

    def bill(items):
        calls.append(items)
        lf.record(cost=1)
        return items * 2

    flow.add(bill, name="bill", map="items")
    return flow


def test_a_budget_stop_then_resume_bills_each_element_once(tmp_path):
    calls: list[int] = []
    flow = _billing_flow(calls)
    first = flow.run(store=tmp_path, budget={"cost": 25}, max_workers=4)
    assert first.status == "stopped"
    assert 25 <= len(calls) < 60  # those running when the budget was reached finish
    second = flow.run(store=tmp_path, budget={"cost": 100}, resume=True, max_workers=4)
    assert second.ok
    assert len(calls) == 60 and sorted(calls) == list(range(60))
    assert second["bill"] == [k * 2 for k in range(60)]
    reused = _statuses(second, "bill")["reused"]
    assert reused == sum(1 for name in first.order if name.startswith("bill["))


def test_a_resumed_element_given_another_value_runs_again(tmp_path):
    calls: list[int] = []
    values = {"items": list(range(6))}
    flow = lf.Flow("changing")
    flow.add(lambda: values["items"], name="items")

    def work(items):
        calls.append(items)
        if items == 5:
            raise ValueError("not yet")
        return items

    flow.add(work, name="work", map="items")
    with pytest.raises(lf.TaskFailed):
        flow.run(store=tmp_path, max_workers=1)
    # 'items' did not change its code, but what it returns did: element 1 must not be reused
    values["items"] = [0, 11, 2, 3, 4, 5]
    flow2 = lf.Flow("changing")
    flow2.add(lambda: values["items"], name="items")
    flow2.add(lambda items: items, name="work", map="items")
    run = flow2.run(store=tmp_path, resume=True)
    assert run["work"] == [0, 11, 2, 3, 4, 5]


def test_the_cache_keys_each_element(tmp_path):
    calls: list[int] = []

    flow = lf.Flow("cached")
    flow.add(lambda items: list(items), name="copy")

    def square(copy):
        calls.append(copy)
        return copy * copy

    flow.add(square, name="square", map="copy")
    assert flow.run({"items": [1, 2, 3]}, store=tmp_path, cache=True)["square"] == [1, 4, 9]
    run = flow.run({"items": [1, 2, 3, 4]}, store=tmp_path, cache=True)
    assert run["square"] == [1, 4, 9, 16]
    assert sorted(calls) == [1, 2, 3, 4]  # (threads: in any order)
    assert _statuses(run, "square") == Counter(cached=3, succeeded=1)


_KILLED = """
import os, sys, time
import layerflow as lf

done_file = sys.argv[2]
flow = lf.Flow("killed")
flow.add(lambda: list(range(240)), name="items")

def work(items):
    time.sleep(0.05)
    with open(done_file, "a") as f:
        f.write(f"{items}\\n")
    return items * 3

flow.add(work, name="work", map="items")
run = flow.run(store=sys.argv[1], resume=len(sys.argv) > 3 or None, max_workers=8)
print("RESULT", sum(run["work"]), flush=True)
"""


@pytest.mark.parametrize("after", [40, 200])
def test_a_map_killed_with_sigkill_resumes_with_only_the_missing_elements(tmp_path, after):
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(_KILLED))
    store, done = tmp_path / "store", tmp_path / "done.txt"
    proc = subprocess.Popen([sys.executable, str(script), str(store), str(done)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if done.exists() and len(done.read_text().split()) >= after:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ran_first = done.read_text().split()
    assert len(ran_first) < 240  # killed before the end
    from layerflow.store import Store

    kept = Store(store)
    try:  # what the killed run had stored: none of it may run again
        stored = set(kept.finished_elements(kept.runs(1)[0]["run_id"]).get("work", {}))
    finally:
        kept.close()
    assert stored and stored <= {int(k) for k in ran_first}
    done.write_text("")
    out = subprocess.run(
        [sys.executable, str(script), str(store), str(done), "resume"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"RESULT {sum(k * 3 for k in range(240))}" in out.stdout
    ran_again = {int(k) for k in done.read_text().split()}
    # only the elements not stored before the kill run again (those in flight then, or
    # finished but not yet committed, run twice: their results were never reported done)
    assert not ran_again & stored
    assert ran_again == set(range(240)) - stored


def test_a_stored_run_shows_every_element_from_the_packed_results(tmp_path):
    from layerflow.store import Store

    flow = lf.Flow("shown")
    flow.add(lambda: list(range(5)), name="items")

    def work(items):
        if items == 3:
            raise lf.Skip("three")
        return items

    flow.add(work, name="work", map="items")
    run = flow.run(store=tmp_path)
    store = Store(tmp_path)
    try:
        loaded = store.load_run(run.run_id)
        names = list(loaded.tasks)
        assert names == ["items", "work"] + [f"work[{k}]" for k in range(5)]
        assert loaded.tasks["work[0]"].status == "succeeded"
        assert loaded.tasks["work[0]"].duration >= 0
        assert loaded.tasks["work[3]"].status == "skipped"
        assert {a.task for a in loaded.attempts} >= {"work[0]", "work[4]"}
        assert store.prune(keep=0).runs == [run.run_id]
        assert not store._read("SELECT 1 FROM elements")
    finally:
        store.close()


def test_show_folds_a_maps_elements_and_prints_any_stored_element(tmp_path):
    script = tmp_path / "mapped.py"
    script.write_text(
        "import layerflow as lf\n"
        "flow = lf.Flow('shown')\n"
        "flow.add(lambda: list(range(40)), name='items')\n"
        "flow.add(lambda items: items * 7, name='seven', map='items')\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "layerflow", "run", "mapped:flow", "--store", "st", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    import json

    run_id = json.loads(run.stdout)["run_id"]

    def show(*args):
        return subprocess.run(
            [sys.executable, "-m", "layerflow", "show", run_id, "--store", "st", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    out = show().stdout
    assert "40 elements: 40 succeeded" in out
    assert len(out.splitlines()) < 15
    assert show("--output", "seven[3]").stdout.strip() == "21"


# --- regressions found by review (each hung or went wrong before its fix) --------------


def _within(flow: lf.Flow, seconds: float = 20, **options):
    """Run ``flow`` in a thread: a hang fails the test instead of stalling the suite."""
    out: dict = {}

    def go():
        try:
            out["run"] = flow.run(**options)
        except lf.TaskFailed as e:
            out["run"] = e.result

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the run hung"
    return out["run"]


def test_an_element_given_to_two_parameters_is_waited_for_once():
    flow = lf.Flow("twice")
    flow.add(lambda: [1, 2, 3], name="a")
    flow.add(lambda a: (time.sleep(0.02), a * 10)[1], name="b", map="a")
    flow.add(lambda x, y: x + y, name="c", map="b", inputs={"x": "b", "y": "b"})
    assert _within(flow)["c"] == [20, 40, 60]


def test_a_map_over_a_resumed_map_gets_its_list(tmp_path):
    fail = {"on": True}

    def make():
        flow = lf.Flow("resumed-stream")
        flow.add(lambda: [1, 2, 3], name="a")
        flow.add(lambda: 100, name="scale")
        flow.add(lambda a: a * 10, name="b", map="a")

        def c(b, scale):
            if fail["on"]:
                raise ValueError("first run fails")
            return b * scale

        flow.add(c, name="c", map="b")
        return flow

    assert _within(make(), store=tmp_path).status == "failed"
    fail["on"] = False
    run = _within(make(), store=tmp_path, resume=True)
    assert run.tasks["b"].status == "reused"
    assert run["c"] == [1000, 2000, 3000]


@pytest.mark.parametrize("mode", ["dynamic", "layered"])
def test_skipped_elements_keep_their_places_when_resumed(tmp_path, mode):
    fail = {"on": True}
    calls: list[int] = []

    def make():
        flow = lf.Flow("resumed-skips")
        flow.add(lambda: [1, 2, 3, 4, 5], name="a")

        def c(a):
            calls.append(a)
            if a % 2 == 0:
                raise lf.Skip("even")
            return a * 10

        def z(a, c):
            if fail["on"] and a == 5:
                raise ValueError("first run fails")
            return (a, c)

        flow.add(c, name="c", map="a")
        flow.add(z, name="z", map=["a", "c"])
        return flow

    first = _within(make(), store=tmp_path, fail_fast=False, mode=mode)
    assert first.status == "failed"
    fail["on"] = False
    calls.clear()
    run = _within(make(), store=tmp_path, resume=True, mode=mode)
    assert run["z"] == [(1, 10), (3, 30), (5, 50)]
    assert calls == []  # skipping was their result: not called again
    assert run.tasks["c[1]"].status == "skipped"


def test_a_groups_own_stop_skips_a_map_that_streams_from_it():
    group = lf.TaskGroup("g", fail_fast=True)
    flow = lf.Flow("group-stream")
    flow.add(lambda: list(range(4)), name="a")
    flow.add(lambda a: a, name="b", map="a", group=group)

    def x():
        raise ValueError("x fails")

    flow.add(x, name="x", group=group, priority=100, after=["a"])
    flow.add(lambda b: b * 2, name="c", map="b")
    flow.add(lambda c: sum(c), name="d")
    run = _within(flow, fail_fast=False, max_workers=1)
    assert run.status == "failed"
    assert run.tasks["d"].status == "skipped"


def test_a_layered_stop_that_ends_a_layer_does_not_hang():
    flow = lf.Flow("layered-stop")
    flow.add(lambda: [1, 2, 3], name="a", priority=10)

    def x():
        raise ValueError("boom")

    flow.add(x, name="x", priority=5)
    flow.add(lambda: 1, name="y")
    flow.add(lambda a: a, name="t", map="a")
    run = _within(flow, mode="layered", max_workers=1)
    assert run.status == "failed"
    assert run.tasks["t"].status == "cancelled"


def test_a_loaded_run_has_the_live_runs_attempts(tmp_path):
    from layerflow.store import Store

    flow = lf.Flow("spans")
    flow.add(lambda: [1, 2, 3], name="a")
    flow.add(lambda a: a, name="b", map="a")
    flow.add(lambda b: b, name="t")
    for cache in (False, True):
        run = flow.run(store=tmp_path, cache=cache)
        store = Store(tmp_path)
        try:
            loaded = store.load_run(run.run_id)
        finally:
            store.close()
        live = sorted((a.task, a.attempt) for a in run.attempts)
        assert sorted((a.task, a.attempt) for a in loaded.attempts) == live
        assert list(loaded.tasks) == list(run.tasks)
        assert [t.attempts for t in loaded.tasks.values()] == [
            t.attempts for t in run.tasks.values()
        ]


# --- hardening (#29): resume after a failed element, empty maps, a cancelled map's event --


def test_resume_after_a_failed_element_runs_only_that_element(tmp_path):
    calls: list[int] = []
    broken = {3}
    flow = lf.Flow("one-bad")
    flow.add(lambda: list(range(6)), name="items")

    def work(items):
        calls.append(items)
        if items in broken:
            raise ValueError("bad element")
        return items * 2

    flow.add(work, name="work", map="items")
    first = flow.run(store=tmp_path, fail_fast=False, progress=False)
    assert first.tasks["work"].status == "failed"
    broken.clear()
    calls.clear()
    second = flow.run(store=tmp_path, resume=True, progress=False)
    assert second.ok and second["work"] == [0, 2, 4, 6, 8, 10]
    assert calls == [3]
    assert _statuses(second, "work") == Counter(reused=5, succeeded=1)


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_resume_after_a_failed_element_under_fail_fast_calls_no_finished_one(tmp_path, backend):
    # #29.5 with fail-fast: the elements cancelled by the failure run, the failed one runs
    # again, and none that succeeded is called again
    marks = tmp_path / "calls"
    flow = lf.Flow("one-bad-ff")
    flow.add(lambda: list(range(6)), name="items")
    flow.add(
        partial(_marked_element, str(marks), str(tmp_path / "broken")), name="work", map="items"
    )
    (tmp_path / "broken").touch()
    with pytest.raises(lf.TaskFailed) as failed:
        flow.run(store=tmp_path / "store", progress=False, backend=backend)
    done = {
        int(t.name[5:-1])
        for t in failed.value.result.tasks.values()
        if t.name.startswith("work[") and t.status == "succeeded"
    }
    (tmp_path / "broken").unlink()
    marks.write_text("")
    second = flow.run(store=tmp_path / "store", resume=True, progress=False, backend=backend)
    assert second.ok and second["work"] == [0, 2, 4, 6, 8, 10]
    called = {int(k) for k in marks.read_text().split()}
    assert 3 in called and not called & done, (called, done)


def _empty_map() -> lf.Flow:
    flow = lf.Flow("empty-map")
    flow.add(lambda: [], name="nothing")
    flow.add(lambda nothing: nothing, name="each", map="nothing")
    flow.add(lambda each: len(each), name="count")
    return flow


def test_a_map_over_an_empty_list_is_stored_so_resume_reuses_it(tmp_path):
    flow = _empty_map()
    flow.add(lambda count: 1 / 0, name="boom")
    first = flow.run(store=tmp_path, fail_fast=False, progress=False)
    assert first.tasks["each"].status == "succeeded"
    second = flow.run(store=tmp_path, resume=True, fail_fast=False, progress=False)
    assert second.tasks["each"].status == "reused"
    assert second["each"] == []


def test_a_map_over_an_empty_list_hits_the_cache(tmp_path):
    flow = _empty_map()
    flow.run(store=tmp_path, cache=True, progress=False)
    again = flow.run(store=tmp_path, cache=True, progress=False)
    assert again.tasks["each"].status == "cached"
    assert again["count"] == 0


def test_a_map_cancelled_by_fail_fast_sends_its_event():
    flow = lf.Flow("cancelled-map")
    gate = threading.Event()

    @flow.task
    def boom():
        raise ValueError("boom")

    @flow.task
    def items():
        gate.wait(10)
        return [1, 2]

    flow.add(lambda items: items, name="each", map="items")
    events: list[tuple[str, str | None]] = []

    def hear(event):
        events.append((event.kind, event.task))
        if event.kind == "task_failed":
            gate.set()

    with pytest.raises(lf.TaskFailed):
        flow.run(on_event=hear, progress=False)
    run_status = {task: kind for kind, task in events if task == "each"}
    assert run_status == {"each": "task_cancelled"}


def test_a_map_in_a_fail_fast_group_stops_only_its_group():
    # the failing element was the map's last to end: the whole fail_fast=False run stopped
    flow = lf.Flow("group-map")
    group = lf.TaskGroup("grp", fail_fast=True)
    flow.add(lambda: [0, 1, 2], name="items")

    def work(items):
        time.sleep(0.05 * items)
        if items == 2:
            raise ValueError("the last element fails")
        return items

    flow.add(work, name="work", map="items", group=group)
    flow.add(lambda work: work, name="uses_work")
    flow.add(lambda: time.sleep(0.4) or "out", name="outside")
    flow.add(lambda outside: outside, name="later")
    run = flow.run(fail_fast=False, progress=False)
    statuses = {name: t.status for name, t in run.tasks.items() if "[" not in name}
    assert statuses == {
        "items": "succeeded",
        "work": "failed",
        "uses_work": "skipped",
        "outside": "succeeded",
        "later": "succeeded",
    }


@pytest.mark.parametrize("mode", ["dynamic", "layered", "sequential"])
@pytest.mark.parametrize("store", [False, True])
def test_the_checkpoint_after_a_layer_that_maps_over_nothing_can_stop_the_run(
    mode, store, tmp_path
):
    # the empty map ended before its layer's turn, and the layer after it opened unasked
    flow = _empty_map()
    asked: list[int] = []

    def checkpoint(report):
        asked.append(report.index)
        return report.index == 0  # go on after the first layer, stop after the map's

    for _ in range(3):
        asked.clear()
        run = flow.run(
            checkpoint=checkpoint, mode=mode, store=tmp_path if store else None, progress=False
        )
        assert asked == [0, 1]
        assert run.status == "stopped"
        assert run.tasks["count"].status == "cancelled"


def _marked_element(marks: str, broken: str, items: int) -> int:
    with open(marks, "a") as f:
        f.write(f"{items}\n")
    if items == 3 and os.path.exists(broken):
        raise ValueError("bad element")
    return items * 2
