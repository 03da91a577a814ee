"""``layerflow.dask``: Dask collections computed with layerflow as their scheduler."""

from __future__ import annotations

import logging
import operator
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import pytest

import layerflow as lf

dask = pytest.importorskip("dask")
np = pytest.importorskip("numpy")

import dask.array as da  # noqa: E402
import dask.bag as db  # noqa: E402
from dask._task_spec import Alias, DataNode, Dict, List, Task, TaskRef  # noqa: E402
from dask.highlevelgraph import HighLevelGraph  # noqa: E402
from dask.utils_test import GetFunctionTestMixin, add, inc  # noqa: E402


class TestDaskConformance(GetFunctionTestMixin):
    """Dask's own suite for foreign get functions, whole."""

    get = staticmethod(lf.dask.get)


def test_importing_layerflow_does_not_import_dask():
    code = "import sys, layerflow as lf; assert 'dask' not in sys.modules; lf.dask.get; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_without_dask_one_line_says_what_to_install():
    code = "import sys; sys.modules['dask'] = None\nimport layerflow as lf\nlf.dask"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert "[dask]'" in out.stderr.strip().splitlines()[-1]
    assert "pip install -e '" in out.stderr.strip().splitlines()[-1]  # from this clone


def test_missing_key_raises_key_error_and_nesting_is_kept():
    d = {"x": 1, "y": (inc, "x"), ("z", 0): (add, "x", "y"), ("z", 1): (inc, ("z", 0))}
    with pytest.raises(KeyError, match="not a key of this Dask graph"):
        lf.dask.get(d, "nope")
    with pytest.raises(KeyError):
        lf.dask.get(d, [["x", ["nope"]]])
    assert lf.dask.get(d, [["x", [("z", 1)]], "y", []]) == ((1, (4,)), 2, ())
    assert lf.dask.get(d, ("z", 0)) == 3
    assert lf.dask.get({1: 10, "1": (inc, 1)}, [1, "1"]) == (10, 11)  # both print as 1


def test_task_spec_objects_as_well_as_legacy_tuples():
    d = {
        "a": DataNode("a", 10),
        "b": Task("b", inc, TaskRef("a")),
        "c": Alias("c", "b"),
        "d": Task("d", sum, List(TaskRef("a"), TaskRef("c"), 1)),
        "e": Task("e", dict, Dict(x=TaskRef("a"), y=Task(None, inc, TaskRef("d")))),
        "f": (add, "a", (inc, "b")),  # legacy, in the same graph
        "g": ["a", (inc, "a")],  # a list of keys and tasks
    }
    assert lf.dask.get(d, ["b", "c", "d", "e", "f", "g"]) == (
        11,
        11,
        22,
        {"x": 10, "y": 23},
        22,
        [10, 11],
    )


def test_a_high_level_graph_and_a_task_error_raised_as_itself():
    layers = {"a": {"x": 1, "y": (inc, "x")}, "b": {"z": (add, (inc, "x"), "y")}}
    graph = HighLevelGraph(layers, {"a": set(), "b": {"a"}})
    assert lf.dask.get(graph, "z") == 4
    with pytest.raises(ZeroDivisionError) as info:
        lf.dask.get({"x": 0, "y": (lambda v: 1 / v, "x")}, "y")
    assert any("raised by Dask task 'y'" in note for note in info.value.__notes__)


def test_unknown_option_names_the_closest():
    with pytest.raises(lf.InvalidOptionError, match="Did you mean 'max_workers'"):
        lf.dask.scheduler(max_worker=2)
    with pytest.raises(lf.InvalidOptionError, match="tasks\\['f'\\] has unknown option"):
        lf.dask.get({"x": 1}, "x", tasks={"f": {"retry": 2}})


def test_a_chain_of_10000_tasks():
    d = {("x", 0): 0}
    for i in range(1, 10_001):
        d[("x", i)] = (inc, ("x", i - 1))
    assert lf.dask.get(d, ("x", 10_000)) == 10_000


def test_delayed_graph_with_scheduler_options():
    @dask.delayed
    def square(x):
        return x * x

    @dask.delayed
    def total(xs):
        return sum(xs)

    events = []
    result = total([square(i) for i in range(20)])
    got = result.compute(scheduler=lf.dask.scheduler(max_workers=4, on_event=events.append))
    assert got == sum(i * i for i in range(20))
    started = [e.task for e in events if e.kind == "task_started"]
    assert sum(name.startswith("square-") for name in started) == 20
    with dask.config.set(scheduler=lf.dask.scheduler(max_workers=2)):
        assert dask.compute(square(3), square(4)) == (9, 16)


