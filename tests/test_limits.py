"""Resource pools, rate limits, RateLimited push-back and per-layer checkpoints."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import layerflow as lf


class Units:
    """Units held at once per pool, recorded from inside the tasks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[str, float] = {}
        self.peak: dict[str, float] = {}

    def task(self, need: dict[str, float], seconds: float = 0.01):
        def fn(**upstream):
            with self.lock:
                for pool, units in need.items():
                    self.held[pool] = self.held.get(pool, 0) + units
                    self.peak[pool] = max(self.peak.get(pool, 0), self.held[pool])
            time.sleep(seconds)
            with self.lock:
                for pool, units in need.items():
                    self.held[pool] -= units
            return 1

        return fn


# --- resource pools ---------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(0, 30), max_size=3),  # parents (earlier indices)
            st.integers(0, 2),  # gpu units
            st.integers(0, 3),  # db units
        ),
        min_size=1,
        max_size=25,
    ),
    st.sampled_from([None, 2, 4]),
)
def test_units_held_never_exceed_a_pools_capacity(spec, max_workers):
    units = Units()
    flow = lf.Flow()
    for i, (parents, gpu, db) in enumerate(spec):
        need = {k: v for k, v in (("gpu", gpu), ("db", db)) if v}
        ps = sorted({p for p in parents if p < i})
        flow.add(
            units.task(need),
            name=f"t{i}",
            resources=need or None,
            inputs={f"p{p}": f"t{p}" for p in ps},
        )
    run = flow.run(resources={"gpu": 2, "db": 3}, max_workers=max_workers)
    assert run.ok
    assert units.peak.get("gpu", 0) <= 2 and units.peak.get("db", 0) <= 3


def test_a_pool_is_actually_used_in_parallel():
    units = Units()
    flow = lf.Flow()
    for k in range(6):
        flow.add(units.task({"gpu": 1}, seconds=0.2), name=f"g{k}", resources={"gpu": 1})
    flow.run(resources={"gpu": 3})
    assert units.peak["gpu"] == 3


def test_units_return_after_failure_timeout_and_retry():
    units = Units()
    flow = lf.Flow()

    def fails():
        raise RuntimeError("gpu job crashed")

    flow.add(fails, resources={"gpu": 2})
    flow.add(lambda: time.sleep(5), name="hangs", resources={"gpu": 2}, timeout=0.2)
    flow.add(units.task({"gpu": 2}), name="after", resources={"gpu": 2})
    t0 = time.perf_counter()
    run = flow.run(resources={"gpu": 2}, fail_fast=False)
    assert time.perf_counter() - t0 < 4
    assert run.tasks["fails"].status == "failed"
    assert isinstance(run.tasks["hangs"].error, lf.TaskTimeout)
    assert run.tasks["after"].status == "succeeded"


def test_pool_errors_before_the_run():
    ran = []
    flow = lf.Flow()
    flow.add(lambda: ran.append(1), name="a", resources={"gpus": 1})
    flow.add(lambda: ran.append(1), name="b", resources={"db": 5})
    with pytest.raises(lf.InvalidOptionError) as info:
        flow.run(resources={"gpu": 1, "db": 2})
    text = str(info.value)
    assert "'a' needs resource 'gpus'" in text and "Did you mean 'gpu'" in text
    assert "'b' needs 5 of 'db', but the pool holds only 2" in text
    assert ran == []
    with pytest.raises(lf.InvalidOptionError, match="resources\\['gpu'\\] must be"):
        flow.run(resources={"gpu": 0, "db": 5, "gpus": 1})


def test_pools_hold_across_processes_and_coroutines():
    state = {"now": 0, "peak": 0}

    async def coro():
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.1)
        state["now"] -= 1

    flow = lf.Flow()
    for k in range(6):
        flow.add(coro, name=f"c{k}", resources={"api": 1})
    flow.run(resources={"api": 2})
    assert state["peak"] == 2


# --- rate limits ------------------------------------------------------------------------


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best = 0
    lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@pytest.mark.parametrize("kind", ["thread", "async"])
def test_starts_never_exceed_the_allowance_in_any_window(kind):
    starts: list[float] = []
    flow = lf.Flow()
    if kind == "async":

        async def call():
            starts.append(time.monotonic())

    else:

        def call():
            starts.append(time.monotonic())

    for k in range(9):
        flow.add(call, name=f"call{k}", rate_limit="api")
    granted: list[float] = []  # when the scheduler started each task: what the limit governs

    def on_event(event):
        if event.kind == "task_started":
            granted.append(event.time)

    t0 = time.monotonic()
    flow.run(rate_limits={"api": "3/0.5s"}, on_event=on_event)
    assert len(starts) == 9 and len(granted) == 9
    # the task's own clock may read late on a loaded machine; the grants may not
    assert max_in_window(granted, 0.45) <= 3
    assert time.monotonic() - t0 >= 0.9  # 9 starts at 3 per 0.5 s need two full windows


