"""Declaring flows: the decorator, add, dependency inference and task options."""

from __future__ import annotations

import pytest

import layerflow as lf


def test_decorator_bare_and_with_options_and_task_stays_callable():
    flow = lf.Flow("f")

    @flow.task
    def a():
        return 1

    @flow.task(retries=2, timeout=5.0, priority=3)
    def b(a):
        return a + 1

    assert isinstance(a, lf.Task) and a.name == "a"
    assert b.retries == 2 and b.timeout == 5.0 and b.priority == 3
    assert b(41) == 42  # the Task calls the plain function
    assert [t.name for t in flow.tasks] == ["a", "b"]
    assert flow["b"] is b and "a" in flow and len(flow) == 2
    assert flow.run()["b"] == 2


def test_add_same_function_many_times_under_different_names():
    flow = lf.Flow()

    def chunk(i):
        return i * 10

    for k in range(5):
        flow.add(chunk, name=f"chunk_{k}", params={"i": k})

    def total(**chunks):
        return sum(chunks.values())

    flow.add(total, inputs={f"c{k}": f"chunk_{k}" for k in range(5)})
    run = flow.run()
    assert run["total"] == 100
    assert [run[f"chunk_{k}"] for k in range(5)] == [0, 10, 20, 30, 40]


def test_one_function_added_many_times_keeps_each_tasks_own_options():
    flow = lf.Flow()

    @flow.task
    def x():
        return 5

    def step(x, scale=1):
        return x * scale

    # the function is read once; each task still gets, and checks, its own options
    plain = [flow.add(step, name=f"plain_{k}") for k in range(3)]
    scaled = [flow.add(step, name=f"scaled_{k}", params={"scale": k}) for k in range(3)]
    given = flow.add(step, name="given", params={"x": 2}, retries=2, priority=-1)
    renamed = flow.add(step, name="renamed", inputs={"x": "plain_0"}, retry_on=KeyError)
    with pytest.raises(lf.InvalidOptionError, match="'bad': retries must be an int >= 0"):
        flow.add(step, name="bad", retries=-1)
    with pytest.raises(lf.InvalidOptionError, match="params names 'nope'"):
        flow.add(step, name="bad", params={"nope": 1})

    assert [t.free_params for t in plain + scaled] == [("x", "scale")] * 3 + [("x",)] * 3
    assert (given.free_params, renamed.free_params) == (("scale",), ("scale",))
    assert [t.params for t in scaled] == [{"scale": k} for k in range(3)]
    assert (given.retries, given.priority, plain[0].retries, plain[0].priority) == (2, -1, 0, 0)
    assert (renamed.retry_on, plain[0].retry_on) == ((KeyError,), (Exception,))
    assert all(t.signature is step_task.signature for t in plain for step_task in scaled)
    assert flow.plan().dependencies("renamed") == ["plain_0"]
    run = flow.run()
    assert [run[f"plain_{k}"] for k in range(3)] == [5, 5, 5]
    assert [run[f"scaled_{k}"] for k in range(3)] == [0, 5, 10]
    assert (run["given"], run["renamed"]) == (2, 5)


def test_a_task_added_without_options_is_the_same_as_one_made_the_long_way():
    from layerflow.graph import Task

    async def fetch(url: str) -> str:
        return url

    for fn in (plain_noop, fetch):
        flow = lf.Flow("quick")
        quick = flow.add(fn, name="a")  # its options set when one is first read
        made = Task(fn, name="a")
        assert {s: getattr(quick, s) for s in Task.__slots__} == {
            s: getattr(made, s) for s in Task.__slots__
        }
    flow = lf.Flow("quick")
    task = flow.add(plain_noop, name="a")
    assert task.is_coroutine is False and not hasattr(task, "no_such_option")
    with pytest.raises(lf.DuplicateTaskError):
        flow.add(plain_noop, name="a")
    assert flow.run()["a"] == 1


