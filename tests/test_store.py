"""The run store: durable results, resume after a crash, the cache, safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import layerflow as lf
from layerflow.store import INLINE_MAX, Store, StoreError

# A flow in three layers whose tasks append their name to a side-effect file; the middle
# layer has one slow task, during which the test kills the process.
CRASH_FLOW = textwrap.dedent(
    """
    import json, os, sys, time
    import layerflow as lf

    here = sys.argv[1]
    flow = lf.Flow("crashy")

    def step(name, seconds=0.0):
        def fn(**upstream):
            if name == "slow":
                open(os.path.join(here, "slow-started"), "w").close()
            time.sleep(seconds)
            with open(os.path.join(here, "side-effects"), "a") as f:
                f.write(name + "\\n")
            return name + "(" + ",".join(sorted(str(v) for v in upstream.values())) + ")"
        return fn

    flow.add(step("a"), name="a")
    flow.add(step("b"), name="b")
    flow.add(step("c"), name="c", inputs={"a": "a"})
    flow.add(step("slow", float(sys.argv[3])), name="slow", inputs={"b": "b"})
    flow.add(step("d"), name="d", inputs={"c": "c", "slow": "slow"})
    try:
        run = flow.run(store=os.path.join(here, "store"), resume=sys.argv[2] == "resume")
    except lf.RunInterrupted as e:
        sys.exit(130)
    print(json.dumps({"values": run.values,
                      "statuses": {n: t.status for n, t in run.tasks.items()}}))
    """
)


def start(tmp: Path, mode: str, seconds: float) -> subprocess.Popen[str]:
    script = tmp / "crashy.py"
    script.write_text(CRASH_FLOW)
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp), mode, str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def reference_values(tmp: Path) -> dict:
    ref = tmp / "reference"
    ref.mkdir()
    out, err = start(ref, "fresh", 0).communicate(timeout=60)
    return json.loads(out)["values"]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_killed_run_resumes_without_running_finished_tasks_again(tmp_path, how):
    proc = start(tmp_path, "fresh", 30)
    wait_for(tmp_path / "slow-started")
    time.sleep(0.3)  # a, b and c have finished and been stored by now
    proc.send_signal(how)
    proc.communicate(timeout=30)
    assert proc.returncode == (-signal.SIGKILL if how == signal.SIGKILL else 130)
    before = (tmp_path / "side-effects").read_text().split()
    assert sorted(before) == ["a", "b", "c"]

    out, err = start(tmp_path, "resume", 0).communicate(timeout=60)
    assert out, err
    resumed = json.loads(out)
    after = (tmp_path / "side-effects").read_text().split()
    assert sorted(after) == ["a", "b", "c", "d", "slow"]  # nothing ran twice
    assert resumed["statuses"] == {
        "a": "reused",
        "b": "reused",
        "c": "reused",
        "slow": "succeeded",
        "d": "succeeded",
    }
    assert resumed["values"] == reference_values(tmp_path)


def test_kill_resume_kill_resume_runs_nothing_twice(tmp_path):
    # regression: a crash during a resumed run lost the results it had reused, so the
    # second resume ran the first run's tasks a third time
    proc = start(tmp_path, "fresh", 30)
    wait_for(tmp_path / "slow-started")
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    (tmp_path / "slow-started").unlink()
    proc = start(tmp_path, "resume", 30)  # reuses a, b, c; killed in `slow` again
    wait_for(tmp_path / "slow-started")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    out, err = start(tmp_path, "resume", 0).communicate(timeout=60)
    assert out, err
    statuses = json.loads(out)["statuses"]
    assert [statuses[n] for n in "abc"] == ["reused"] * 3
    after = (tmp_path / "side-effects").read_text().split()
    assert sorted(after) == ["a", "b", "c", "d", "slow"]  # nothing ran twice


def test_resume_reruns_what_changed_and_everything_downstream(tmp_path):
    ran: list[str] = []

    def build(scale):
        flow = lf.Flow("changing")

        @flow.task
        def source():
            ran.append("source")
            return 10

        @flow.task(params={"scale": scale})
        def scaled(source, scale):
            ran.append("scaled")
            return source * scale

        @flow.task
        def other(source):
            ran.append("other")
            return source + 1

        @flow.task
        def final(scaled, other):
            ran.append("final")
            raise RuntimeError("not yet")

        return flow

    store = tmp_path / "store"
    build(2).run(store=store, fail_fast=False)
    assert sorted(ran) == ["final", "other", "scaled", "source"]
    ran.clear()
    run = build(3).run(store=store, resume=True, fail_fast=False)
    statuses = {n: t.status for n, t in run.tasks.items()}
    assert statuses["source"] == "reused" and statuses["other"] == "reused"
    assert statuses["scaled"] == "succeeded" and run["scaled"] == 30  # params changed
    assert sorted(ran) == ["final", "scaled"]


def test_resume_a_given_run_id_and_an_unknown_one(tmp_path):
    flow = lf.Flow("ids")
    flow.add(lambda: 1, name="one")
    first = flow.run(store=tmp_path / "s")
    again = flow.run(store=tmp_path / "s", resume=first.run_id)
    assert again.tasks["one"].status == "reused"
    with pytest.raises(StoreError, match="no run 'nope'"):
        flow.run(store=tmp_path / "s", resume="nope")


def test_cache_hits_and_misses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls: list[tuple] = []

    def build(offset):
        flow = lf.Flow("cached")

        @flow.task(cache=True, params={"offset": offset})
        def work(x, offset):
            calls.append((x, offset))
            return x + offset

        return flow

    assert build(1).run({"x": 1})["work"] == 2
    run = build(1).run({"x": 1})
    assert run.tasks["work"].status == "cached" and run["work"] == 2
    assert len(calls) == 1
    build(1).run({"x": 5})  # an input value changed
    build(2).run({"x": 5})  # params changed
    assert calls == [(1, 1), (5, 1), (5, 2)]

    def build_changed_code():
        flow = lf.Flow("cached")

        @flow.task(cache=True, params={"offset": 1})
        def work(x, offset):
            calls.append(("new code", x))
            return x + offset + 0

        return flow

    build_changed_code().run({"x": 1})  # the code changed
    assert calls[-1] == ("new code", 1)
    assert (tmp_path / ".layerflow").is_dir()  # cache=True uses the default store


def test_cache_on_the_whole_run_and_cache_clear(tmp_path):
    calls = []
    flow = lf.Flow("all")
    flow.add(lambda: calls.append(1) or 1, name="a")
    store = Store(tmp_path / "s")
    flow.run(store=store, cache=True)
    flow.run(store=store, cache=True)
    assert len(calls) == 1
    assert store.cache_clear() == 1
    flow.run(store=store, cache=True)
    assert len(calls) == 2


def test_a_store_others_can_write_to_is_refused(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, 0o777)
    with pytest.raises(StoreError) as info:
        Store(folder)
    assert str(folder) in str(info.value) and "chmod 700" in str(info.value)
    fresh = Store(tmp_path / "mine")
    assert (os.stat(fresh.folder).st_mode & 0o777) == 0o700


def test_concurrent_runs_on_one_store(tmp_path):
    errors = []

    def one(k):
        try:
            flow = lf.Flow(f"f{k}")
            for j in range(20):
                flow.add(lambda j=j: j, name=f"t{j}")
            flow.run(store=tmp_path / "s", max_workers=4)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    runs = Store(tmp_path / "s").runs()
    assert len(runs) == 4 and all(r["status"] == "succeeded" for r in runs)


def test_an_unpicklable_result_is_reported_and_run_again_on_resume(tmp_path, caplog):
    calls = []
    flow = lf.Flow("unpicklable")

    @flow.task
    def lock():
        calls.append(1)
        return threading.Lock()

    @flow.task
    def fail(lock):
        raise RuntimeError("stop here")

    flow.run(store=tmp_path / "s", fail_fast=False)
    assert "cannot be pickled" in caplog.text and "not stored" in caplog.text
    flow.run(store=tmp_path / "s", resume=True, fail_fast=False)
    assert len(calls) == 2


def test_history_feeds_the_plan(tmp_path):
    flow = lf.Flow("timed")
    flow.add(lambda: time.sleep(0.2), name="slow")
    flow.add(lambda: None, name="fast")
    store = Store(tmp_path / "s")
    flow.run(store=store)
    history = store.durations("timed")
    assert history["slow"] >= 0.2 and history["fast"] < 0.1


def test_history_is_what_the_latest_runs_took(tmp_path):
    # what a task took long ago does not rank it today, and reading history does not grow
    # with the store: the latest HISTORY_RUNS runs of the flow only
    from layerflow.store import HISTORY_RUNS

    runs = {"n": 0}
    flow = lf.Flow("changed")

    @flow.task
    def step():
        runs["n"] += 1
        time.sleep(0.15 if runs["n"] <= 2 else 0.0)

    store = Store(tmp_path / "s")
    for _ in range(2 + HISTORY_RUNS):
        flow.run(store=store)
    assert store.durations("changed")["step"] < 0.05
    store.close()


def test_cli_records_runs_and_resumes(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        'steps:\n  - {name: a, run: "echo a"}\n  - {name: b, run: "sh -c \'exit 3\'"}\n'
    )

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "layerflow", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )

    assert cli("run", str(path)).returncode == 1
    listing = cli("runs")
    assert listing.returncode == 0 and "failed" in listing.stdout
    run_id = listing.stdout.splitlines()[1].split()[0]
    shown = cli("show", run_id)
    assert "a" in shown.stdout and "exited with code 3" in shown.stdout
    out = cli("run", str(path), "--resume", "--json", "-q")
    data = json.loads(out.stdout)
    assert data["tasks"]["a"]["status"] == "reused"
    assert cli("show", "nope").returncode == 2
    assert cli("run", str(path), "--no-store", "--resume").returncode == 2
    assert "cleared" in cli("cache", "clear").stdout


def test_plan_predicts_from_history(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default store, .layerflow, lives here
    flow = lf.Flow("predicted")
    flow.add(lambda: time.sleep(0.3), name="a")
    flow.add(lambda: time.sleep(0.2), name="b")
    flow.add(lambda: time.sleep(0.4), name="c", after=["a"])
    assert flow.plan().history == {}  # no store yet: nothing to predict from
    run = flow.run(store=True, max_workers=2)
    plan = flow.plan()
    assert set(plan.history) == {"a", "b", "c"}
    predicted = plan.simulate(max_workers=2)
    assert abs(predicted - run.duration) / run.duration < 0.25
    assert "3 tasks timed in past runs" in plan.explain()


def test_a_result_the_store_cannot_take_fails_its_task(tmp_path):
    # regression: a result that could not be persisted still counted as succeeded
    import shutil

    folder = tmp_path / "store"
    flow = lf.Flow("full")

    @flow.task
    def first():
        return 1

    @flow.task
    def breaker(first):
        results = folder / "results"
        shutil.rmtree(results)
        results.write_text("not a folder any more")  # every later write there fails
        return b"x" * (INLINE_MAX + 1)  # too large for the database: a file of its own

    @flow.task
    def independent():
        return 3

    run = flow.run(store=folder, fail_fast=False, max_workers=1)
    assert run.tasks["first"].status == "succeeded"
    broken = run.tasks["breaker"]
    assert broken.status == "failed"
    assert isinstance(broken.error, lf.StoreError)
    assert "'breaker' finished, but its result could not be stored" in str(broken.error)
    assert broken.attempts == 1  # the store is at fault, not the task: no retry
    assert run.status == "failed"


def test_the_cache_matches_equal_dicts_and_sets_built_in_another_order(tmp_path):
    # regression: keys hashed pickle bytes, which keep insertion order
    calls = []

    def build(config):
        flow = lf.Flow("ordered")

        @flow.task(cache=True)
        def use(config):
            calls.append(1)
            return sorted(config["tags"])

        return flow

    first = {"a": 1, "b": 2, "tags": {"x", "y", "z"}}
    again = {"tags": {"z", "y", "x"}, "b": 2, "a": 1}
    assert first == again
    store = tmp_path / "s"
    assert build(first).run({"config": first}, store=store)["use"] == ["x", "y", "z"]
    run = build(again).run({"config": again}, store=store)
    assert run.tasks["use"].status == "cached" and len(calls) == 1
    other = {"a": 1, "b": 3, "tags": {"x"}}
    assert build(other).run({"config": other}, store=store).tasks["use"].status == "succeeded"


def test_a_run_closes_the_store_it_opened(tmp_path):
    # regression: stores were never closed (one open database per run, for good)
    flow = lf.Flow("closing")
    flow.add(lambda: 1, name="a")

    def open_dbs() -> int:
        fds = Path("/proc/self/fd")
        count = 0
        for fd in fds.iterdir():
            try:
                count += os.readlink(fd).startswith(str(tmp_path))
            except OSError:
                continue
        return count

    for _ in range(3):
        assert flow.run(store=tmp_path / "s").ok
    assert open_dbs() == 0
    mine = Store(tmp_path / "s")  # a Store the caller made stays open for the caller
    try:
        assert flow.run(store=mine).ok
        assert mine.runs()  # still usable
    finally:
        mine.close()


def test_a_store_whose_results_folder_is_a_file_is_a_clear_error(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir(mode=0o700)
    (folder / "results").write_text("not a folder")
    with pytest.raises(StoreError, match="cannot keep results in .*It must be a folder"):
        Store(folder)


OPEN_STORE = """
import sys, time
from layerflow.store import Store
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all together
try:
    Store(sys.argv[1]).close()
    print("ok")