def test_rate_limit_on_process_tasks():
    flow = lf.Flow()
    # a first layer gives the worker processes (started with the run) time to come up, so
    # what the tasks record is when the scheduler let them start
    flow.add(lambda: time.sleep(1), name="warm_up")
    for k in range(4):
        flow.add(
            time.monotonic, name=f"p{k}", rate_limit="api", executor="process", after="warm_up"
        )
    run = flow.run(rate_limits={"api": lf.RateLimit(2, 0.5)})
    starts = [run[f"p{k}"] for k in range(4)]
    assert max_in_window(starts, 0.45) <= 2


def test_retries_count_as_starts():
    starts: list[float] = []
    flow = lf.Flow()

    @flow.task(retries=3, rate_limit="api")
    def flaky():
        starts.append(time.monotonic())
        if len(starts) < 4:
            raise ConnectionError("again")
        return "ok"

    assert flow.run(rate_limits={"api": "2/0.5s"})["flaky"] == "ok"
    assert max_in_window(starts, 0.45) <= 2


def test_rate_limited_pushes_back_without_spending_a_retry():
    calls: list[float] = []
    others: list[float] = []
    flow = lf.Flow()

    @flow.task(rate_limit="api")  # no retries at all
    def pushy():
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise lf.RateLimited("429 Too Many Requests", retry_after=0.4)
        return "got through"

    @flow.task(rate_limit="api", after=["pushy"])
    def later():
        others.append(time.monotonic())

    run = flow.run(rate_limits={"api": "100/s"})
    assert run["pushy"] == "got through"
    assert run.tasks["pushy"].attempts == 2
    assert calls[1] - calls[0] >= 0.35  # the limit paused for retry_after


def test_rate_limited_pauses_the_limit_for_everyone():
    starts: dict[str, float] = {}
    flow = lf.Flow()
    first = []

    def make(name):
        def call():
            starts.setdefault(name, time.monotonic())
            if name == "a" and not first:
                first.append(1)
                raise lf.RateLimited(retry_after=0.5)

        return call

    flow.add(make("a"), name="a", rate_limit="api", priority=5)
    flow.add(make("b"), name="b", rate_limit="api", after=["a"])
    flow.add(make("c"), name="c", rate_limit="api", priority=1)
    t0 = time.monotonic()
    flow.run(rate_limits={"api": "100/s"}, max_workers=1)
    assert starts["c"] - t0 >= 0.45  # c waited for the pause a's push-back caused


def test_several_limits_with_costs():
    starts: list[float] = []
    flow = lf.Flow()
    for k in range(6):
        flow.add(
            lambda: starts.append(time.monotonic()),
            name=f"llm{k}",
            rate_limit={"llm-requests": 1, "llm-tokens": 1200},
        )
    flow.run(rate_limits={"llm-requests": "100/s", "llm-tokens": "2400/0.5s"})
    assert max_in_window(starts, 0.45) <= 2  # tokens bind: 2 x 1200 per window


def test_rate_limit_errors_before_the_run():
    flow = lf.Flow()
    flow.add(lambda: 1, name="a", rate_limit="gihtub")
    flow.add(lambda: 1, name="b", rate_limit={"tokens": 5000})
    with pytest.raises(lf.InvalidOptionError) as info:
        flow.run(rate_limits={"github": "80/min", "tokens": "4000/min"})
    text = str(info.value)
    assert "'a' names rate limit 'gihtub'" in text and "Did you mean 'github'" in text
    assert "'b' costs 5000 on rate limit 'tokens', more than a whole window" in text
    with pytest.raises(lf.InvalidOptionError, match="looks like '80/min'"):
        flow.run(rate_limits={"github": "fast", "gihtub": "1/s", "tokens": "9000/s"})


@pytest.mark.parametrize(
    ("text", "count", "seconds"),
    [("80/min", 80, 60), ("5/s", 5, 1), ("1000/h", 1000, 3600), ("3/10s", 3, 10)],
)
def test_rate_limit_parsing(text, count, seconds):
    limit = lf.RateLimit.parse(text)
    assert (limit.count, limit.per_seconds) == (count, seconds)


def test_plan_says_which_limits_bind():
    flow = lf.Flow()
    for k in range(500):
        flow.add(lambda: 1, name=f"gh{k}", rate_limit="github")
    lines = flow.plan().binding_limits(rate_limits={"github": "80/min"})
    assert lines == [
        "rate limit github allows 80 starts per minute; 500 tasks need at least 6.2 min"
    ]


# --- checkpoints ------------------------------------------------------------------------


