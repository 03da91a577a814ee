"""Running flows on threads: overlap, failure policy, retries, timeouts, pruning, events."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import layerflow as lf


class Recorder:
    """Start/end events with a global counter, and the peak number of tasks at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str, int]] = []
        self.now = 0
        self.peak = 0
        self.count = 0

    def start(self, name: str) -> None:
        with self.lock:
            self.count += 1
            self.peak = max(self.peak, self.count)
            self.events.append((name, "start", len(self.events)))

    def end(self, name: str) -> None:
        with self.lock:
            self.count -= 1
            self.events.append((name, "end", len(self.events)))

    def starts(self) -> list[str]:
        return [n for n, kind, _ in self.events if kind == "start"]

    def task(self, name: str, seconds: float = 0.0, value=None):
        def fn(**upstream):
            self.start(name)
            if seconds:
                time.sleep(seconds)
            self.end(name)
            return value

        return fn


def wide_flow(rec: Recorder, width: int, seconds: float) -> lf.Flow:
    flow = lf.Flow("wide")
    for k in range(width):
        flow.add(rec.task(f"w{k}", seconds, k), name=f"w{k}")
    flow.add(
        lambda **kw: sum(kw.values()), name="sum", inputs={f"w{k}": f"w{k}" for k in range(width)}
    )
    return flow


def test_independent_tasks_overlap_and_speedup_is_reported():
    rec = Recorder()
    flow = wide_flow(rec, 4, 0.2)
    run = flow.run(max_workers=4)
    assert run["sum"] == 6
    assert rec.peak == 4  # all four were running at the same time
    assert run.ok and run.status == "succeeded"
    assert run.sequential_estimate >= 0.8
    assert run.speedup > 2  # 4 x 0.2 s of work in about 0.2 s: generous bound
    assert run.layers == [["w0", "w1", "w2", "w3"], ["sum"]]
    task = run.tasks["w0"]
    assert task.status == "succeeded" and task.attempts == 1 and task.layer == 0
    assert task.started_at <= task.finished_at and task.duration >= 0.19


def test_max_workers_bounds_concurrency():
    rec = Recorder()
    flow = wide_flow(rec, 10, 0.02)
    flow.run(max_workers=3)
    assert rec.peak == 3


def test_default_bound_lets_every_ready_task_start():
    rec = Recorder()
    flow = wide_flow(rec, 20, 0.2)
    flow.run()
    assert rec.peak == 20


def test_sequential_runs_in_the_calling_thread_in_plan_order():
    flow = lf.Flow()
    threads = []

    for name in ["c", "a", "b"]:
        flow.add(lambda n=name: threads.append(threading.current_thread()), name=name)
    run = flow.run(mode="sequential")
    assert run.order == flow.plan().order == ["c", "a", "b"]
    assert set(threads) == {threading.current_thread()}


def test_layered_mode_waits_for_the_whole_layer():
    rec = Recorder()
    flow = lf.Flow()
    flow.add(rec.task("slow", 0.3), name="slow")
    flow.add(rec.task("fast", 0.0), name="fast")
    flow.add(rec.task("after_fast", 0.0), name="after_fast", after=["fast"])
    flow.run(mode="layered")
    ends = {n: i for n, kind, i in rec.events if kind == "end"}
    starts = {n: i for n, kind, i in rec.events if kind == "start"}
    assert starts["after_fast"] > ends["slow"]
    rec2 = Recorder()
    flow2 = lf.Flow()
    flow2.add(rec2.task("slow", 0.3), name="slow")
    flow2.add(rec2.task("fast", 0.0), name="fast")
    flow2.add(rec2.task("after_fast", 0.0), name="after_fast", after=["fast"])
    flow2.run(mode="dynamic")
    ends = {n: i for n, kind, i in rec2.events if kind == "end"}
    starts = {n: i for n, kind, i in rec2.events if kind == "start"}
    assert starts["after_fast"] < ends["slow"]  # dynamic does not wait for the layer


def test_priority_then_longest_path_then_declaration_order():
    rec = Recorder()
    flow = lf.Flow()
    flow.add(rec.task("plain"), name="plain")
    flow.add(rec.task("head"), name="head")
    flow.add(rec.task("tail"), name="tail", after=["head"])
    flow.add(rec.task("urgent"), name="urgent", priority=10)
    flow.add(rec.task("plain2"), name="plain2")
    run = flow.run(max_workers=1)
    # after head, plain / tail / plain2 all have one task left on their path: declaration order
    assert rec.starts() == ["urgent", "head", "plain", "tail", "plain2"]
    assert run.order == rec.starts()


