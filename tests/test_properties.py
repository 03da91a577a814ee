"""Property-based tests on random DAGs, through the public API only.

Every test builds a random DAG (nodes ``t0 .. t{n-1}``; each node's parents are a random
subset of the nodes before it, so the graph is acyclic), declares it as a flow (sometimes in
a shuffled order, so forward references are exercised), runs it, and checks what the tasks
themselves observed. Tasks record ``(name, "start" | "end", tick)`` into a shared list under
a lock, where ``tick`` is a global counter: comparisons never depend on clock readings.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from functools import cached_property

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import layerflow as lf

MAX_NODES = 40
SLEEPS = (0.0, 0.0, 0.0005, 0.001, 0.002)  # seconds; tiny, to create interleavings
MODES_PARALLEL = ("dynamic", "layered")


# --- the random DAG ------------------------------------------------------------------------


@dataclass(frozen=True)
class Dag:
    """``parents[i]`` are indices < i; ``decl`` is the order the tasks are declared in."""

    parents: tuple[tuple[int, ...], ...]
    decl: tuple[int, ...]
    priority: tuple[int, ...]
    sleep: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.parents)

    @cached_property
    def names(self) -> list[str]:
        return [f"t{i}" for i in range(self.n)]

    @cached_property
    def children(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in range(self.n)]
        for i, ps in enumerate(self.parents):
            for p in ps:
                out[p].append(i)
        return out

    @cached_property
    def position(self) -> list[int]:
        """Declaration position of each node."""
        pos = [0] * self.n
        for k, i in enumerate(self.decl):
            pos[i] = k
        return pos

    @cached_property
    def layer(self) -> list[int]:
        out = [0] * self.n
        for i, ps in enumerate(self.parents):  # parents come first: one pass suffices
            out[i] = 1 + max(out[p] for p in ps) if ps else 0
        return out

    @cached_property
    def layers(self) -> list[list[str]]:
        """Expected ``plan.layers``: by layer, each in declaration order."""
        out: list[list[str]] = [[] for _ in range(max(self.layer) + 1)]
        for i in self.decl:
            out[self.layer[i]].append(self.names[i])
        return out

    @cached_property
    def values(self) -> list[int]:
        """What each task returns: 1 + the sum of its parents' values."""
        out = [0] * self.n
        for i, ps in enumerate(self.parents):
            out[i] = 1 + sum(out[p] for p in ps)
        return out

    @cached_property
    def remaining(self) -> list[int]:
        """Longest path from each node to a sink, in tasks, itself included."""
        out = [1] * self.n
        for i in reversed(range(self.n)):
            if self.children[i]:
                out[i] = 1 + max(out[c] for c in self.children[i])
        return out

    def descendants(self, roots: set[int]) -> set[int]:
        seen: set[int] = set()
        stack = list(roots)
        while stack:
            for c in self.children[stack.pop()]:
                if c not in seen:
                    seen.add(c)
                    stack.append(c)
        return seen

    def index(self, name: str) -> int:
        return int(name[1:])


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = MAX_NODES) -> Dag:
    n = draw(st.integers(1, max_nodes))
    fan_in = draw(st.integers(0, 5))  # 0: every node independent
    parents = []
    for i in range(n):
        if i == 0 or fan_in == 0:
            parents.append(())
        else:
            ps = draw(st.sets(st.integers(0, i - 1), max_size=min(i, fan_in)))
            parents.append(tuple(sorted(ps)))
    shuffled = draw(st.booleans())
    decl = tuple(draw(st.permutations(range(n)))) if shuffled else tuple(range(n))
    prio = draw(
        st.one_of(
            st.just((0,) * n),
            st.lists(st.integers(-3, 3), min_size=n, max_size=n).map(tuple),
        )
    )
    sleep = tuple(draw(st.lists(st.sampled_from(SLEEPS), min_size=n, max_size=n)))
    return Dag(tuple(parents), decl, prio, sleep)


# --- recording what the tasks see -----------------------------------------------------------


class Boom(Exception):
    """The exception a task chosen to fail raises."""


