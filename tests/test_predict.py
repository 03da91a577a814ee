"""Predictions: simulate under pools and rate limits, the what-if table and its binding
limit, what the history says about tasks never seen, and a run's prediction against what
happened."""

from __future__ import annotations

import json
import re
import textwrap
import time
from pathlib import Path

import pytest
from test_cli import layerflow

import layerflow as lf


def chunks_flow(n: int = 4, **options) -> lf.Flow:
    """``n`` independent chunks, then a total that needs them all."""
    flow = lf.Flow("chunks")
    for k in range(n):
        flow.add(lambda: None, name=f"chunk_{k}", **options)
    flow.add(lambda: None, name="total", after=[f"chunk_{k}" for k in range(n)])
    return flow


def test_simulate_waits_for_pool_units():
    plan = chunks_flow(resources={"db": 1}).plan()
    # two chunks at a time hold the pool: 2 rounds of chunks, then the total
    assert plan.simulate(max_workers=4, resources={"db": 2}) == pytest.approx(3.0)
    assert plan.simulate(max_workers=4, resources={"db": 4}) == pytest.approx(2.0)
    # not declared: not modelled (the run itself would refuse to start)
    assert plan.simulate(max_workers=4) == pytest.approx(2.0)
    durations = {"chunk_0": 3.0, "chunk_1": 1.0, "chunk_2": 1.0, "chunk_3": 1.0, "total": 1.0}
    # chunk_0 (the longest path) first, the three others one after another beside it
    assert plan.simulate(durations, max_workers=4, resources={"db": 2}) == pytest.approx(4.0)


def test_a_task_held_by_its_pool_lets_smaller_ones_pass():
    flow = lf.Flow("gpu")
    flow.add(lambda: None, name="big", resources={"gpu": 2})
    flow.add(lambda: None, name="small", resources={"gpu": 1})
    flow.add(lambda: None, name="free")
    plan = flow.plan()
    durations = {"big": 1.0, "small": 1.0, "free": 1.0}
    assert plan.simulate(durations, resources={"gpu": 2}) == pytest.approx(2.0)
    assert plan.simulate(durations, resources={"gpu": 3}) == pytest.approx(1.0)
    with pytest.raises(lf.LayerflowError, match="could never start"):
        plan.simulate(durations, resources={"gpu": 1})
    with pytest.raises(lf.LayerflowError, match="must be a number > 0"):
        plan.simulate(durations, resources={"gpu": 0})


def test_simulate_slides_rate_windows():
    plan = chunks_flow(5, rate_limit="api").plan()
    durations = {f"chunk_{k}": 0.1 for k in range(5)} | {"total": 0.1}
    # two starts per second: chunks start at 0, 0, 1, 1, 2; the total after the last one
    assert plan.simulate(durations, rate_limits={"api": "2/s"}) == pytest.approx(2.2)
    assert plan.simulate(durations, rate_limits={"api": lf.RateLimit(1, 0.5)}) == pytest.approx(2.2)
    assert plan.simulate(durations, rate_limits={"api": "100/s"}) == pytest.approx(0.2)
    # one at a time still waits for the window
    seq = plan.simulate(durations, mode="sequential", rate_limits={"api": "2/s"})
    assert seq == pytest.approx(2.2)
    assert plan.simulate(durations, mode="sequential") == pytest.approx(0.6)


def test_simulate_counts_declared_costs():
    flow = lf.Flow("tokens")
    for k in range(3):
        flow.add(lambda: None, name=f"ask_{k}", rate_limit={"tokens": 2})
    plan = flow.plan()
    # 3 tokens a second and 2 per task: one task per window
    assert plan.simulate(0.1, rate_limits={"tokens": "3/s"}) == pytest.approx(2.1)
    assert plan.simulate(0.1, rate_limits={"tokens": "4/s"}) == pytest.approx(1.1)
    assert plan.simulate(0.1, rate_limits={"tokens": "6/s"}) == pytest.approx(0.1)