def test_fail_fast_raises_with_partial_result_and_cause():
    flow = lf.Flow("ff")
    started = []

    @flow.task
    def ok():
        return "kept"

    @flow.task
    def bad(ok):
        raise ValueError("broken input")

    @flow.task
    def downstream(bad):
        started.append("downstream")

    @flow.task
    def later(ok, bad):
        started.append("later")

    with pytest.raises(lf.TaskFailed) as info:
        flow.run(max_workers=1)
    err = info.value
    assert isinstance(err.__cause__, ValueError) and str(err.__cause__) == "broken input"
    assert err.task == "bad"
    assert "task 'bad' failed: ValueError: broken input" in str(err)
    result = err.result
    assert result.status == "failed" and not result.ok
    assert result["ok"] == "kept"
    assert result.tasks["bad"].status == "failed"
    assert result.tasks["bad"].error is err.__cause__
    assert result.tasks["downstream"].status == "cancelled"
    assert result.tasks["later"].status == "cancelled"
    assert started == []


def test_fail_fast_cancels_tasks_not_yet_started():
    flow = lf.Flow()
    flow.add(lambda: (_ for _ in ()).throw(RuntimeError("x")), name="boom")
    for k in range(5):
        flow.add(lambda: time.sleep(0.05), name=f"slow{k}")
    with pytest.raises(lf.TaskFailed) as info:
        flow.run(max_workers=1)
    statuses = {n: t.status for n, t in info.value.result.tasks.items()}
    assert statuses["boom"] == "failed"
    assert set(statuses.values()) <= {"failed", "cancelled", "succeeded"}
    assert "cancelled" in statuses.values()


def test_continue_on_failure_skips_downstream_and_runs_the_rest():
    flow = lf.Flow()

    @flow.task
    def a():
        raise KeyError("a")

    @flow.task
    def b(a):
        return 1

    @flow.task
    def c(b):
        return 1

    @flow.task
    def independent():
        return "fine"

    @flow.task
    def d(independent):
        return independent + "!"

    run = flow.run(fail_fast=False)
    assert run.status == "failed" and not run.ok
    assert {n: t.status for n, t in run.tasks.items()} == {
        "a": "failed",
        "b": "skipped",
        "c": "skipped",
        "independent": "succeeded",
        "d": "succeeded",
    }
    assert run["d"] == "fine!"
    assert run.tasks["b"].attempts == 0


def test_retries_then_success_and_retry_on_filter():
    calls = {"flaky": 0, "typed": 0}
    flow = lf.Flow()

    @flow.task(retries=3)
    def flaky():
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError("try again")
        return "ok"

    @flow.task(retries=5, retry_on=(ConnectionError,))
    def typed():
        calls["typed"] += 1
        raise ValueError("not retryable")

    run = flow.run(fail_fast=False)
    assert run["flaky"] == "ok" and run.tasks["flaky"].attempts == 3
    assert run.tasks["typed"].status == "failed" and calls["typed"] == 1


def test_retries_exhausted_and_delay_grows():
    starts: list[float] = []
    flow = lf.Flow()

    @flow.task(retries=2, retry_delay=0.1)
    def always():
        starts.append(time.perf_counter())
        raise OSError("down")

    with pytest.raises(lf.TaskFailed, match="after 3 attempts") as info:
        flow.run()
    assert info.value.result.tasks["always"].attempts == 3
    first_wait, second_wait = starts[1] - starts[0], starts[2] - starts[1]
    assert first_wait >= 0.07  # 0.1 s with up to 20% jitter
    assert second_wait > first_wait * 1.2  # doubled (0.2 s), jitter cannot undo that


def test_thread_task_timeout_fails_at_the_deadline_and_frees_the_slot():
    flow = lf.Flow()
    done = []

    @flow.task(timeout=0.3)
    def hang():
        time.sleep(5)

    for k in range(3):
        flow.add(lambda k=k: done.append(k), name=f"other{k}")

    t0 = time.perf_counter()
    run = flow.run(max_workers=1, fail_fast=False)
    elapsed = time.perf_counter() - t0
    assert elapsed < 3  # the 5 s sleep was not waited for
    hung = run.tasks["hang"]
    assert hung.status == "failed" and isinstance(hung.error, lf.TaskTimeout)
    assert isinstance(hung.error, TimeoutError)
    assert "timed out after 0.3s" in str(hung.error)
    assert sorted(done) == [0, 1, 2]  # the slot went to a fresh worker