class Recorder:
    """Shared by the tasks of one run: events with a global tick, and the peak concurrency."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tick = 0
        self.events: list[tuple[str, str, int]] = []
        self.active = 0
        self.peak = 0
        self.received: dict[str, list[dict[str, int]]] = {}
        self.thread: dict[str, int] = {}

    def start(self, name: str, upstream: dict[str, int]) -> None:
        with self.lock:
            self.tick += 1
            self.events.append((name, "start", self.tick))
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.received.setdefault(name, []).append(dict(upstream))
            self.thread[name] = threading.get_ident()

    def end(self, name: str) -> None:
        with self.lock:
            self.tick += 1
            self.events.append((name, "end", self.tick))
            self.active -= 1

    def start_order(self) -> list[str]:
        return [name for name, kind, _ in self.events if kind == "start"]

    def ticks(self, kind: str) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for name, k, tick in self.events:
            if k == kind:
                out.setdefault(name, []).append(tick)
        return out


def make_task(rec: Recorder, name: str, sleep: float, fail: bool):
    def fn(**upstream: int) -> int:
        rec.start(name, upstream)
        try:
            if sleep:
                time.sleep(sleep)
            if fail:
                raise Boom(name)
            return 1 + sum(upstream.values())
        finally:
            rec.end(name)

    return fn


def build_flow(
    dag: Dag, rec: Recorder, failing: frozenset[int] = frozenset(), *, sleep: bool = True
) -> lf.Flow:
    flow = lf.Flow("random-dag")
    for i in dag.decl:
        name = dag.names[i]
        flow.add(
            make_task(rec, name, dag.sleep[i] if sleep else 0.0, i in failing),
            name=name,
            inputs={f"p{k}": f"t{k}" for k in dag.parents[i]},
            priority=dag.priority[i],
        )
    return flow


# --- shared checks ---------------------------------------------------------------------------


def assert_topological(order: list[str], dag: Dag) -> None:
    assert sorted(order) == sorted(dag.names), "not every task exactly once"
    pos = {name: k for k, name in enumerate(order)}
    for i, ps in enumerate(dag.parents):
        for p in ps:
            assert pos[f"t{p}"] < pos[f"t{i}"], f"t{i} comes before its parent t{p}"


def assert_ran_correctly(rec: Recorder, dag: Dag, run: lf.RunResult) -> None:
    """Every task ran once, after all its parents ended, with its parents' values."""
    starts, ends = rec.ticks("start"), rec.ticks("end")
    assert run.status == "succeeded" and run.ok
    for i, name in enumerate(dag.names):
        assert len(starts.get(name, [])) == 1, f"{name} started {starts.get(name)}"
        assert len(ends.get(name, [])) == 1
        for p in dag.parents[i]:
            assert ends[f"t{p}"][0] < starts[name][0], f"{name} started before t{p} ended"
        assert rec.received[name] == [{f"p{p}": dag.values[p] for p in dag.parents[i]}]
        assert run[name] == dag.values[i]
        assert run.tasks[name].status == "succeeded"
        assert run.tasks[name].attempts == 1
    assert_topological(run.order, dag)  # tasks start only after their dependencies


# --- 1. correctness --------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    dag=dags(),
    mode=st.sampled_from(MODES_PARALLEL),
    max_workers=st.one_of(st.none(), st.integers(1, 6)),
)
def test_every_task_runs_once_after_its_parents(dag: Dag, mode: str, max_workers: int | None):
    rec = Recorder()
    run = build_flow(dag, rec).run(mode=mode, max_workers=max_workers)
    assert_ran_correctly(rec, dag, run)


# --- 2. the plan ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(dag=dags())
def test_plan_layers_and_order(dag: Dag):
    plan = build_flow(dag, Recorder()).plan()
    assert plan.layers == dag.layers
    assert plan.tasks == [dag.names[i] for i in dag.decl]
    assert len(plan) == dag.n
    assert_topological(plan.order, dag)
    for i, name in enumerate(dag.names):
        assert plan.layer_of(name) == dag.layer[i]
        assert sorted(plan.dependencies(name)) == sorted(f"t{p}" for p in dag.parents[i])


# --- 3. the worker bound --------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(dag=dags(), mode=st.sampled_from(MODES_PARALLEL), max_workers=st.integers(1, 6))
def test_peak_concurrency_never_exceeds_max_workers(dag: Dag, mode: str, max_workers: int):
    rec = Recorder()
    run = build_flow(dag, rec).run(mode=mode, max_workers=max_workers)
    assert run.ok
    assert 1 <= rec.peak <= max_workers


# --- 4. sequential mode ---------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(dag=dags())
def test_sequential_runs_one_at_a_time_in_plan_order(dag: Dag):
    rec = Recorder()
    flow = build_flow(dag, rec, sleep=False)
    plan = flow.plan()
    run = flow.run(mode="sequential")
    assert_ran_correctly(rec, dag, run)
    assert rec.peak == 1
    assert rec.start_order() == plan.order
    assert run.order == plan.order
    # "in the calling thread where possible": nothing here prevents it
    assert set(rec.thread.values()) == {threading.get_ident()}