def three_layers(log: list[str]) -> lf.Flow:
    flow = lf.Flow()

    def step(name):
        def fn(**upstream):
            log.append(f"start {name}")
            return name

        return fn

    flow.add(step("a"), name="a")
    flow.add(step("b"), name="b")
    flow.add(step("c"), name="c", inputs={"a": "a"})
    flow.add(step("d"), name="d", inputs={"c": "c"})
    return flow


def test_checkpoint_approves_every_layer_before_the_next_starts():
    log: list[str] = []
    reports: list[lf.LayerReport] = []

    def approve(report):
        time.sleep(0.1)
        reports.append(report)
        log.append(f"approved {report.index}")
        return True

    run = three_layers(log).run(checkpoint=approve)
    assert run.ok and run["d"] == "d"
    assert [r.index for r in reports] == [0, 1]  # not after the last layer
    assert reports[0].tasks == ("a", "b")
    assert reports[0].statuses == {"a": "succeeded", "b": "succeeded"}
    assert reports[0].values == {"a": "a", "b": "b"}
    assert reports[0].counts() == {"succeeded": 2}
    assert log.index("approved 0") < log.index("start c")
    assert log.index("approved 1") < log.index("start d")


def test_checkpoint_refusal_stops_cleanly_and_keeps_results():
    log: list[str] = []
    run = three_layers(log).run(checkpoint=lambda report: False)
    assert run.status == "stopped" and not run.ok
    assert run["a"] == "a" and run["b"] == "b"
    assert run.tasks["c"].status == "cancelled" and run.tasks["d"].status == "cancelled"
    assert "start c" not in log


def test_checkpoint_that_raises_fails_the_run():
    log: list[str] = []

    def broken(report):
        raise RuntimeError("checkpoint bug")

    with pytest.raises(lf.TaskFailed) as info:
        three_layers(log).run(checkpoint=broken)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert info.value.result.tasks["c"].status == "cancelled"


def test_checkpoint_must_be_callable():
    with pytest.raises(lf.InvalidOptionError, match="checkpoint must be a callable"):
        three_layers([]).run(checkpoint="yes")


def test_a_released_unit_hands_back_only_what_fits_not_every_parked_task():
    # regression: releasing one unit re-queued every parked task (quadratic in the queue)
    from layerflow.limits import Gate

    need = [{"gpu": 1.0}] * 1000 + [{"gpu": 2.0}]
    gate = Gate({"gpu": 1.0}, {}, need, [None] * len(need))
    assert gate.admit(0, 0, 0.0) is None
    for i in range(1, len(need)):
        assert gate.admit(i, i, 0.0) == ("pool", "gpu")
    back = gate.release(0)
    assert back == [(1, 1)]  # the best parked one; the other 999 stay parked
    assert gate.admit(1, 1, 0.0) is None
    # a task too big for the room returned is passed by smaller ones behind it
    gate2 = Gate(
        {"gpu": 2.0}, {}, [{"gpu": 1.0}, {"gpu": 1.0}, {"gpu": 2.0}, {"gpu": 1.0}], [None] * 4
    )
    assert gate2.admit(0, 0, 0.0) is None and gate2.admit(1, 1, 0.0) is None
    assert gate2.admit(2, 2, 0.0) == ("pool", "gpu") and gate2.admit(3, 3, 0.0) == ("pool", "gpu")
    assert gate2.release(0) == [(3, 3)]


def test_many_tasks_on_a_one_unit_pool_run_one_at_a_time_in_priority_order():
    flow = lf.Flow("pool")
    order = []
    for k in range(300):
        flow.add(lambda k=k: order.append(k), name=f"t{k}", resources={"slot": 1}, priority=k % 7)
    run = flow.run(max_workers=8, resources={"slot": 1})
    assert run.ok and len(order) == 300
    # the first task takes the unit at once; after it, higher priorities always went first
    later = order[1:]
    prios = [k % 7 for k in later]
    assert prios == sorted(prios, reverse=True)


@pytest.mark.parametrize("seed", [None, 3])
def test_sequential_mode_keeps_its_order_when_a_rate_limit_holds_a_task(seed):
    # a task held by the rate window was overtaken: run.order was not the plan's order
    flow = lf.Flow("in-order")
    for k in range(4):
        flow.add(lambda k=k: k, name=f"api{k}", rate_limit="api")
        flow.add(lambda k=k: k, name=f"local{k}")
    free = flow.run(mode="sequential", seed=seed, rate_limits={"api": "1000/s"}, progress=False)
    held = flow.run(mode="sequential", seed=seed, rate_limits={"api": "2/0.3s"}, progress=False)
    assert held.order == free.order
    if seed is None:
        assert held.order == flow.plan().order
    assert held.waits  # the limit did hold a task