def test_timeout_is_retried():
    attempts = []
    flow = lf.Flow()

    @flow.task(timeout=0.2, retries=1)
    def slow_then_fast():
        attempts.append(1)
        if len(attempts) == 1:
            time.sleep(2)
        return "second try"

    run = flow.run()
    assert run["slow_then_fast"] == "second try"
    assert run.tasks["slow_then_fast"].attempts == 2


def test_run_timeout():
    flow = lf.Flow()
    flow.add(lambda: time.sleep(5), name="forever")
    flow.add(lambda forever: 1, name="never")
    t0 = time.perf_counter()
    with pytest.raises(lf.TaskFailed) as info:
        flow.run(timeout=0.3)
    assert time.perf_counter() - t0 < 3
    assert isinstance(info.value.__cause__, lf.TaskTimeout)
    tasks = info.value.result.tasks
    assert tasks["forever"].status == "failed" and tasks["never"].status == "cancelled"


def test_sequential_mode_enforces_timeouts_too():
    flow = lf.Flow()
    flow.add(lambda: time.sleep(5), name="hang", timeout=0.2)
    flow.add(lambda: "next", name="next")
    t0 = time.perf_counter()
    run = flow.run(mode="sequential", fail_fast=False)
    assert time.perf_counter() - t0 < 3
    assert run.tasks["hang"].status == "failed" and run["next"] == "next"


ABANDONED_THREAD_SCRIPT = textwrap.dedent(
    """
    import time, layerflow as lf
    flow = lf.Flow()
    flow.add(lambda: time.sleep(60), name="hang", timeout=0.2)
    run = flow.run(fail_fast=False)
    print(run.tasks["hang"].status)
    """
)


def test_an_abandoned_thread_does_not_keep_the_process_alive():
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", ABANDONED_THREAD_SCRIPT], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "failed"
    assert time.perf_counter() - t0 < 20
    assert "abandoned" in out.stderr  # the user is told, through logging


def test_outputs_prune_and_release_intermediate_values():
    ran = []
    flow = lf.Flow()

    @flow.task
    def raw():
        ran.append("raw")
        return list(range(1000))

    @flow.task
    def clean(raw):
        ran.append("clean")
        return [x * 2 for x in raw]

    @flow.task
    def total(clean):
        ran.append("total")
        return sum(clean)

    @flow.task
    def unrelated():
        ran.append("unrelated")

    run = flow.run(outputs=["total"])
    assert run["total"] == 999_000
    assert sorted(ran) == ["clean", "raw", "total"]
    assert list(run.tasks) == ["raw", "clean", "total"]
    assert run.tasks["raw"].value is None  # released once clean finished
    with pytest.raises(lf.NoValueError, match="released"):
        run["clean"]
    # without outputs every value is kept
    full = flow.run()
    assert full["raw"] == list(range(1000))


def test_events_in_order_with_their_fields():
    events: list[lf.Event] = []
    calls = []
    flow = lf.Flow("ev")

    @flow.task(retries=1)
    def a():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first try")
        return 1

    @flow.task
    def b(a):
        return 2

    @flow.task
    def c():
        raise ValueError("c fails")

    @flow.task
    def d(c):
        return 3

    flow.run(on_event=events.append, fail_fast=False, max_workers=1)
    kinds = [(e.kind, e.task) for e in events]
    assert kinds[0] == ("run_started", None) and kinds[-1] == ("run_finished", None)
    assert ("task_retrying", "a") in kinds
    assert kinds.index(("task_started", "a")) < kinds.index(("task_retrying", "a"))
    assert kinds.index(("task_succeeded", "a")) < kinds.index(("task_started", "b"))
    assert ("task_failed", "c") in kinds and ("task_skipped", "d") in kinds
    assert ("layer_started", None) in kinds and ("layer_finished", None) in kinds
    retry = next(e for e in events if e.kind == "task_retrying")
    assert retry.attempt == 1 and isinstance(retry.error, RuntimeError)
    failed = next(e for e in events if e.kind == "task_failed")
    assert isinstance(failed.error, ValueError) and failed.layer == 0
    layer_done = [e for e in events if e.kind == "layer_finished"]
    assert [e.layer for e in layer_done] == sorted(e.layer for e in layer_done)
    finished = events[-1]
    assert finished.status == "failed" and finished.counts["skipped"] == 1
    assert all(e.run_id == events[0].run_id for e in events)
    with pytest.raises(AttributeError):
        events[0].kind = "changed"  # frozen