BATCH = """
name: batch
settings: {max_workers: 4, rate_limits: {api: "100/s"}}
steps:
  - type: parallel_group
    name: chunks
    max_workers: 2
    steps:
      - {name: chunk_0, run: "echo 0", rate_limit: api}
      - {name: chunk_1, run: "echo 1", rate_limit: api}
      - {name: chunk_2, run: "echo 2", rate_limit: api}
      - {name: chunk_3, run: "echo 3", rate_limit: api}
  - {name: total, run: "echo total"}
"""


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    path = tmp_path / "batch.yaml"
    path.write_text(textwrap.dedent(BATCH))
    return path


def test_a_pipeline_predicts_with_its_own_limits(batch):
    plan = lf.load_pipeline(batch).plan()
    # the group's max_workers is a pool of 2: 2 rounds of chunks, then the total
    assert plan.simulate(max_workers=4) == pytest.approx(3.0)
    assert plan.simulate(max_workers=4, resources={}) == pytest.approx(2.0)
    assert plan.simulate(max_workers=4, resources={"group:chunks": 4}) == pytest.approx(2.0)
    slow = plan.simulate(max_workers=4, resources={}, rate_limits={"api": "1/s"})
    assert slow == pytest.approx(5.0)  # chunks start at 0, 1, 2, 3; the total at 4
    assert any("group:chunks" in line for line in plan.binding_limits())


def test_what_if_names_the_binding_limit(batch):
    plan = lf.load_pipeline(batch).plan()
    rows = plan.what_if([1, 2, 4, 8])
    assert [r.max_workers for r in rows] == [1, 2, 4, 8]
    assert [r.seconds for r in rows] == pytest.approx([5.0, 3.0, 3.0, 3.0])
    assert [r.speedup for r in rows] == pytest.approx([1.0, 5 / 3, 5 / 3, 5 / 3])
    assert rows[0].binding == "workers"
    # two workers and a pool of two: only lifting both would help
    assert rows[1].binding == "workers + pool group:chunks"
    assert rows[2].binding == rows[3].binding == "pool group:chunks"
    # without the pool, enough workers leave only the critical path
    free = plan.what_if([2, 8], resources={})
    assert [(r.seconds, r.binding) for r in free] == [(3.0, "workers"), (2.0, "critical path")]
    # a slow rate limit binds whatever the workers
    limited = plan.what_if([8], resources={}, rate_limits={"api": "1/s"})
    assert limited[0].binding == "rate limit api"


def test_what_if_with_durations():
    plan = chunks_flow(resources={"db": 1}).plan()
    durations = {f"chunk_{k}": 0.5 for k in range(4)} | {"total": 2.0}
    (row,) = plan.what_if([4], durations, resources={"db": 1})
    assert row.seconds == pytest.approx(4.0)
    assert row.speedup == pytest.approx(1.0)
    assert row.binding == "pool db"
    (row,) = plan.what_if([None], durations)
    assert row.seconds == pytest.approx(2.5) and row.binding == "critical path"


def test_the_cli_prints_the_what_if_table(batch):
    out = layerflow("plan", str(batch), "--max-workers", "1,2,4,8", cwd=batch.parent)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    head = lines.index("what if (every task 1 unit):")
    assert lines[head + 1].split() == ["max_workers", "predicted", "speedup", "bound", "by"]
    rows = [line.split(None, 4) for line in lines[head + 2 : head + 6]]
    assert rows == [
        ["1", "5", "units", "1.0x", "workers"],
        ["2", "3", "units", "1.7x", "workers + pool group:chunks"],
        ["4", "3", "units", "1.7x", "pool group:chunks"],
        ["8", "3", "units", "1.7x", "pool group:chunks"],
    ]
    assert "no past runs" not in out.stdout  # unit durations are said as such above