def test_a_task_kept_by_the_caller_is_the_flows_and_a_dropped_one_is_made_again_alike():
    from layerflow.graph import Task

    flow = lf.Flow("big")
    for k in range(3):
        flow.add(plain_noop, name=f"dropped_{k}")  # a big flow's loop keeps no Task
    kept = flow.add(plain_noop, name="kept")
    also = [flow.add(plain_noop, name=f"listed_{k}") for k in range(2)]
    flow.add(plain_noop, name="last")

    def after(dropped_1):  # a parameter that names a task added before
        return dropped_1 + 1

    follow = flow.add(after, name="after")
    assert flow["kept"] is kept and [flow[f"listed_{k}"] for k in range(2)] == also
    assert flow["after"] is follow
    remade = flow["dropped_0"]
    assert isinstance(remade, Task) and (remade.name, remade.fn) == ("dropped_0", plain_noop)
    assert flow["dropped_0"] is remade  # made once, then kept
    assert [t.name for t in flow] == [
        *(f"dropped_{k}" for k in range(3)),
        "kept",
        "listed_0",
        "listed_1",
        "last",
        "after",
    ]
    assert len(flow) == 8 and "last" in flow
    with pytest.raises(lf.DuplicateTaskError, match="'dropped_2'"):
        flow.add(plain_noop, name="dropped_2")
    run = flow.run()
    assert run["after"] == 2 and run["last"] == 1 and run.ok
    assert flow.plan().dependencies("after") == ["dropped_1"]


def test_a_redefined_function_partials_and_callable_objects_are_read_each_for_itself():
    import functools

    flow = lf.Flow()

    @flow.task
    def a():
        return 1

    @flow.task
    def b():
        return 10

    def step(a):
        return a

    flow.add(step, name="first")

    def step(b):  # noqa: F811  (a new function object under the same name)
        return b

    flow.add(step, name="second")

    def add(x, y):
        return x + y

    # a partial's signature follows the arguments it binds: each is read for itself
    flow.add(functools.partial(add, 100), name="partial_x", inputs={"y": "a"})
    flow.add(functools.partial(add, y=200), name="partial_y", inputs={"x": "b"})
    bound = functools.partial(add, 1)
    flow.add(bound, name="bound_1", params={"y": 1})
    bound.keywords["y"] = 2  # a partial may change after it was added: read again
    assert not flow.add(bound, name="bound_2").signature.required  # y has a default now

    class Scale:
        __slots__ = ("k",)  # no __weakref__: such a callable is read each time

        def __init__(self, k):
            self.k = k

        def __call__(self, a):
            return a * self.k

        def times(self, b):
            return b * self.k

    for k in range(3):
        flow.add(Scale(k), name=f"scale_{k}")
        flow.add(Scale(k).times, name=f"times_{k}")
    flow.add(Scale.times, name="unbound", params={"self": Scale(7), "b": 1})

    run = flow.run()
    assert (run["first"], run["second"]) == (1, 10)
    assert (run["partial_x"], run["partial_y"]) == (101, 210)
    assert (run["bound_1"], run["bound_2"]) == (2, 3)
    assert [run[f"scale_{k}"] for k in range(3)] == [0, 1, 2]
    assert [run[f"times_{k}"] for k in range(3)] == [0, 10, 20]
    assert run["unbound"] == 7


def test_inference_parameters_tasks_inputs_and_defaults():
    flow = lf.Flow()

    @flow.task
    def user(user_id):
        return {"id": user_id}

    @flow.task
    def greeting(user, greeting_word="hello", punctuation="!"):
        return f"{greeting_word} {user['id']}{punctuation}"

    run = flow.run({"user_id": "42", "punctuation": "?"})
    assert run["greeting"] == "hello 42?"  # default kept, input given, task value passed
    assert flow.plan().inputs == ["user_id"]


def test_tasks_may_be_declared_in_any_order():
    flow = lf.Flow()

    @flow.task
    def c(b):
        return b + "c"

    @flow.task
    def b(a):
        return a + "b"

    @flow.task
    def a():
        return "a"

    assert flow.plan().layers == [["a"], ["b"], ["c"]]
    assert flow.run()["c"] == "abc"