def test_array_reductions_equal_numpy():
    rng = np.random.default_rng(0)
    data = rng.random((60, 40))
    x = da.from_array(data, chunks=(7, 9))
    sched = lf.dask.scheduler(max_workers=3)
    s, m, sd, mx = dask.compute(x.sum(), x.mean(axis=0), x.std(), x.max(axis=1), scheduler=sched)
    np.testing.assert_allclose(s, data.sum())
    np.testing.assert_allclose(m, data.mean(axis=0))
    np.testing.assert_allclose(sd, data.std())
    np.testing.assert_allclose(mx, data.max(axis=1))
    np.testing.assert_allclose((x @ x.T).compute(scheduler=sched), data @ data.T)
    np.testing.assert_allclose(x[::2, 3:].compute(scheduler=sched), data[::2, 3:])


def test_bag_pipeline():
    b = db.from_sequence(range(100), npartitions=7)
    sched = lf.dask.scheduler(max_workers=2)
    evens = b.filter(lambda v: v % 2 == 0).map(lambda v: v * 10)
    assert evens.sum().compute(scheduler=sched) == sum(v * 10 for v in range(0, 100, 2))
    words = db.from_sequence(["a b", "b c", "c c"], npartitions=2).str.split().flatten()
    assert dict(words.frequencies().compute(scheduler=sched)) == {"a": 1, "b": 2, "c": 3}


def test_groups_label_progress_and_the_report(tmp_path, capsys):
    x = da.ones((1000,), chunks=10)
    runs = []
    sched = lf.dask.scheduler(progress=True, report=tmp_path / "r.html", on_result=runs.append)
    assert x.sum().compute(scheduler=sched, optimize_graph=False) == 1000
    (run,) = runs
    assert len(run.tasks) > 200
    groups = set(run.labels.values())
    assert "ones_like" in groups or "ones" in groups
    assert len(groups) <= 5
    err = capsys.readouterr().err.splitlines()
    assert len(err) <= 2 * len(groups) + 1  # a few lines, not one per chunk
    assert err[-1].startswith(f"Completed {len(run.tasks)} tasks")
    page = (tmp_path / "r.html").read_text()
    assert "sum-aggregate" in page and "Groups" in page


def test_task_options_by_group_retry_a_flaky_task():
    calls = []

    def flaky(v):
        calls.append(v)
        if len(calls) < 3:
            raise ConnectionError("try again")
        return v + 1

    d = {"x": 1, ("flaky-0123456789abcdef0123456789abcdef", 0): (flaky, "x")}
    assert (
        lf.dask.get(
            d, ("flaky-0123456789abcdef0123456789abcdef", 0), tasks={"flaky": {"retries": 2}}
        )
        == 2
    )
    assert len(calls) == 3


# --- memory: chunks held at once, compared with dask.threaded on the same graph ---------------


class _Live:
    """Counts the tracked chunks alive at once, and the peak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.peak = 0

    def track(self, block):
        chunk = block.copy().view(_Chunk)
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        weakref.finalize(chunk, self._gone)
        return chunk

    def _gone(self) -> None:
        with self.lock:
            self.now -= 1


class _Chunk(np.ndarray):
    """A chunk that can be weakly referenced and counted."""


def _peak_chunks(get) -> int:
    live = _Live()
    x = da.ones((400 * 50,), chunks=50).map_blocks(live.track, dtype=float)
    (total,) = dask.compute(x.sum(), scheduler=get, optimize_graph=False)
    assert total == 400 * 50
    return live.peak


def _peak_chunks_of(expression, get) -> int:
    """Peak chunks of a tracked 20x20-chunk array alive while ``expression(x)`` computes."""
    live = _Live()
    x = da.random.default_rng(0).random((400, 400), chunks=20).map_blocks(live.track)
    dask.compute(expression(x), scheduler=get)
    return live.peak


@pytest.mark.parametrize(
    "expression",
    [
        pytest.param(lambda x: (x - x.mean(axis=0)).std(), id="readme"),
        pytest.param(lambda x: (x + x.T).mean(axis=0), id="transpose"),
    ],
)
def test_array_chunks_are_consumed_in_dask_local_order(expression):
    # before: the README's example held ~10x the chunks (every row made before a column's
    # mean could finish), the transpose ~7x; the ready queue now follows Dask's local rule
    from dask.threaded import get as threaded_get

    theirs = _peak_chunks_of(expression, lambda d, k, **kw: threaded_get(d, k, num_workers=2))
    ours = _peak_chunks_of(expression, lf.dask.scheduler(max_workers=2))
    print(f"peak chunks held: layerflow {ours}, dask.threaded {theirs} (of 400)")
    assert ours <= 1.5 * theirs + 4


def test_group_priorities_still_come_first_in_dask_order():
    dsk = {("a", i): (inc, i) for i in range(5)}
    dsk.update({("b", i): (inc, i) for i in range(5)})
    dsk["total"] = (sum, sorted(dsk))
    started = []

    def on_event(event):
        if event.kind == "task_started":
            started.append(event.task)

    got = lf.dask.get(dsk, "total", max_workers=1, tasks={"a": {"priority": 1}}, on_event=on_event)
    assert got == 2 * sum(range(1, 6))
    assert [n[2] for n in started[:5]] == ["a"] * 5  # "('a', 0)": without the priority, b first


def test_array_reduction_holds_about_as_many_chunks_as_dask_threaded():
    from dask.threaded import get as threaded_get

    theirs = _peak_chunks(lambda d, k, **kw: threaded_get(d, k, num_workers=2, **kw))
    ours = _peak_chunks(lf.dask.scheduler(max_workers=2))
    print(f"peak chunks held: layerflow {ours}, dask.threaded {theirs} (of 400)")
    assert ours <= 2 * theirs + 4


# --- crash and resume -----------------------------------------------------------------------

_SCRIPT = """
import os, sys, time, uuid
from pathlib import Path
import dask
import layerflow as lf

