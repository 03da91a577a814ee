"""Validation: every problem is found before anything runs, and reported at once."""

from __future__ import annotations

import pytest

import layerflow as lf


def _flow_with_cycle():
    flow = lf.Flow("loop")
    ran = []

    @flow.task
    def a(c):
        ran.append("a")

    @flow.task
    def b(a):
        ran.append("b")

    @flow.task
    def c(b):
        ran.append("c")

    @flow.task
    def free():
        ran.append("free")

    return flow, ran


def test_cycle_error_names_the_cycle_and_runs_nothing():
    flow, ran = _flow_with_cycle()
    with pytest.raises(lf.CycleError) as info:
        flow.run()
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, lf.LayerflowError)
    assert err.cycle == ["a", "b", "c", "a"]
    assert "a -> b -> c -> a" in str(err)
    assert ran == []


def test_self_dependency_is_a_cycle():
    flow = lf.Flow()

    @flow.task
    def text(text):
        return text

    with pytest.raises(lf.CycleError, match="text -> text"):
        flow.plan()


def test_missing_dependency_names_task_and_closest_name():
    flow = lf.Flow()

    @flow.task
    def orders():
        return []

    @flow.task(inputs={"items": "order"})
    def total(items):
        return len(items)

    with pytest.raises(lf.MissingDependencyError) as info:
        flow.plan()
    err = info.value
    assert (err.task, err.missing, err.suggestion) == ("total", "order", "orders")
    assert "Did you mean 'orders'?" in str(err)


def test_missing_after_target():
    flow = lf.Flow()
    flow.add(lambda: 1, name="x", after=["setpu"])
    flow.add(lambda: 1, name="setup")
    with pytest.raises(lf.MissingDependencyError, match="'setpu' \\(after\\).*'setup'"):
        flow.plan()


def test_missing_input_named_with_the_task_that_needs_it():
    flow = lf.Flow()

    @flow.task
    def user(user_id):
        return user_id

    flow.plan()  # planning without inputs is fine: inputs are listed, not required
    with pytest.raises(lf.MissingInputError) as info:
        flow.run()
    assert info.value.task == "user" and info.value.missing == "user_id"
    assert "flow.run({'user_id': ...})" in str(info.value)
    assert isinstance(info.value, lf.MissingDependencyError)


def test_typo_in_parameter_suggests_the_task():
    flow = lf.Flow()

    @flow.task
    def user():
        return 1

    @flow.task
    def profile(usr):
        return usr

    with pytest.raises(lf.MissingInputError, match="Did you mean task 'user'"):
        flow.run()


def test_every_problem_is_reported_at_once():
    flow = lf.Flow("broken")

    @flow.task
    def a(b):
        return 1

    @flow.task
    def b(a):
        return 1

    flow.add(lambda: 1, name="c", after=["nowhere"])
    flow.add(lambda x: x, name="d", inputs={"x": "also_nowhere"})

    with pytest.raises(lf.LayerflowError) as info:
        flow.plan()
    err = info.value
    assert "3 problems in flow 'broken'" in str(err)
    kinds = sorted(type(p).__name__ for p in err.problems)
    assert kinds == ["CycleError", "MissingDependencyError", "MissingDependencyError"]
    assert "nowhere" in str(err) and "also_nowhere" in str(err) and "a -> b -> a" in str(err)


def test_unknown_input_and_input_shadowing_a_task():
    flow = lf.Flow()

    @flow.task
    def user(user_id):
        return user_id

    with pytest.raises(lf.InvalidOptionError, match="'user_idd'.*Did you mean 'user_id'"):
        flow.run({"user_idd": 1, "user_id": 2})
    with pytest.raises(lf.InvalidOptionError, match="same name as a task"):
        flow.run({"user": 1, "user_id": 2})


def test_unknown_output_and_bad_run_options():
    flow = lf.Flow()

    @flow.task
    def a():
        return 1

    with pytest.raises(lf.MissingDependencyError, match="outputs names 'b'"):
        flow.run(outputs=["b"])
    with pytest.raises(lf.InvalidOptionError, match="mode must be one of"):
        flow.run(mode="parallel")
    with pytest.raises(lf.InvalidOptionError, match="max_workers must be"):
        flow.run(max_workers=0)
    with pytest.raises(lf.InvalidOptionError, match="timeout must be"):
        flow.run(timeout=-1)
    with pytest.raises(lf.InvalidOptionError, match="backend must be one of"):
        flow.run(backend="threads")
    with pytest.raises(lf.InvalidOptionError, match="on_event must be a callable"):
        flow.run(on_event="print")


def test_run_result_explains_missing_values():
    flow = lf.Flow()

    @flow.task
    def bad():
        raise ValueError("nope")

    run = flow.run(fail_fast=False)
    with pytest.raises(lf.NoValueError, match="has no value: it failed: ValueError: nope"):
        run["bad"]
    with pytest.raises(KeyError, match="no task 'bda' in this run. Did you mean 'bad'"):
        run["bda"]
    assert run.get("bad", "default") == "default"


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