def test_params_inputs_renaming_and_after():
    flow = lf.Flow()
    events = []

    @flow.task
    def setup():
        events.append("setup")

    @flow.task
    def numbers():
        return [1, 2, 3]

    @flow.task(inputs={"values": "numbers"}, params={"scale": 10}, after=["setup"])
    def scaled(values, scale):
        events.append("scaled")
        return [v * scale for v in values]

    @flow.task(inputs={"data": scaled})  # a Task object works as a reference too
    def report(**kwargs):
        return kwargs

    run = flow.run()
    assert run["scaled"] == [10, 20, 30]
    assert run["report"] == {"data": [10, 20, 30]}  # **kwargs receives the mapped names
    assert events == ["setup", "scaled"]
    assert flow.plan().dependencies("scaled") == ["numbers", "setup"]


def test_after_passes_no_value():
    flow = lf.Flow()

    @flow.task
    def first():
        return "ignored"

    @flow.task(after="first")
    def second():
        return "ok"

    assert flow.run()["second"] == "ok"
    assert flow.plan().layers == [["first"], ["second"]]


def test_positional_only_parameters_are_passed_positionally():
    flow = lf.Flow()

    @flow.task
    def a():
        return 2

    def power(a, /, exponent=3):
        return a**exponent

    flow.add(power)
    assert flow.run()["power"] == 8


def test_async_function_runs():
    flow = lf.Flow()

    @flow.task
    async def fetch(x):
        import asyncio

        await asyncio.sleep(0.01)
        return x * 2

    @flow.task
    def use(fetch):
        return fetch + 1

    assert flow.run({"x": 4})["use"] == 9


def test_run_async_from_a_coroutine():
    import asyncio

    flow = lf.Flow()

    @flow.task
    def a():
        return 1

    async def main():
        return await flow.run_async(max_workers=2)

    assert asyncio.run(main())["a"] == 1


def test_duplicate_name_is_refused_at_add():
    flow = lf.Flow("dup")

    @flow.task
    def a():
        return 1

    with pytest.raises(lf.DuplicateTaskError, match="already has a task named 'a'"):
        flow.add(lambda: 2, name="a")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -1}, "retries must be an int >= 0"),
        ({"retries": 1.5}, "retries must be an int >= 0"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"timeout": "5"}, "timeout must be a number of seconds > 0"),
        ({"retry_delay": -1}, "retry_delay must be a number of seconds >= 0"),
        ({"retry_on": "ValueError"}, "retry_on must be an exception type"),
        ({"priority": "high"}, "priority must be an int"),
        ({"executor": "gpu"}, "executor must be one of"),
        ({"params": {"nope": 1}}, "params names 'nope'"),
        ({"inputs": {"nope": "a"}}, "inputs maps parameter 'nope'"),
        ({"after": [3]}, "after must name a task"),
        ({"cache": "yes"}, "cache must be True or False"),
        ({"executor": "dusk"}, "executor must be one of thread, process, async, dask"),
        ({"retires": 2}, "unknown option 'retires'. Did you mean 'retries'"),
    ],
)
def test_invalid_options_are_named_with_the_task(options, message):
    flow = lf.Flow()

    def step(x):
        return x

    with pytest.raises(lf.InvalidOptionError, match=message) as info:
        flow.add(step, **options)
    assert "'step'" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_non_callable_and_nameless_tasks():
    flow = lf.Flow()
    with pytest.raises(lf.InvalidOptionError, match="expected a function, got int"):
        flow.add(42, name="answer")
    with pytest.raises(lf.InvalidOptionError, match="no usable name"):
        flow.add(lambda: 1)
    assert flow.add(lambda: 1, name="one").name == "one"


def plain_noop(x: int = 1) -> int:
    return x


def test_positional_only_parameters_keep_their_defaults_in_place():
    flow = lf.Flow()

    @flow.task
    def b():
        return "B"

    def c(a="default-a", b="default-b", /):
        return (a, b)

    flow.add(c)
    assert flow.run()["c"] == ("default-a", "B")


def test_bad_params_and_after_values_name_the_task():
    flow = lf.Flow()
    with pytest.raises(lf.InvalidOptionError, match="'t'.*params must be a mapping"):
        flow.add(lambda: 1, name="t", params=5)
    with pytest.raises(lf.InvalidOptionError, match="'t'.*after must be"):
        flow.add(lambda: 1, name="t", after=5)