MARKS = Path(sys.argv[1])


@dask.delayed(pure=True)
def step(i):
    if os.environ.get("SLOW"):
        time.sleep(0.25)
    (MARKS / f"{i}-{uuid.uuid4().hex}").touch()  # one file per execution
    return i * i


@dask.delayed(pure=True)
def total(parts):
    return sum(parts)


runs = []
sched = lf.dask.scheduler(
    max_workers=2, store=sys.argv[2], resume=True, name="squares", on_result=runs.append
)
parts = [step(i, dask_key_name=f"step-{i}") for i in range(12)]
print(dask.compute(total(parts, dask_key_name="total-squares"), scheduler=sched)[0])
print(" ".join(f"{n}={t.status}" for n, t in runs[0].tasks.items()))
"""


def test_sigkilled_delayed_computation_resumes_without_rerunning_finished_tasks(tmp_path):
    script = tmp_path / "squares.py"
    script.write_text(textwrap.dedent(_SCRIPT))
    marks = tmp_path / "marks"
    marks.mkdir()
    store = tmp_path / "store"
    argv = [sys.executable, str(script), str(marks), str(store)]
    slow = {**os.environ, "SLOW": "1"}
    proc = subprocess.Popen(argv, env=slow, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(list(marks.iterdir())) < 4 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.name.split("-")[0] for p in marks.iterdir()}
    assert 4 <= len(before) < 12, "the kill came too late to test resume"

    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
    value, statuses = out.stdout.strip().splitlines()
    assert int(value) == sum(i * i for i in range(12))
    status = dict(item.rsplit("=", 1) for item in statuses.split())
    executions = {str(i): 0 for i in range(12)}
    for p in marks.iterdir():
        executions[p.name.split("-")[0]] += 1
    reused = [n.removeprefix("step-") for n, s in status.items() if s == "reused"]
    assert len(reused) >= len(before) - 2  # the two running at the kill may run again
    for i in reused:  # finished before the kill: ran once, and not again
        assert executions[i] == 1, (i, executions)
    for i, count in executions.items():  # every step ran, and at most once after the kill
        assert 1 <= count <= 2, (i, executions)
    assert status["total-squares"] == "succeeded"


def test_keywords_meant_for_other_schedulers_are_ignored_as_dask_does(caplog):
    # dask's compute(**kwargs) hands every keyword to the scheduler
    with caplog.at_level(logging.DEBUG, logger="layerflow.dask"):
        assert lf.dask.get({"x": 1, "y": (inc, "x")}, "y", bogus_keyword=10) == 2
    assert any("ignores the keyword 'bogus_keyword'" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="layerflow.dask"):
        assert lf.dask.get({"x": 1}, "x", max_worker=2) == 1  # a typo of ours: a warning
    assert any("Did you mean 'max_workers'" in r.message for r in caplog.records)
    with pytest.raises(lf.InvalidOptionError, match="max_workers"):
        lf.dask.get({"x": 1}, "x", max_workers=0)  # our own options stay checked


@pytest.mark.parametrize("kind", ["ThreadPoolExecutor", "ThreadPool"])
def test_pool_sets_how_many_threads_run_the_tasks(kind):
    import concurrent.futures
    import multiprocessing.pool

    def ident():
        time.sleep(0.01)
        return threading.get_ident()

    dsk = {("x", i): (ident,) for i in range(30)}
    dsk["x"] = (len, (set, [("x", i) for i in range(30)]))
    make = (
        concurrent.futures.ThreadPoolExecutor
        if kind == "ThreadPoolExecutor"
        else multiprocessing.pool.ThreadPool
    )
    with make(3) as pool:
        assert lf.dask.get(dsk, "x", pool=pool) == 3
    with pytest.raises(lf.InvalidOptionError, match="pool= must be"):
        lf.dask.get(dsk, "x", pool=object())


def test_a_missing_dependency_is_the_value_error_dask_raises():
    with pytest.raises(ValueError, match="Missing dependency") as info:
        lf.dask.get({"y": Task("y", lambda x: x, TaskRef("x"))}, "y")
    assert isinstance(info.value, lf.LayerflowError)


def test_a_cache_dict_gives_values_of_keys_as_in_dask():
    # Dask's cache=: values known before the run; layerflow's own cache= is a bool
    assert lf.dask.get({"y": Task("y", lambda x: x, TaskRef("x"))}, "y", cache={"x": 1}) == 1
    assert lf.dask.get({"a": (sum, ["x", "x"]), "x": (inc, 1)}, "a", cache={"x": 5}) == 10
    with pytest.raises(lf.InvalidOptionError, match="cache"):
        lf.dask.get({"a": (inc, 1)}, "a", cache="yes")


def test_callbacks_see_tasks_not_literals_as_in_dask():
    from dask.callbacks import Callback

    keys, states = [], []
    dsk = {"x": 1, "y": (inc, "x"), "z": (operator.add, 10, "y")}
    with Callback(
        pretask=lambda key, *a: keys.append(key),
        start_state=lambda d, s: states.append((dict(s["cache"]), list(s["ready"]))),
    ):
        assert lf.dask.get(dsk, "z") == 12
    assert keys == ["y", "z"]  # a literal is in Dask's cache from the start: no pretask
    assert states == [({"x": 1}, ["y"])]


def _set_marker():
    os.environ["LF_DASK_INIT"] = str(os.getpid())


def _marker(_):
    return os.environ.get("LF_DASK_INIT") == str(os.getpid())


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_initializer_runs_in_each_process_before_its_tasks(backend, monkeypatch):
    monkeypatch.delenv("LF_DASK_INIT", raising=False)
    dsk = {("m", i): (_marker, i) for i in range(6)}
    keys = list(dsk)
    got = lf.dask.get(dsk, keys, initializer=_set_marker, backend=backend, max_workers=2)
    assert got == (True,) * 6
    if backend == "process":  # dask.multiprocessing's config key, as Dask reads it
        monkeypatch.delenv("LF_DASK_INIT", raising=False)
        with dask.config.set({"multiprocessing.initializer": _set_marker}):
            assert lf.dask.get(dsk, keys, backend="process", max_workers=2) == (True,) * 6
    with pytest.raises(lf.InvalidOptionError, match="initializer= must be a function"):
        lf.dask.get(dsk, keys, initializer="setup")


def test_dasks_diagnostics_work_as_with_dask_threaded(capsys):
    from dask.diagnostics import Profiler, ProgressBar, ResourceProfiler

    x = da.ones((400, 400), chunks=100)
    with ProgressBar():
        assert (x + x.T).sum().compute(scheduler=lf.dask.get) == 320_000
    assert "100% Completed" in capsys.readouterr().out
    with Profiler() as prof, ResourceProfiler(dt=0.01) as rprof:
        (x + 1).sum().compute(scheduler=lf.dask.get)
    keys = {r.key for r in prof.results}
    assert len(keys) == len(prof.results) > 16  # one record per task, with its key
    assert all(r.end_time >= r.start_time for r in prof.results)
    assert isinstance(rprof.results, list)


def test_an_exception_in_a_dask_callback_reaches_the_caller():
    from dask.callbacks import Callback

    def ok(*args):
        pass

    def broken(*args):
        raise ValueError("my_exception")

    with (
        Callback(start=broken, finish=ok),
        Callback(start=ok, finish=ok),
        pytest.raises(ValueError, match="my_exception"),
    ):
        lf.dask.get({"x": 1}, "x")
    seen = []
    with Callback(pretask=lambda key, dsk, state: seen.append(key)):
        assert lf.dask.get({"x": 1, "y": (inc, "x")}, "y") == 2
    assert seen == ["y"]  # as dask.threaded: a literal is no task
    with (
        Callback(posttask=lambda *a: (_ for _ in ()).throw(RuntimeError("late"))),
        pytest.raises(RuntimeError, match="late"),
    ):
        lf.dask.get({"x": 1, "y": (inc, "x")}, "y")
