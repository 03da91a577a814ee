"""Bugs found in review, each pinned by a test through the public API."""

from __future__ import annotations

import math
import time

import pytest

import layerflow as lf


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


def test_positional_only_parameters_keep_their_defaults_in_place():
    flow = lf.Flow()

    @flow.task
    def b():
        return "B"

    def c(a="default-a", b="default-b", /):
        return (a, b)

    flow.add(c)
    assert flow.run()["c"] == ("default-a", "B")


def test_async_task_with_positional_only_parameters():
    flow = lf.Flow()

    @flow.task
    def x():
        return 20

    async def add_one(x, /):
        return x + 1

    flow.add(add_one)
    assert flow.run()["add_one"] == 21
    assert flow.run(mode="sequential")["add_one"] == 21


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("cannot print me")


def test_an_exception_that_cannot_be_printed_still_gives_task_failed():
    def bad():
        raise Unprintable()

    flow = lf.Flow()
    flow.add(bad)
    with pytest.raises(lf.TaskFailed, match="Unprintable"):
        flow.run()
    run = flow.run(fail_fast=False, progress=True)
    assert "Unprintable" in run.summary()
    assert run.values == {} and "bad" not in run
    with pytest.raises(lf.NoValueError, match="cannot be shown"):
        run["bad"]


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


def test_fail_fast_cancels_running_coroutines():
    import asyncio

    flow = lf.Flow()

    async def slow():
        await asyncio.sleep(10)

    async def boom():
        await asyncio.sleep(0.05)
        raise RuntimeError("boom")

    flow.add(slow)
    flow.add(boom)
    t0 = time.perf_counter()
    with pytest.raises(lf.TaskFailed) as info:
        flow.run()
    assert time.perf_counter() - t0 < 5
    assert info.value.result.tasks["slow"].status == "cancelled"


@pytest.mark.parametrize("durations", [{"t": "x"}, {"t": -1.0}, {"t": math.nan}, -2, math.inf])
def test_bad_durations_are_refused(durations):
    flow = lf.Flow()
    flow.add(lambda: 1, name="t")
    with pytest.raises(lf.InvalidOptionError, match="durations"):
        flow.plan().simulate(durations)


def test_bad_params_and_after_values_name_the_task():
    flow = lf.Flow()
    with pytest.raises(lf.InvalidOptionError, match="'t'.*params must be a mapping"):
        flow.add(lambda: 1, name="t", params=5)
    with pytest.raises(lf.InvalidOptionError, match="'t'.*after must be"):
        flow.add(lambda: 1, name="t", after=5)


def test_a_layer_of_skipped_tasks_still_starts_before_it_finishes():
    events = []
    flow = lf.Flow()
    flow.add(lambda: (_ for _ in ()).throw(ValueError("x")), name="bad")
    flow.add(lambda bad: 1, name="skipped")
    flow.run(fail_fast=False, on_event=events.append)
    layer_events = [(e.kind, e.layer) for e in events if e.kind.startswith("layer")]
    assert layer_events.index(("layer_started", 1)) < layer_events.index(("layer_finished", 1))