except Exception as e:
    print("FAIL", e)
"""


def test_several_processes_upgrade_an_earlier_versions_store_at_once(tmp_path):
    # regression: the schema migration read, then wrote, in a deferred transaction: when
    # another process migrated meanwhile it failed at once, reported as a 30 s lock
    import sqlite3

    Store(tmp_path).close()
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("DROP TABLE blobs")  # as an earlier version left it
    db.execute("DROP INDEX runs_by_flow")
    db.execute("PRAGMA user_version = 0")
    db.commit()
    db.close()
    start = time.time() + 1.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_STORE, str(tmp_path), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    assert [p.communicate(timeout=60)[0].strip() for p in procs] == ["ok"] * 6
    store = Store(tmp_path)
    assert store._read("PRAGMA user_version")[0][0] >= 3
    assert store._read("SELECT COUNT(*) FROM blobs") == [(0,)]
    store.close()


SOURCELESS = """
import os
import sys

import layerflow as lf

calls = []


def make():
    flow = lf.Flow("sourceless")

    def a():
        calls.append("a")
        return 1

    def b(a):
        if os.environ.get("BREAK") == "1":
            raise ValueError("broken")
        return a + 1

    flow.add(a, name="a")
    flow.add(b, name="b")
    return flow


try:
    make().run(store=sys.argv[1], progress=False)