def test_a_broken_observer_does_not_break_the_run(caplog):
    def observer(event):
        raise RuntimeError("observer bug")

    flow = lf.Flow()
    flow.add(lambda: 1, name="a")
    assert flow.run(on_event=observer)["a"] == 1
    assert "observer" in caplog.text


def test_log_lines_in_the_cli_shape(caplog):
    flow = lf.Flow()
    flow.add(lambda: time.sleep(0.05), name="image_1")
    flow.add(lambda: time.sleep(0.05), name="image_2")
    with caplog.at_level(logging.INFO, logger="layerflow"):
        flow.run(max_workers=1)
    lines = [r.getMessage() for r in caplog.records]
    assert "[1/2] Started: image_1" in lines
    assert any(line.startswith("[2/2] Completed: image_2 (") for line in lines)
    assert lines[-1].startswith("Completed 2 tasks in ")
    assert "sequential estimate" in lines[-1] and "speedup" in lines[-1]


def test_progress_prints_lines_to_stderr(capsys):
    flow = lf.Flow()
    flow.add(lambda: 1, name="only")
    flow.run(progress=True)
    err = capsys.readouterr().err
    assert "[1/1] Started: only" in err and "Completed 1 task " in err


def test_summary_and_repr():
    flow = lf.Flow("sum")
    flow.add(lambda: 1, name="a")
    flow.add(lambda a: a, name="b")
    run = flow.run()
    text = run.summary()
    assert "of flow 'sum': succeeded" in text and "speedup" in text
    assert "critical path: a -> b" in text
    assert run.critical_path == ["a", "b"]
    assert "RunResult" in repr(run) and run.run_id in text
    assert run.values == {"a": 1, "b": 1}


def test_empty_flow_runs():
    run = lf.Flow().run()
    assert run.ok and run.tasks == {} and run.speedup == 1.0


def test_large_chain_does_not_recurse():
    flow = lf.Flow()
    flow.add(lambda: 0, name="t0")
    for i in range(1, 20_000):
        flow.add(lambda prev: prev + 1, name=f"t{i}", inputs={"prev": f"t{i - 1}"})
    assert flow.run(max_workers=4)["t19999"] == 19_999


INTERRUPT_SCRIPT = textwrap.dedent(
    """
    import json, sys, time, layerflow as lf
    flow = lf.Flow()
    flow.add(lambda: "done", name="quick")
    def slow(quick):
        print("slow started", flush=True)
        time.sleep(30)
    flow.add(slow, name="slow")
    flow.add(lambda slow: 1, name="after")
    try:
        flow.run()
    except lf.RunInterrupted as e:
        r = e.result
        print(json.dumps({"status": r.status, "quick": r["quick"],
                          "tasks": {n: t.status for n, t in r.tasks.items()}}), flush=True)
        sys.exit(130)
    """
)


@pytest.mark.skipif(os.name != "posix", reason="SIGINT delivery")
def test_ctrl_c_stops_the_run_and_keeps_finished_results():
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPT_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "slow started"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130
    report = json.loads(out)
    assert report["status"] == "interrupted" and report["quick"] == "done"
    assert report["tasks"] == {"quick": "succeeded", "slow": "cancelled", "after": "cancelled"}


@pytest.mark.skipif(os.name != "posix", reason="SIGINT delivery")
@pytest.mark.parametrize("mode", ["dynamic", "sequential"])
def test_a_ctrl_c_received_by_another_thread_still_stops_the_run(mode):
    # regression (seen in CI): the kernel gives a process's SIGINT to any of its threads.
    # Taken by another thread, Python only sets a flag for the main thread, and a main
    # thread blocked in an untimed wait never looked at it: the run went on to its end and
    # the Ctrl-C then escaped as a plain KeyboardInterrupt
    release = threading.Event()

    def ctrl_c_elsewhere():  # a thread of its own takes the signal, as the kernel may choose
        threading.Timer(
            0.1, lambda: signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        ).start()

    def quick():
        return "done"

    def slow(quick):
        ctrl_c_elsewhere()
        release.wait(10)

    async def slow_coroutine(quick):  # sequential: the main thread waits for the loop's task
        ctrl_c_elsewhere()
        for _ in range(100):
            if release.is_set():
                return
            await asyncio.sleep(0.1)

    flow = lf.Flow("ctrl-c-elsewhere")
    flow.add(quick)
    flow.add(slow if mode == "dynamic" else slow_coroutine, name="slow")
    flow.add(lambda slow: 1, name="after")
    t0 = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            flow.run(mode=mode, progress=False)
    finally:
        release.set()
    assert isinstance(caught.value, lf.RunInterrupted), type(caught.value)
    assert time.perf_counter() - t0 < 5  # not after the task's 10 s
    run = caught.value.result
    assert run.status == "interrupted" and run["quick"] == "done"
    assert run.tasks["after"].status == "cancelled"


