"""One conformance suite, run against every backend: thread, process, async, sequential,
and dask (a real cluster of worker processes, one per test session).

Tasks log start/end events to an append-only file with a system-wide monotonic clock, so
the same checks work in threads, in coroutines and across worker processes. Overlap and
bounds are read from the order of those events, never from durations.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import layerflow as lf

BACKENDS = ["thread", "process", "async", "sequential", "dask"]


def log_event(path: str, name: str, kind: str) -> None:
    with open(path, "a") as f:  # one short append per line: atomic on POSIX
        f.write(f"{time.monotonic_ns()} {name} {kind}\n")


def read_events(path: Path) -> list[tuple[int, str, str]]:
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines()]
    return sorted((int(t), name, kind) for t, name, kind in rows)


def peak(events: list[tuple[int, str, str]]) -> int:
    now = best = 0
    for _, _, kind in events:
        now += 1 if kind == "start" else -1
        best = max(best, now)
    return best


def make_task(backend: str, name: str, log: str, seconds: float = 0.0, result=None, fail=None):
    """A task for ``backend`` that logs, sleeps, then returns ``result(**upstream)``."""
    if backend == "async":

        async def fn(**upstream):
            log_event(log, name, "start")
            await asyncio.sleep(seconds)
            log_event(log, name, "end")
            if fail is not None:
                raise fail
            return result(**upstream) if result else name

    else:

        def fn(**upstream):
            log_event(log, name, "start")
            time.sleep(seconds)
            log_event(log, name, "end")
            if fail is not None:
                raise fail
            return result(**upstream) if result else name

    return fn


def run_flow(flow: lf.Flow, backend: str, **options):
    if backend == "sequential":
        return flow.run(mode="sequential", **options)
    if backend == "dask":
        return flow.run(backend="dask", client=_CLIENT["dask"], **options)
    return flow.run(backend=backend if backend != "async" else "thread", **options)


_CLIENT: dict[str, object] = {}


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "dask":
        _CLIENT["dask"] = request.getfixturevalue("dask_client")
    return request.param


@pytest.fixture
def log(tmp_path):
    return tmp_path / "events.log"


def test_values_flow_along_the_edges(backend, log):
    flow = lf.Flow()
    flow.add(make_task(backend, "a", str(log), result=lambda: 2), name="a")
    flow.add(
        make_task(backend, "b", str(log), result=lambda a: a * 10), name="b", inputs={"a": "a"}
    )
    flow.add(make_task(backend, "c", str(log), result=lambda a: a + 1), name="c", inputs={"a": "a"})
    flow.add(
        make_task(backend, "d", str(log), result=lambda b, c: b + c),
        name="d",
        inputs={"b": "b", "c": "c"},
    )
    run = run_flow(flow, backend)
    assert run.ok and run["d"] == 23
    events = read_events(log)
    starts = {n: t for t, n, k in events if k == "start"}
    ends = {n: t for t, n, k in events if k == "end"}
    assert ends["a"] < starts["b"] and ends["a"] < starts["c"]
    assert max(ends["b"], ends["c"]) < starts["d"]


def test_peak_concurrency_respects_max_workers(backend, log):
    flow = lf.Flow()
    # long enough that two overlap even when a loaded machine is slow to start the second
    # (on a Dask cluster a start crosses the scheduler: 0.15 s did not overlap at load 11)
    seconds = 0.5 if backend == "dask" else 0.15
    for k in range(6):
        flow.add(make_task(backend, f"w{k}", str(log), seconds=seconds), name=f"w{k}")
    run_flow(flow, backend, max_workers=2)
    events = read_events(log)
    assert len(events) == 12
    expected = 1 if backend == "sequential" else 2
    assert peak(events) == expected


def test_independent_tasks_overlap(backend, log):
    if backend == "sequential":
        pytest.skip("sequential never overlaps (checked above)")
    flow = lf.Flow()
    for k in range(2):
        flow.add(make_task(backend, f"w{k}", str(log), seconds=0.5), name=f"w{k}")
    run_flow(flow, backend, max_workers=2)
    assert peak(read_events(log)) == 2


def test_failure_fail_fast_and_continue(backend, log):
    def build():
        flow = lf.Flow()
        flow.add(make_task(backend, "bad", str(log), fail=ValueError("bad value")), name="bad")
        flow.add(make_task(backend, "down", str(log)), name="down", after=["bad"])
        flow.add(make_task(backend, "free", str(log)), name="free")
        return flow

    with pytest.raises(lf.TaskFailed) as info:
        run_flow(build(), backend, max_workers=1)
    assert isinstance(info.value.__cause__, ValueError)
    assert str(info.value.__cause__) == "bad value"
    assert info.value.result.tasks["down"].status == "cancelled"

    run = run_flow(build(), backend, fail_fast=False)
    statuses = {n: t.status for n, t in run.tasks.items()}
    assert statuses == {"bad": "failed", "down": "skipped", "free": "succeeded"}


def test_retry_until_success(backend, tmp_path, log):
    marker = str(tmp_path / "attempts")

    def result():
        with open(marker, "a") as f:
            f.write("x")
        if len(Path(marker).read_text()) < 3:
            raise ConnectionError("flaky")
        return "third time"

    flow = lf.Flow()
    flow.add(make_task(backend, "flaky", str(log), result=result), name="flaky", retries=3)
    run = run_flow(flow, backend)
    assert run["flaky"] == "third time"
    assert run.tasks["flaky"].attempts == 3


def test_timeout_fails_at_the_deadline(backend, log):
    flow = lf.Flow()
    flow.add(make_task(backend, "slow", str(log), seconds=10), name="slow", timeout=0.4)
    flow.add(make_task(backend, "other", str(log)), name="other")
    t0 = time.perf_counter()
    run = run_flow(flow, backend, fail_fast=False)
    assert time.perf_counter() - t0 < 8  # the 10 s of work was not waited for
    slow = run.tasks["slow"]
    assert slow.status == "failed" and isinstance(slow.error, lf.TaskTimeout)
    assert run["other"] == "other"


def test_fail_fast_cancels_what_has_not_started(backend, log):
    flow = lf.Flow()
    flow.add(make_task(backend, "bad", str(log), fail=RuntimeError("stop")), name="bad", priority=5)
    for k in range(4):
        flow.add(make_task(backend, f"later{k}", str(log), seconds=0.05), name=f"later{k}")
    with pytest.raises(lf.TaskFailed) as info:
        run_flow(flow, backend, max_workers=1)
    tasks = info.value.result.tasks
    assert tasks["bad"].status == "failed"
    assert all(tasks[f"later{k}"].status == "cancelled" for k in range(4))
    assert [n for _, n, k in read_events(log) if k == "start"] == ["bad"]


def test_a_resource_pool_bounds_its_tasks_on_every_pool(backend, log):
    flow = lf.Flow()
    for k in range(4):
        flow.add(
            make_task(backend, f"g{k}", str(log), seconds=0.1), name=f"g{k}", resources={"gpu": 1}
        )
    flow.add(make_task(backend, "free", str(log), seconds=0.1), name="free")
    run = run_flow(flow, backend, max_workers=4, resources={"gpu": 1})
    assert run.ok
    gpu = [e for e in read_events(log) if e[1].startswith("g")]
    assert peak(gpu) == 1


def test_a_rate_limit_spaces_starts_on_every_pool(backend, log):
    flow = lf.Flow()
    for k in range(3):
        flow.add(make_task(backend, f"r{k}", str(log)), name=f"r{k}", rate_limit="api")
    run = run_flow(flow, backend, max_workers=3, rate_limits={"api": "2/0.6s"})
    assert run.ok
    # when each started (on Dask, as its worker timed it: a cold cluster's first tasks
    # arrive late, so the gap may look shorter than the window); unlimited, all three
    # would start within milliseconds
    starts = sorted(run.tasks[f"r{k}"].started_at for k in range(3))
    assert starts[2] - starts[0] >= 0.3  # the third waited for the window


def test_map_fans_out_over_a_list(backend, log):
    flow = lf.Flow()
    flow.add(make_task(backend, "items", str(log), result=lambda: [1, 2, 3]), name="items")
    flow.add(
        make_task(backend, "double", str(log), result=lambda items: items * 2),
        name="double",
        map="items",
        inputs={"items": "items"},
    )
    run = run_flow(flow, backend)
    assert run["double"] == [2, 4, 6]
    assert [run.tasks[f"double[{k}]"].status for k in range(3)] == ["succeeded"] * 3


def test_a_checkpoint_sees_each_layer_and_can_stop(backend, log):
    flow = lf.Flow()
    flow.add(make_task(backend, "a", str(log), result=lambda: 1), name="a")
    flow.add(make_task(backend, "b", str(log), result=lambda a: a + 1), name="b", inputs={"a": "a"})
    flow.add(make_task(backend, "c", str(log), result=lambda b: b + 1), name="c", inputs={"b": "b"})
    seen = []

    def checkpoint(report):
        seen.append((report.index, dict(report.values)))
        return report.index < 1

    run = run_flow(flow, backend, checkpoint=checkpoint)
    assert run.status == "stopped"
    assert seen == [(0, {"a": 1}), (1, {"b": 2})]
    assert run.tasks["c"].status == "cancelled" and run["b"] == 2


def test_resume_reuses_what_finished(backend, tmp_path, log):
    marker = tmp_path / "fail"
    marker.write_text("x")

    def second():
        if marker.exists():
            raise RuntimeError("not yet")
        return "ok"

    def build():
        flow = lf.Flow("resumable")
        flow.add(make_task(backend, "first", str(log), result=lambda: 1), name="first")
        flow.add(
            make_task(backend, "second", str(log), result=second), name="second", after=["first"]
        )
        return flow

    store = tmp_path / "store"
    with pytest.raises(lf.TaskFailed):
        run_flow(build(), backend, store=store)
    marker.unlink()
    run = run_flow(build(), backend, store=store, resume=True)
    assert run.ok and run["second"] == "ok"
    assert run.tasks["first"].status == "reused"
    assert [n for _, n, k in read_events(log) if k == "start"].count("first") == 1


def test_the_cache_serves_every_pool_and_whole_maps(backend, tmp_path, log):
    def build():
        flow = lf.Flow("cached")
        flow.add(make_task(backend, "items", str(log), result=lambda: [1, 2]), name="items")
        flow.add(
            make_task(backend, "double", str(log), result=lambda items: items * 2),
            name="double",
            map="items",
            inputs={"items": "items"},
        )
        return flow

    store = tmp_path / "store"
    first = run_flow(build(), backend, store=store, cache=True)
    again = run_flow(build(), backend, store=store, cache=True)
    assert first["double"] == again["double"] == [2, 4]
    assert again.tasks["items"].status == "cached"
    assert again.tasks["double"].status == "cached"  # the whole list, read off the lock
    starts = [n for _, n, k in read_events(log) if k == "start"]
    assert starts.count("items") == 1 and starts.count("double") == 2


def test_events_tell_the_story_in_order(backend, log):
    flow = lf.Flow()
    flow.add(make_task(backend, "a", str(log)), name="a")
    flow.add(make_task(backend, "b", str(log)), name="b", after=["a"])
    events = []
    run_flow(flow, backend, on_event=events.append)
    kinds = [(e.kind, e.task) for e in events if e.task is not None or e.kind.startswith("run")]
    assert kinds[0] == ("run_started", None) and kinds[-1][0] == "run_finished"
    assert kinds.index(("task_succeeded", "a")) < kinds.index(("task_started", "b"))


def test_record_metrics_reach_the_result(backend, log):
    def measured():
        lf.record(tokens=5)
        return 1

    flow = lf.Flow()
    flow.add(make_task(backend, "a", str(log), result=measured), name="a")
    flow.add(make_task(backend, "b", str(log), result=measured), name="b")
    run = run_flow(flow, backend)
    assert run.tasks["a"].metrics == {"tokens": 5}
    assert run.metrics == {"tokens": 10}


CONTEXT = contextvars.ContextVar("layerflow_test_context", default="unset")


def test_the_callers_contextvars_reach_every_task(backend, log):
    if backend in ("process", "dask"):
        pytest.skip("a ContextVar cannot be pickled: contextvars stay in this process")

    def read(**_):
        seen = CONTEXT.get()
        CONTEXT.set("set by a task")  # seen by no other task
        return seen

    flow = lf.Flow()
    flow.add(make_task(backend, "a", str(log), result=read), name="a")
    flow.add(make_task(backend, "b", str(log), result=read), name="b", after=["a"])
    flow.add(make_task(backend, "c", str(log), result=read), name="c", after=["a"])
    token = CONTEXT.set("from the caller")
    try:
        run = run_flow(flow, backend, max_workers=1)
    finally:
        CONTEXT.reset(token)
    assert (run["a"], run["b"], run["c"]) == ("from the caller",) * 3


# --- backend specifics -----------------------------------------------------------------


def test_process_tasks_run_in_other_processes_with_closures():
    offset = 100  # captured by a closure: cloudpickle sends it along
    flow = lf.Flow()
    flow.add(lambda: os.getpid(), name="pid", executor="process")
    flow.add(lambda pid: pid + offset, name="shifted", executor="process")
    run = flow.run()
    assert run["pid"] != os.getpid()
    assert run["shifted"] == run["pid"] + offset


def test_a_dead_worker_fails_only_its_task_and_retries_apply(tmp_path):
    marker = tmp_path / "died-once"

    def die_once():
        if not marker.exists():
            marker.write_text("x")
            os._exit(3)
        return "recovered"

    flow = lf.Flow()
    flow.add(lambda: os._exit(7), name="dies", executor="process")
    flow.add(die_once, name="retried", executor="process", retries=1)
    for k in range(3):
        flow.add(lambda k=k: k, name=f"fine{k}", executor="process")
    run = flow.run(fail_fast=False, max_workers=2)
    dead = run.tasks["dies"]
    assert dead.status == "failed" and isinstance(dead.error, lf.WorkerDied)
    assert dead.error.exitcode == 7 and "exit code 7" in str(dead.error)
    assert "'dies'" in str(dead.error)
    assert run["retried"] == "recovered" and run.tasks["retried"].attempts == 2
    assert [run[f"fine{k}"] for k in range(3)] == [0, 1, 2]


def test_unpicklable_argument_fails_before_it_is_sent():
    lock = threading.Lock()
    flow = lf.Flow()
    flow.add(lambda: lock, name="make_lock")
    flow.add(lambda make_lock: 1, name="use_lock", executor="process", retries=3)
    run = flow.run(fail_fast=False)
    task = run.tasks["use_lock"]
    assert task.status == "failed" and isinstance(task.error, lf.UnpicklableError)
    assert "'use_lock'" in str(task.error) and "argument 'make_lock'" in str(task.error)
    assert task.attempts == 1  # pickling would fail again: not retried


def test_unpicklable_result_is_reported():
    flow = lf.Flow()
    flow.add(lambda: threading.Lock(), name="lock", executor="process")
    run = flow.run(fail_fast=False)
    assert isinstance(run.tasks["lock"].error, lf.UnpicklableError)
    assert "result" in str(run.tasks["lock"].error)


def test_process_exception_keeps_its_type():
    flow = lf.Flow()

    def boom():
        raise KeyError("missing key")

    flow.add(boom, executor="process")
    with pytest.raises(lf.TaskFailed) as info:
        flow.run()
    assert isinstance(info.value.__cause__, KeyError)


def test_backend_process_runs_plain_functions_in_processes():
    flow = lf.Flow()
    flow.add(lambda: os.getpid(), name="pid")
    assert flow.run(backend="process")["pid"] != os.getpid()


def test_ten_thousand_coroutines_at_once():
    state = {"now": 0, "peak": 0}

    async def nap():
        state["now"] += 1  # one event loop thread: no lock needed
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.5)
        state["now"] -= 1
        return 1

    flow = lf.Flow()
    for k in range(10_000):
        flow.add(nap, name=f"nap{k}")
    run = flow.run()
    assert run.ok and state["peak"] == 10_000


def test_coroutines_on_one_loop_and_sync_tasks_on_threads():
    loops = set()

    async def coro():
        loops.add(id(asyncio.get_running_loop()))
        return threading.get_ident()

    def plain():
        return threading.get_ident()

    flow = lf.Flow()
    for k in range(3):
        flow.add(coro, name=f"c{k}")
        flow.add(plain, name=f"p{k}")
    run = flow.run()
    assert len(loops) == 1
    assert {run[f"c{k}"] for k in range(3)}.isdisjoint({run[f"p{k}"] for k in range(3)})


def test_executor_async_needs_a_coroutine_function():
    flow = lf.Flow()
    flow.add(lambda: 1, name="plain", executor="async")
    with pytest.raises(lf.InvalidOptionError, match="'plain'.*async def"):
        flow.run()


def test_executor_thread_runs_a_coroutine_in_a_thread():
    async def coro():
        return "ran"

    flow = lf.Flow()
    flow.add(coro, executor="thread")
    assert flow.run()["coro"] == "ran"


def test_run_async_uses_the_callers_loop():
    async def coro():
        return id(asyncio.get_running_loop())

    flow = lf.Flow()
    flow.add(coro)
    flow.add(lambda coro: coro, name="after")

    async def main():
        run = await flow.run_async()
        return run["after"], id(asyncio.get_running_loop())

    inner, outer = asyncio.run(main())
    assert inner == outer


def test_run_async_cancellation_stops_the_run():
    started = []

    async def slow():
        started.append(1)
        await asyncio.sleep(10)

    flow = lf.Flow()
    flow.add(slow)

    async def main():
        task = asyncio.ensure_future(flow.run_async())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    t0 = time.perf_counter()
    asyncio.run(main())
    assert started and time.perf_counter() - t0 < 5


def test_mixed_run_shares_one_bound(tmp_path):
    log = str(tmp_path / "events.log")
    flow = lf.Flow()
    for k in range(3):
        flow.add(make_task("thread", f"t{k}", log, seconds=0.3), name=f"t{k}")
        flow.add(make_task("async", f"a{k}", log, seconds=0.3), name=f"a{k}")
        flow.add(make_task("thread", f"p{k}", log, seconds=0.3), name=f"p{k}", executor="process")
    run = flow.run(max_workers=3)
    assert run.ok
    events = read_events(Path(log))
    assert len(events) == 18
    assert peak(events) <= 3
    assert run.tasks["p0"].value == "p0"


def test_sequential_order_holds_across_pools(tmp_path):
    log = str(tmp_path / "events.log")
    flow = lf.Flow()
    flow.add(make_task("async", "first", log), name="first", priority=3)
    flow.add(make_task("thread", "second", log), name="second", priority=2)
    flow.add(make_task("async", "third", log), name="third", priority=1)
    run = flow.run(max_workers=1)
    assert run.order == ["first", "second", "third"]
    assert [n for _, n, k in read_events(Path(log)) if k == "start"] == run.order


def test_a_coroutine_cancelled_by_someone_else_fails_instead_of_hanging():
    # regression: any CancelledError was taken for layerflow's own cancel, and the run hung
    flow = lf.Flow()

    @flow.task
    async def victim():
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.05, fut.cancel)
        await fut

    @flow.task
    def other():
        return 1

    run = flow.run(fail_fast=False, timeout=30)
    assert run.tasks["victim"].status == "failed"
    assert isinstance(run.tasks["victim"].error, asyncio.CancelledError)
    assert run["other"] == 1


def test_cancelling_a_finished_process_attempt_spares_the_next_one_on_that_worker():
    # regression: the worker was idle again before the scheduler heard of the end; a
    # deadline firing in that window killed the next task on the worker, which never ended
    from layerflow.backends.process import ProcessBackend

    backend = ProcessBackend()
    done = {}
    second_done = threading.Event()
    handles = {}

    def first_done(ok, value, seconds, ref=None, metrics=None, cpu=None, output=None):
        # the worker is idle again: the next submission takes it, then the late deadline
        handles["b"] = backend.submit("b", pow, (2, 10), {}, on_second)
        backend.cancel(handles["a"])

    def on_second(ok, value, seconds, ref=None, metrics=None, cpu=None, output=None):
        done["b"] = (ok, value)
        second_done.set()

    try:
        handles["a"] = backend.submit("a", pow, (2, 3), {}, first_done)
        assert second_done.wait(60), "the second attempt never finished"
        assert done["b"] == (True, 1024)
    finally:
        backend.close()


def test_a_process_task_timeout_kills_what_the_task_started(tmp_path):
    # regression: grandchildren of a timed-out process task survived it
    pidfile = tmp_path / "child.pid"

    def spawn():
        import subprocess

        child = subprocess.Popen(["sleep", "60"])
        pidfile.write_text(str(child.pid))
        time.sleep(60)

    flow = lf.Flow()
    flow.add(spawn, name="spawn", executor="process", timeout=1.0)
    run = flow.run(fail_fast=False)
    assert isinstance(run.tasks["spawn"].error, lf.TaskTimeout)
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        # a killed child that nobody reaped is a zombie: gone for our purpose
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        raise AssertionError("the task's child process outlived the timeout")


def test_a_cancelled_run_async_is_recorded_as_interrupted(tmp_path):
    # regression: the run row stayed "running"
    from layerflow.store import Store

    flow = lf.Flow("cancelled")

    @flow.task
    def quick():
        return 1

    @flow.task
    async def slow(quick):
        await asyncio.sleep(10)

    async def main():
        task = asyncio.ensure_future(flow.run_async(store=tmp_path / "s"))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    store = Store(tmp_path / "s")
    try:
        (row,) = store.runs()
        assert row["status"] == "interrupted"
        statuses = {t["name"]: t["status"] for t in store.tasks_of(row["run_id"])}
        assert statuses["quick"] == "succeeded"
    finally:
        store.close()


def test_pipeline_run_async_uses_the_files_inputs_and_settings(tmp_path):
    # regression: Pipeline.run_async ignored `inputs:` and `settings`
    path = tmp_path / "p.yaml"
    path.write_text(
        "inputs: {word: hello}\n"
        "settings: {max_workers: 1, order: dataflow}\n"
        "steps:\n"
        "  - {name: a, run: 'echo {{inputs.word}} a'}\n"
        "  - {name: b, run: 'echo {{inputs.word}} b'}\n"
    )
    pipeline = lf.load_pipeline(path)
    events = []
    run = asyncio.run(pipeline.run_async(on_event=events.append))
    assert run["a"] == "hello a" and run["b"] == "hello b"
    starts = [e for e in events if e.kind in ("task_started", "task_succeeded")]
    assert [e.kind for e in starts] == ["task_started", "task_succeeded"] * 2  # one at a time


def test_process_tasks_of_a_module_imported_under_python_c(tmp_path):
    # python -c puts '' (the current folder) on sys.path: the workers must get the folder
    (tmp_path / "mymod.py").write_text(
        "import layerflow as lf\n"
        "def square():\n    return 7 * 7\n"
        "flow = lf.Flow()\n"
        "flow.add(square, name='square', executor='process')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", "import mymod; print(mymod.flow.run(store=False)['square'])"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "49"


def test_a_pool_is_closed_when_the_run_cannot_be_set_up_after_it_opened(monkeypatch):
    # regression: the record of values kept where they ran is made after the pools open;
    # when it failed, the pools that had opened (worker processes, a cluster) stayed open
    from layerflow.backends.process import ProcessBackend

    closed = []
    original = ProcessBackend.close

    def close(self):
        closed.append(self)
        original(self)

    def values(self, *args, **kwargs):
        raise RuntimeError("no record")

    monkeypatch.setattr(ProcessBackend, "keeps_values", True)  # as Dask's pool does
    monkeypatch.setattr(ProcessBackend, "values", values)
    monkeypatch.setattr(ProcessBackend, "close", close)
    flow = lf.Flow("leaky")
    flow.add(lambda: 1, name="a", executor="process")
    with pytest.raises(RuntimeError, match="no record"):
        flow.run(progress=False)
    assert len(closed) == 1