def test_the_history_says_which_tasks_never_ran(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERFLOW_STORE", str(tmp_path / "store"))
    flow = lf.Flow("growing")
    flow.add(lambda: time.sleep(0.05), name="a")
    flow.add(lambda: time.sleep(0.05), name="b")
    flow.add(lambda: time.sleep(0.05), name="c", after=["a", "b"])
    plan = flow.plan()
    assert plan.history_note() == "no past runs of this flow: every task takes 1 unit"
    flow.run(store=True)
    flow.add(lambda: time.sleep(0.05), name="d", after=["c"])
    plan = flow.plan()
    assert set(plan.history) == {"a", "b", "c"}
    note = plan.history_note()
    assert note.startswith("3 tasks timed in past runs; 1 of 4 tasks never ran before: ")
    # the median of three 0.05 s sleeps (a loaded machine sleeps a little longer)
    median_said = re.search(r"it takes the median, (\d+(?:\.\d+)?) (ms|s)\b", note)
    assert median_said, note
    said = float(median_said.group(1)) / (1000 if median_said.group(2) == "ms" else 1)
    assert 0.05 <= said < 0.2, note
    assert f"durations: {note}" in plan.explain()
    # the one never seen takes the median of the others
    median = sorted(plan.history.values())[1]
    by_hand = plan.simulate({**plan.history, "d": median})
    assert plan.simulate() == pytest.approx(by_hand)


def test_the_cli_plan_says_which_steps_never_ran(tmp_path):
    path = tmp_path / "grow.yaml"
    steps = "steps:\n  - {name: one, run: 'echo 1'}\n  - {name: two, run: 'echo 2'}\n"
    path.write_text("name: grow\n" + steps)
    assert layerflow("run", str(path), "-q", cwd=tmp_path).returncode == 0
    path.write_text("name: grow\n" + steps + "  - {name: three, run: 'echo 3'}\n")
    out = layerflow("plan", str(path), "--max-workers", "1,2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "2 tasks timed in past runs; 1 of 3 tasks never ran before: it takes" in out.stdout
    assert "what if (durations from past runs):" in out.stdout


def sleepy(name: str) -> lf.Flow:
    """Sleeps under a pool and a rate limit: 6 chunks of 0.15 s, two at a time, at most 4
    starts a second; then a total of 0.1 s."""
    flow = lf.Flow(name)
    for k in range(6):
        flow.add(lambda: time.sleep(0.15), name=f"chunk_{k}", resources={"db": 1}, rate_limit="api")
    flow.add(lambda: time.sleep(0.1), name="total", after=[f"chunk_{k}" for k in range(6)])
    return flow


def test_a_run_is_predicted_from_its_history(tmp_path):
    flow = sleepy("sleepy")
    options = {"store": tmp_path / "store", "resources": {"db": 2}, "rate_limits": {"api": "4/s"}}
    first = flow.run(**options)
    assert first.predicted is None  # no history yet
    assert "predicted" not in first.summary()
    second = flow.run(**options)
    assert second.predicted is not None
    # the rate window holds chunks 5 and 6 to the 1 s mark: about 1.25 s in all
    assert abs(second.predicted - second.duration) / second.duration < 0.25
    line = second.summary().splitlines()[1]
    assert line.startswith(f"predicted {second.predicted:.2f}s from past runs; took ")
    assert line.endswith(("slower)", "faster)", "(as predicted)"))
    assert second.prediction_note() == line


def test_no_store_no_prediction(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LAYERFLOW_STORE", raising=False)
    run = chunks_flow().run()
    assert run.predicted is None and run.prediction_note() is None


def test_the_cli_reports_the_prediction(tmp_path):
    path = tmp_path / "pair.yaml"
    path.write_text(
        textwrap.dedent(
            """
            name: pair
            steps:
              - type: parallel_group
                name: both
                steps:
                  - {name: left, run: "sleep 0.3"}
                  - {name: right, run: "sleep 0.3"}
              - {name: after, run: "echo done"}
            """
        )
    )
    first = json.loads(layerflow("run", str(path), "--json", "-q", cwd=tmp_path).stdout)
    assert first["predicted"] is None
    out = layerflow("run", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1].startswith("Completed 3 tasks in ")  # the final line stays last
    assert lines[-2].startswith("Predicted ") and "s from past runs; took " in lines[-2]
    data = json.loads(layerflow("run", str(path), "--json", "-q", cwd=tmp_path).stdout)
    assert abs(data["predicted"] - data["duration"]) / data["duration"] < 0.5
