"""The store's on-disk format: results packed per batch, a run's graph recorded once, and
stores written by the version before (a row and a named result per task) still read and
resumed from."""

from __future__ import annotations

import pickle
import sqlite3
from pathlib import Path

import layerflow as lf
from layerflow.recorder import task_keys
from layerflow.store import SCHEMA_VERSION, Store


def chain_flow(calls: list[str], fail_c: bool) -> lf.Flow:
    flow = lf.Flow("old")

    @flow.task
    def a() -> int:
        calls.append("a")
        return 1

    @flow.task
    def b(a: int) -> int:
        calls.append("b")
        return a + 1

    @flow.task
    def c(b: int) -> int:
        calls.append("c")
        if fail_c:
            raise RuntimeError("not yet")
        return b + 1

    return flow


def version_5_store(folder: Path, flow: lf.Flow) -> None:
    """A store as version 5 left it: a failed run of ``flow`` (a and b succeeded, c failed)
    with a row per task, each result named in ``blobs``, and no packed results or graphs."""
    Store(folder).close()
    keys = dict(zip(("a", "b", "c"), task_keys(flow.plan().graph, {}), strict=True))
    db = sqlite3.connect(folder / "state.db")
    db.execute("DROP TABLE results")
    db.execute("DROP TABLE graphs")
    db.execute("PRAGMA user_version = 5")
    db.execute(
        "INSERT INTO runs (run_id, flow, started_at, finished_at, status, tasks, critical_path) "
        "VALUES ('r5', 'old', 100.0, 103.0, 'failed', 3, '[\"a\", \"b\", \"c\"]')"
    )
    rows = [
        ("a", "succeeded", "r5-a.pkl", None, 0, "[]", 100.0),
        ("b", "succeeded", "r5-b.pkl", None, 1, '["a"]', 101.0),
        ("c", "failed", None, "RuntimeError: not yet", 2, '["b"]', 102.0),
    ]
    for position, (name, status, result, error, layer, needs, started) in enumerate(rows):
        end, key = started + 1.0, keys[name]
        db.execute(
            "INSERT INTO task_runs (run_id, name, status, attempts, started_at, finished_at, "
            "duration, error, key, result, layer, needs, position) "
            "VALUES ('r5', ?, ?, 1, ?, ?, 1.0, ?, ?, ?, ?, ?, ?)",
            (name, status, started, end, error, key, result, layer, needs, position),
        )
    db.execute("INSERT INTO blobs VALUES ('r5-a.pkl', ?)", (pickle.dumps(1),))
    db.execute("INSERT INTO blobs VALUES ('r5-b.pkl', ?)", (pickle.dumps(2),))
    db.commit()
    db.close()


def test_a_store_of_the_previous_version_is_read_and_resumed(tmp_path):
    calls: list[str] = []
    version_5_store(tmp_path, chain_flow(calls, fail_c=False))
    store = Store(tmp_path)  # brought to this version: the new tables added
    assert store._read("PRAGMA user_version")[0][0] == SCHEMA_VERSION
    assert [r["run_id"] for r in store.runs()] == ["r5"]
    assert {t["name"]: t["status"] for t in store.tasks_of("r5")} == {
        "a": "succeeded",
        "b": "succeeded",
        "c": "failed",
    }
    old = store.load_run("r5")
    assert old.layers == [["a"], ["b"], ["c"]]
    assert sorted(old.edges) == [("a", "b"), ("b", "c")]
    assert {n: store.load_value(f) for n, (_, f) in store.finished_results("r5").items()} == {
        "a": 1,
        "b": 2,
    }
    resumed = chain_flow(calls, fail_c=False).run(store=store, resume=True)
    assert resumed["c"] == 3 and calls == ["c"]  # a and b reused from the old run
    assert {n: t.status for n, t in resumed.tasks.items()} == {
        "a": "reused",
        "b": "reused",
        "c": "succeeded",
    }
    again = store.load_run(resumed.run_id)  # a run of this version beside the old one
    assert again.layers == [["a"], ["b"], ["c"]]
    assert sorted(again.edges) == [("a", "b"), ("b", "c")]
    store.close()


def test_tasks_that_succeeded_at_once_have_no_row_but_everything_is_read_back(tmp_path):
    flow = lf.Flow("packed")
    flow.add(lambda: 1, name="a")
    flow.add(lambda a: a + 1, name="b")
    flow.add(lambda: "x" * 100_000, name="big")  # a result file of its own
    state = {"tries": 0}

    def flaky(b: int) -> int:
        state["tries"] += 1
        if state["tries"] == 1:
            raise RuntimeError("once")
        return b + 1

    flow.add(flaky, name="c", retries=1)
    run = flow.run(store=tmp_path)
    store = Store(tmp_path)
    # rows only where a task has more to say than its result: c needed two attempts
    rows = store._read("SELECT name FROM task_runs WHERE run_id = ?", (run.run_id,))
    assert rows == [("c",)]
    found = store.finished_results(run.run_id)
    assert {n: store.load_value(f) for n, (_, f) in found.items()} == {
        "a": 1,
        "b": 2,
        "big": "x" * 100_000,
        "c": 3,
    }
    loaded = store.load_run(run.run_id)
    assert list(loaded.tasks) == ["a", "b", "big", "c"]
    assert {n: (t.status, t.attempts) for n, t in loaded.tasks.items()} == {
        "a": ("succeeded", 1),
        "b": ("succeeded", 1),
        "big": ("succeeded", 1),
        "c": ("succeeded", 2),
    }
    assert loaded.layers == run.layers and sorted(loaded.edges) == sorted(run.edges)
    assert sorted((a.task, a.attempt, a.outcome) for a in loaded.attempts) == sorted(
        (a.task, a.attempt, a.outcome) for a in run.attempts
    )
    assert set(store.durations("packed")) == {"a", "b", "big", "c"}
    assert store.usage()["result_files"] == 4
    pruned = store.prune(keep=0)
    assert pruned.runs == [run.run_id] and pruned.files == 4
    assert store.usage()["result_files"] == 0
    for table in ("task_runs", "results", "graphs"):
        assert store._read(f"SELECT COUNT(*) FROM {table}") == [(0,)]
    store.close()


def test_parameters_named_like_the_scope_wrappers_own_reach_the_task(tmp_path):
    # with a store, each call is wrapped to say which task it is: its own arguments must
    # not take the task's (items, entry, fn, args, kwargs are common parameter names)
    flow = lf.Flow("names")
    flow.add(lambda: [1, 2], name="items")
    flow.add(lambda items, entry=0, fn=None, args=(), kwargs=None: items * 10, name="step")
    flow.add(lambda items: items + 1, name="each", map="items")
    run = flow.run(store=tmp_path)
    assert run["step"] == [1, 2] * 10 and run["each"] == [2, 3]