@pytest.mark.parametrize("max_workers", [None, 32, 10])
def test_n_ready_tasks_start_no_more_than_n_worker_threads(monkeypatch, max_workers):
    # regression: each worker that took a task started one more for each task still
    # ready, not counting the workers started a moment before: 10 ready tasks started 55
    # threads (7 ms of a 10-task run's 9)
    started = []
    original = threading.Thread.start

    def start(self):
        if self.name == "layerflow-worker":
            started.append(self)
        return original(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    flow = lf.Flow("ten")
    for k in range(10):
        flow.add(lambda: None, name=f"t{k}")
    for _ in range(5):
        started.clear()
        flow.run(max_workers=max_workers, progress=False)
        assert len(started) <= 10


def test_a_long_task_among_tiny_ones_does_not_hold_them_up():
    # tiny tasks run on one worker (more threads would only add hand-offs); a worker stuck
    # in a long task must not keep the others from taking them
    flow = lf.Flow()
    flow.add(lambda: time.sleep(1.0), name="long", priority=10)
    for k in range(2000):
        flow.add(lambda: None, name=f"tiny{k}")
    run = flow.run(max_workers=4)
    long_end = run.tasks["long"].finished_at
    assert max(run.tasks[f"tiny{k}"].finished_at for k in range(2000)) < long_end


# --- a run's timeout: one rule (#29.6) -----------------------------------------------------


def _timed_out_flows():
    gate = threading.Event()
    running = lf.Flow("running-at-the-deadline")
    running.add(lambda: gate.wait(5), name="slow")
    running.add(lambda slow: slow, name="after")
    running.add(lambda: 3, name="other")
    held = lf.Flow("held-by-a-rate-limit")  # nothing runs at the deadline: b waits
    held.add(lambda: 1, name="a", rate_limit="api")
    held.add(lambda: 2, name="b", rate_limit="api")
    held.add(lambda a: a, name="c")
    return gate, [(running, {}), (held, {"rate_limits": {"api": "1/10s"}})]


@pytest.mark.parametrize("which", [0, 1], ids=["a-task-running", "nothing-running"])
def test_a_run_timeout_returns_a_failed_result_without_fail_fast(which):
    gate, flows = _timed_out_flows()
    flow, options = flows[which]
    try:
        result = flow.run(timeout=0.3, fail_fast=False, progress=False, **options)
    finally:
        gate.set()
    assert result.status == "failed"
    statuses = {name: t.status for name, t in result.tasks.items()}
    if which == 0:
        assert statuses == {"slow": "failed", "after": "cancelled", "other": "succeeded"}
        assert isinstance(result.tasks["slow"].error, lf.TaskTimeout)
    else:
        assert statuses == {"a": "succeeded", "b": "cancelled", "c": "succeeded"}


@pytest.mark.parametrize("which", [0, 1], ids=["a-task-running", "nothing-running"])
def test_a_run_timeout_raises_under_fail_fast(which):
    gate, flows = _timed_out_flows()
    flow, options = flows[which]
    try:
        with pytest.raises(lf.TaskFailed, match="timed out after 0.3s") as caught:
            flow.run(timeout=0.3, progress=False, **options)
    finally:
        gate.set()
    assert caught.value.result.status == "failed"


@pytest.mark.parametrize("fail_fast", [True, False])
def test_at_the_run_deadline_every_running_coroutine_times_out(fail_fast):
    # under fail-fast the first timed-out task cancelled the others (coroutines, processes)
    flow = lf.Flow("two-running")

    async def s1():
        await asyncio.sleep(5)

    async def s2():
        await asyncio.sleep(5)

    flow.add(s1, name="s1")
    flow.add(s2, name="s2")
    try:
        # 1 s: both must be running at the deadline, also on a loaded machine
        result = flow.run(timeout=1.0, fail_fast=fail_fast, progress=False)
    except lf.TaskFailed as e:
        result = e.result
    for name in ("s1", "s2"):
        assert result.tasks[name].status == "failed"
        assert isinstance(result.tasks[name].error, lf.TaskTimeout)


def test_fail_fast_starts_nothing_after_the_first_failure():
    started = []

    async def bad():
        await asyncio.sleep(0.1)
        raise ValueError("first failure")

    async def slow():
        started.append("slow")
        await asyncio.sleep(1)

    async def later():
        started.append("later")
        return 2

    flow = lf.Flow()
    flow.add(bad, priority=3)
    flow.add(slow, priority=2)
    flow.add(later, priority=1)
    with pytest.raises(lf.TaskFailed) as info:
        flow.run(max_workers=2)
    assert "later" not in started
    assert info.value.result.tasks["later"].status == "cancelled"


def test_no_checkpoint_question_after_a_fail_fast_failure():
    asked = []
    flow = lf.Flow()
    flow.add(lambda: (_ for _ in ()).throw(ValueError("x")), name="a")
    flow.add(lambda a: 1, name="b")
    with pytest.raises(lf.TaskFailed):
        flow.run(checkpoint=lambda report: asked.append(report) or True)
    assert asked == []


def test_a_retry_is_not_killed_by_the_previous_attempts_deadline():
    calls = []
    flow = lf.Flow()

    @flow.task(timeout=1.0, retries=1, retry_delay=0.5)
    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("fast fail")
        time.sleep(0.7)  # within its own 1 s, but past the first attempt's deadline
        return "ok"

    assert flow.run()["flaky"] == "ok"


@pytest.mark.parametrize("option", ["timeout", "retry_delay"])
def test_infinite_durations_are_refused(option):
    flow = lf.Flow()
    with pytest.raises(lf.InvalidOptionError, match=option):
        flow.add(lambda: 1, name="t", **{option: math.inf})
    flow.add(lambda: 1, name="ok")
    with pytest.raises(lf.InvalidOptionError, match="timeout"):
        flow.run(timeout=math.inf)


def test_a_huge_run_timeout_does_not_stop_the_timer():
    calls = []
    flow = lf.Flow()

    @flow.task(retries=1, retry_delay=0.01)
    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("once")
        return 2

    assert flow.run(timeout=1e10)["flaky"] == 2


def test_a_result_that_arrives_after_the_deadline_is_a_timeout():
    flow = lf.Flow()
    for k in range(10):
        flow.add(lambda: time.sleep(0.05) or 1, name=f"t{k}", timeout=0.001)
    run = flow.run(fail_fast=False, max_workers=4)
    assert all(t.status == "failed" for t in run.tasks.values())
    assert all(isinstance(t.error, lf.TaskTimeout) for t in run.tasks.values())


def test_a_value_is_released_only_once_it_has_arrived():
    flow = lf.Flow()

    @flow.task
    def slow():
        time.sleep(0.3)
        return "big value"

    @flow.task
    def bad():
        raise ValueError("no")

    @flow.task
    def use(slow, bad):
        return 1

    @flow.task
    def out():
        return "out"

    run = flow.run(outputs=["use", "out"], fail_fast=False)
    assert run.tasks["slow"].status == "succeeded"
    assert run.tasks["slow"].value is None  # released once it arrived: nobody needs it
    with pytest.raises(lf.NoValueError, match="released"):
        run["slow"]


def test_run_timeout_with_nothing_running_names_no_task():
    flow = lf.Flow()

    @flow.task(retries=1, retry_delay=5)
    def waits():
        raise ValueError("then waits 5 s to retry")

    with pytest.raises(lf.TaskFailed) as info:
        flow.run(timeout=0.3)
    assert info.value.task is None
    assert isinstance(info.value.__cause__, lf.TaskTimeout)
    # the last attempt's error is kept on the cancelled task
    assert isinstance(info.value.result.tasks["waits"].error, ValueError)


def test_a_layer_of_skipped_tasks_still_starts_before_it_finishes():
    events = []
    flow = lf.Flow()
    flow.add(lambda: (_ for _ in ()).throw(ValueError("x")), name="bad")
    flow.add(lambda bad: 1, name="skipped")
    flow.run(fail_fast=False, on_event=events.append)
    layer_events = [(e.kind, e.layer) for e in events if e.kind.startswith("layer")]
    assert layer_events.index(("layer_started", 1)) < layer_events.index(("layer_finished", 1))