@settings(max_examples=50, deadline=None)
@given(dag=dags(), seed=st.integers(0, 2**32))
def test_sequential_with_seed_is_a_reproducible_topological_order(dag: Dag, seed: int):
    rec1, rec2 = Recorder(), Recorder()
    run1 = build_flow(dag, rec1, sleep=False).run(mode="sequential", seed=seed)
    run2 = build_flow(dag, rec2, sleep=False).run(mode="sequential", seed=seed)
    assert_ran_correctly(rec1, dag, run1)
    assert rec1.peak == 1
    assert_topological(run1.order, dag)
    assert run1.order == rec1.start_order()
    assert run2.order == run1.order
    assert rec2.start_order() == run1.order


def test_sequential_seeds_give_different_orders():
    """Sanity check that the seed is used at all: 8 independent tasks, many seeds."""
    dag = Dag(((),) * 8, tuple(range(8)), (0,) * 8, (0.0,) * 8)
    orders = set()
    for seed in range(20):
        run = build_flow(dag, Recorder(), sleep=False).run(mode="sequential", seed=seed)
        orders.add(tuple(run.order))
    assert len(orders) > 1


# --- 5. layered mode's barrier --------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(dag=dags(), max_workers=st.one_of(st.none(), st.integers(1, 6)))
def test_layered_mode_has_a_barrier_between_layers(dag: Dag, max_workers: int | None):
    rec = Recorder()
    run = build_flow(dag, rec).run(mode="layered", max_workers=max_workers)
    assert_ran_correctly(rec, dag, run)
    starts, ends = rec.ticks("start"), rec.ticks("end")
    for k in range(len(dag.layers) - 1):
        last_end = max(ends[name][0] for name in dag.layers[k])
        first_start = min(starts[name][0] for name in dag.layers[k + 1])
        assert last_end < first_start, f"layer {k + 1} started before layer {k} ended"


# --- 6. critical path and simulation --------------------------------------------------------


def longest_weighted_path(dag: Dag, w: list[float]) -> float:
    dist = [0.0] * dag.n
    for i, ps in enumerate(dag.parents):
        dist[i] = w[i] + (max(dist[p] for p in ps) if ps else 0.0)
    return max(dist)


def assert_is_path(path: list[str], dag: Dag) -> None:
    assert path, "empty critical path"
    for a, b in zip(path, path[1:], strict=False):
        assert dag.index(a) in dag.parents[dag.index(b)], f"{a} -> {b} is not an edge"


@settings(max_examples=150, deadline=None)
@given(
    dag=dags(),
    data=st.data(),
    max_workers=st.integers(1, 6),
    mode=st.sampled_from(MODES_PARALLEL),
)
def test_critical_path_and_simulate_bounds(dag: Dag, data, max_workers: int, mode: str):
    plan = build_flow(dag, Recorder()).plan()

    path = plan.critical_path()
    assert_is_path(path, dag)
    assert len(path) == len(plan.layers)

    w = data.draw(
        st.lists(
            st.one_of(st.just(0.0), st.floats(0.0, 10.0, allow_nan=False)),
            min_size=dag.n,
            max_size=dag.n,
        )
    )
    durations = dict(zip(dag.names, w, strict=True))

    wpath = plan.critical_path(durations)
    assert_is_path(wpath, dag)
    longest = longest_weighted_path(dag, w)
    assert sum(durations[name] for name in wpath) == pytest.approx(longest, rel=1e-9, abs=1e-9)

    total = sum(w)
    span = plan.simulate(durations, max_workers, mode=mode)
    tol = 1e-9 * max(1.0, total)
    assert span >= max(longest, total / max_workers) - tol
    assert span <= total + tol
    assert plan.simulate(durations, max_workers=1, mode=mode) == pytest.approx(total, abs=tol)