except lf.TaskFailed as e:
    print(e.result.tasks["b"].status)  # its traceback was formatted: file names interned
os.environ["BREAK"] = "0"
again = make().run(store=sys.argv[1], resume=True, progress=False)
print(again.tasks["a"].status, again["b"], calls)
"""


def test_a_function_without_source_keeps_its_fingerprint_after_a_traceback(tmp_path):
    # python -c: no source to read, so the fingerprint comes from the code object; it used
    # to be marshal.dumps(code), whose bytes changed once a traceback interned the file
    # name, and resume ran the task that had succeeded again
    done = subprocess.run(
        [sys.executable, "-c", SOURCELESS, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "BREAK": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["failed", "reused 2 ['a']"]


def test_resume_with_a_reused_map_task_and_its_source(tmp_path):
    fail = {"on": True}
    ran = []
    flow = lf.Flow("m")

    @flow.task
    def items():
        return [1, 2, 3]

    @flow.task(map="items")
    def sq(items):
        ran.append(items)
        return items * items

    @flow.task
    def total(sq):
        if fail["on"]:
            raise RuntimeError("not yet")
        return sum(sq)

    with pytest.raises(lf.TaskFailed):
        flow.run(store=tmp_path)
    fail["on"] = False
    run = flow.run(store=tmp_path, resume=True)
    assert run.ok and run["total"] == 14
    assert run.tasks["sq"].status == "reused" and sorted(ran) == [1, 2, 3]


def test_the_cache_never_returns_another_calls_value(tmp_path):
    state = {"v": 1}
    flow = lf.Flow("c")

    @flow.task
    def src():
        return state["v"]

    @flow.task(cache=True)
    def double(src):
        return src * 2

    results = []
    for v in (1, 5, 1):
        state["v"] = v
        results.append(flow.run(store=tmp_path)["double"])
    assert results == [2, 10, 2]


def test_unpicklable_arguments_are_never_served_from_the_cache(tmp_path):
    class Conn:
        def __init__(self, v):
            self.v = v
            self.lock = threading.Lock()

        def __repr__(self):
            return "Conn(db)"

    state = {"v": 1}
    flow = lf.Flow("u")

    @flow.task
    def conn():
        return Conn(state["v"])

    @flow.task(cache=True)
    def use(conn):
        return conn.v * 10

    values = []
    for v in (1, 2):
        state["v"] = v
        run = flow.run(store=tmp_path)
        values.append((run["use"], run.tasks["use"].status))
    assert values == [(10, "succeeded"), (20, "succeeded")]


def test_resume_true_after_a_successful_resume_resumes_nothing(tmp_path):
    fail = {"n": 2}
    ran = []
    flow = lf.Flow("r")

    @flow.task
    def a():
        ran.append("a")
        return 1

    @flow.task
    def c(a):
        ran.append("c")
        if fail["n"]:
            fail["n"] -= 1
            raise RuntimeError("flaky")
        return 2

    for _ in range(2):
        with pytest.raises(lf.TaskFailed):
            flow.run(store=tmp_path, resume=True)
    assert flow.run(store=tmp_path, resume=True).ok
    ran.clear()
    run = flow.run(store=tmp_path, resume=True)
    assert run.tasks["c"].status == "succeeded" and sorted(ran) == ["a", "c"]  # fresh run


def test_unnamed_flows_resume_their_own_runs(tmp_path):
    one, two = lf.Flow(), lf.Flow()
    one.add(lambda: (_ for _ in ()).throw(ValueError("x")), name="fails")
    two.add(lambda: 2, name="other")
    with pytest.raises(lf.TaskFailed):
        one.run(store=tmp_path)
    run = two.run(store=tmp_path, resume=True)  # nothing of 'one' to resume here
    assert run.tasks["other"].status == "succeeded"


def test_partials_and_callable_objects_resume(tmp_path):
    import functools

    class Scale:
        def __call__(self, x):
            return x * 3

    calls = []

    def add(x, y):
        calls.append(y)
        return x + y

    flow = lf.Flow("callables")
    flow.add(functools.partial(add, y=1), name="plus", params={"x": 1})
    flow.add(Scale(), name="scaled", inputs={"x": "plus"})
    flow.add(lambda scaled: (_ for _ in ()).throw(ValueError("stop")), name="fails")
    with pytest.raises(lf.TaskFailed):
        flow.run(store=tmp_path)

    again = lf.Flow("callables")  # a new process would build new objects like these
    again.add(functools.partial(add, y=1), name="plus", params={"x": 1})
    again.add(Scale(), name="scaled", inputs={"x": "plus"})
    again.add(lambda scaled: scaled, name="fails")
    run = again.run(store=tmp_path, resume=True)
    assert run.tasks["plus"].status == "reused" and run.tasks["scaled"].status == "reused"
    assert run["fails"] == 6 and calls == [1]
