"""Plans: order, layers, critical path, simulation, explanation and pictures."""

from __future__ import annotations

import math

import pytest

import layerflow as lf


def diamond() -> lf.Flow:
    """a -> (b, c) -> d, plus an independent e."""
    flow = lf.Flow("diamond")

    @flow.task
    def a():
        return 1

    @flow.task
    def b(a):
        return a + 1

    @flow.task
    def c(a):
        return a + 2

    @flow.task
    def e():
        return 0

    @flow.task(after=["e"])
    def d(b, c):
        return b + c

    return flow


def test_order_and_layers():
    plan = diamond().plan()
    assert plan.layers == [["a", "e"], ["b", "c"], ["d"]]
    assert plan.order == ["a", "e", "b", "c", "d"]
    assert plan.tasks == ["a", "b", "c", "e", "d"]
    assert plan.layer_of("d") == 2
    assert plan.dependencies("d") == ["b", "c", "e"]


def test_critical_path_by_count_and_by_duration():
    plan = diamond().plan()
    assert plan.critical_path() == ["a", "b", "d"]
    durations = {"a": 1.0, "b": 1.0, "c": 5.0, "d": 1.0, "e": 0.5}
    assert plan.critical_path(durations) == ["a", "c", "d"]
    # a long independent task is its own critical path
    assert plan.critical_path({**durations, "e": 20.0}) == ["e", "d"]


def test_simulate_under_the_scheduler_policy():
    plan = diamond().plan()
    durations = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 1.0, "e": 1.0}
    assert plan.simulate(durations) == pytest.approx(5.0)  # a, c, d
    assert plan.simulate(durations, max_workers=1) == pytest.approx(8.0)
    assert plan.simulate(durations, mode="sequential") == pytest.approx(8.0)
    # layered waits for the slowest task of each layer
    assert plan.simulate(durations, mode="layered") == pytest.approx(5.0)
    # two workers: a and e first, then c (longer remaining path... equal) and b
    assert plan.simulate(durations, max_workers=2) == pytest.approx(5.0)
    with pytest.raises(lf.InvalidOptionError, match="not a task"):
        plan.simulate({"zzz": 1.0})


def test_simulate_prefers_the_longest_remaining_path():
    flow = lf.Flow()
    flow.add(lambda: 0, name="short")
    flow.add(lambda: 0, name="head")
    flow.add(lambda head: 0, name="tail")
    durations = {"short": 1.0, "head": 1.0, "tail": 1.0}
    # one worker: head first (2 tasks remain on its path) -> no idle time either way,
    # but with two workers the longest chain must start at once.
    assert flow.plan().simulate(durations, max_workers=2) == pytest.approx(2.0)


def test_priority_beats_remaining_path_in_simulation_and_keys():
    flow = lf.Flow()
    flow.add(lambda: 0, name="urgent", priority=5)
    flow.add(lambda: 0, name="head")
    flow.add(lambda head: 0, name="tail")
    # with one worker urgent runs first despite the shorter path: 1 + 1 + 1
    assert flow.plan().simulate({"urgent": 1.0, "head": 1.0, "tail": 1.0}, 1) == 3.0
    run = flow.run(max_workers=1)
    assert run.order == ["urgent", "head", "tail"]


def test_explain_mermaid_and_dot():
    plan = diamond().plan()
    text = plan.explain()
    assert "5 tasks in 3 layers" in text
    assert "layer 0: a, e" in text and "layer 2: d" in text
    assert "critical path (tasks): a -> b -> d" in text
    assert "speedup" in text
    timed = plan.explain({"a": 1, "b": 2, "c": 3, "d": 1, "e": 1}, max_workers=2)
    assert "5.00s instead of 8.00s" in timed

    mermaid = plan.to_mermaid()
    assert mermaid.startswith("flowchart TD")
    assert 'n0["a"]' in mermaid and "n0 --> n1" in mermaid
    assert "n3 -.-> n4" in mermaid  # e -> d is ordering only

    dot = plan.to_dot()
    assert dot.startswith('digraph "diamond" {')
    assert '"a" -> "b";' in dot and '"e" -> "d" [style=dashed];' in dot
    assert '{ rank=same; "a" "e" }' in dot


def test_outputs_prune_the_plan():
    plan = diamond().plan(outputs=["b"])
    assert plan.tasks == ["a", "b"]
    assert plan.layers == [["a"], ["b"]]


def test_sequence_with_seed_is_a_reproducible_valid_order():
    flow = lf.Flow()
    for k in range(12):
        flow.add(lambda: 0, name=f"t{k}")
    flow.add(lambda **kw: 0, name="sink", inputs={f"t{k}": f"t{k}" for k in range(12)})
    first = flow.run(mode="sequential", seed=7).order
    again = flow.run(mode="sequential", seed=7).order
    other = flow.run(mode="sequential", seed=8).order
    assert first == again
    assert first != other  # 12! orders: two seeds agreeing would be a broken shuffle
    assert first[-1] == "sink" and sorted(first[:-1]) == sorted(f"t{k}" for k in range(12))
    assert flow.run(mode="sequential").order == flow.plan().order


def test_planning_is_linear_enough_for_a_large_chain():
    flow = lf.Flow()
    flow.add(lambda: 0, name="t0")
    for i in range(1, 50_000):
        flow.add(lambda prev: 0, name=f"t{i}", inputs={"prev": f"t{i - 1}"})
    plan = flow.plan()
    assert len(plan.layers) == 50_000
    assert len(plan.critical_path()) == 50_000


def test_cycles_and_input_problems_are_reported_together():
    flow = lf.Flow()

    @flow.task
    def a(b, user_id):
        return 1

    @flow.task
    def b(a):
        return 1

    with pytest.raises(lf.LayerflowError) as info:
        flow.run({"user_idd": 1})
    kinds = {type(p).__name__ for p in info.value.problems}
    assert kinds == {"CycleError", "InvalidOptionError", "MissingInputError"}


@pytest.mark.parametrize("durations", [{"t": "x"}, {"t": -1.0}, {"t": math.nan}, -2, math.inf])
def test_bad_durations_are_refused(durations):
    flow = lf.Flow()
    flow.add(lambda: 1, name="t")
    with pytest.raises(lf.InvalidOptionError, match="durations"):
        flow.plan().simulate(durations)