# --- 7. failures ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(dag=dags(), data=st.data(), mode=st.sampled_from(MODES_PARALLEL))
def test_continue_on_failure_skips_exactly_the_descendants(dag: Dag, data, mode: str):
    failing = frozenset(data.draw(st.sets(st.sampled_from(range(dag.n)))))
    max_workers = data.draw(st.one_of(st.none(), st.integers(1, 6)))
    rec = Recorder()
    run = build_flow(dag, rec, failing).run(mode=mode, max_workers=max_workers, fail_fast=False)

    skipped = dag.descendants(set(failing))
    failed = set(failing) - skipped  # a failing task below another failure never runs
    starts, ends = rec.ticks("start"), rec.ticks("end")
    for i, name in enumerate(dag.names):
        t = run.tasks[name]
        if i in skipped:
            assert t.status == "skipped", name
            assert name not in starts, f"skipped task {name} ran"
            with pytest.raises(lf.NoValueError):
                run[name]
        elif i in failed:
            assert t.status == "failed", name
            assert isinstance(t.error, Boom) and str(t.error) == name
            assert len(starts[name]) == 1
        else:
            assert t.status == "succeeded", name
            assert run[name] == dag.values[i]
            assert len(starts[name]) == 1
        if name in starts:
            for p in dag.parents[i]:
                assert ends[f"t{p}"][0] < starts[name][0]
    assert run.status == ("failed" if failed else "succeeded")
    assert run.ok == (not failed)


@settings(max_examples=60, deadline=None)
@given(dag=dags(), data=st.data(), mode=st.sampled_from(MODES_PARALLEL))
def test_fail_fast_raises_and_never_runs_downstream_of_a_failure(dag: Dag, data, mode: str):
    failing = frozenset(data.draw(st.sets(st.sampled_from(range(dag.n)), min_size=1)))
    max_workers = data.draw(st.one_of(st.none(), st.integers(1, 6)))
    rec = Recorder()
    flow = build_flow(dag, rec, failing)
    with pytest.raises(lf.TaskFailed) as info:
        flow.run(mode=mode, max_workers=max_workers, fail_fast=True)
    exc = info.value
    result = exc.result
    assert result.status == "failed"
    assert sorted(result.tasks) == sorted(dag.names)
    assert dag.index(exc.task) in failing
    assert isinstance(exc.__cause__, Boom) and str(exc.__cause__) == exc.task
    assert result.tasks[exc.task].status == "failed"

    statuses = {name: t.status for name, t in result.tasks.items()}
    assert set(statuses.values()) <= {"succeeded", "failed", "cancelled"}
    failed = {dag.index(name) for name, s in statuses.items() if s == "failed"}
    assert failed <= failing
    starts = rec.ticks("start")
    for i in dag.descendants(failed):
        assert dag.names[i] not in starts, f"t{i} ran downstream of a failure"
    for name, s in statuses.items():
        ran = name in starts
        assert ran == (s in ("succeeded", "failed")), (name, s)
        assert result.tasks[name].attempts == (1 if ran else 0)
        if s == "succeeded":
            assert result[name] == dag.values[dag.index(name)]


# --- 8. the ready-task policy ---------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(dag=dags())
def test_one_worker_follows_priority_then_critical_path_then_declaration(dag: Dag):
    """With one worker the start order is fully determined by the documented policy."""
    rec = Recorder()
    run = build_flow(dag, rec, sleep=False).run(mode="dynamic", max_workers=1)
    assert_ran_correctly(rec, dag, run)
    assert rec.peak == 1

    def key(i: int) -> tuple[int, int, int]:
        return (-dag.priority[i], -dag.remaining[i], dag.position[i])

    done: set[int] = set()
    expected = []
    while len(done) < dag.n:
        ready = [i for i in range(dag.n) if i not in done and set(dag.parents[i]) <= done]
        best = min(ready, key=key)
        expected.append(dag.names[best])
        done.add(best)
    assert run.order == expected
    assert rec.start_order() == expected


# --- a large graph ---------------------------------------------------------------------------


def test_large_random_dag_runs_correctly():
    rng = random.Random(20_000)
    n = 20_000
    mod = 1_000_003
    parents = [
        sorted(rng.sample(range(i), min(i, rng.randint(0, 3)))) if i else [] for i in range(n)
    ]
    decl = list(range(n))
    rng.shuffle(decl)

    def noop(**upstream: int) -> int:
        return (1 + sum(upstream.values())) % mod

    flow = lf.Flow("large")
    for i in decl:
        flow.add(noop, name=f"t{i}", inputs={f"p{k}": f"t{k}" for k in parents[i]})
    run = flow.run(max_workers=4)

    expected = [0] * n
    for i, ps in enumerate(parents):
        expected[i] = (1 + sum(expected[p] for p in ps)) % mod
    assert run.status == "succeeded"
    assert len(run.tasks) == n
    assert all(t.status == "succeeded" for t in run.tasks.values())
    for i in range(n):
        assert run[f"t{i}"] == expected[i]
    pos = {name: k for k, name in enumerate(run.order)}
    assert len(pos) == n
    for i, ps in enumerate(parents):
        for p in ps:
            assert pos[f"t{p}"] < pos[f"t{i}"]
