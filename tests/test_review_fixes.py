"""Bugs found in the second review (store, limits, pipelines, CLI), pinned by tests."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import layerflow as lf


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


def test_fail_fast_starts_nothing_after_the_first_failure():
    started = []

    async def bad():
        await asyncio.sleep(0.1)
        raise ValueError("first failure")

    async def slow():
        started.append("slow")
        await asyncio.sleep(1)

    async def later():
        started.append("later")
        return 2

    flow = lf.Flow()
    flow.add(bad, priority=3)
    flow.add(slow, priority=2)
    flow.add(later, priority=1)
    with pytest.raises(lf.TaskFailed) as info:
        flow.run(max_workers=2)
    assert "later" not in started
    assert info.value.result.tasks["later"].status == "cancelled"


def test_no_checkpoint_question_after_a_fail_fast_failure():
    asked = []
    flow = lf.Flow()
    flow.add(lambda: (_ for _ in ()).throw(ValueError("x")), name="a")
    flow.add(lambda a: 1, name="b")
    with pytest.raises(lf.TaskFailed):
        flow.run(checkpoint=lambda report: asked.append(report) or True)
    assert asked == []


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


def test_one_pipeline_does_not_stop_another_pipelines_commands(tmp_path):
    long = tmp_path / "long.yaml"
    long.write_text("steps:\n  - {name: wait, run: \"sh -c 'sleep 1; echo done'\"}\n")
    short = tmp_path / "short.yaml"
    short.write_text('steps:\n  - {name: quick, run: "echo quick"}\n')
    out = {}
    slow = threading.Thread(target=lambda: out.update(lf.load_pipeline(long).run().values))
    slow.start()
    time.sleep(0.3)
    assert lf.load_pipeline(short).run()["quick"] == "quick"
    slow.join()
    assert out == {"wait": "done"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('steps:\n  - {name: a, run: "echo \'hi"}\n', "cannot be split"),
        ('steps:\n  - {name: a, run: "  "}\n', "the command is empty"),
        (
            'steps:\n  - {name: a, uses: "textwrap:indent", text: "{{steps.nope.output}}", '
            'prefix: "> "}\n',
            "no step named 'nope'",
        ),
    ],
)
def test_bad_steps_are_load_time_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(lf.PipelineError, match=message) as info:
        lf.load_pipeline(path)
    assert f"{path}:" in str(info.value)


def test_bad_input_never_shows_a_traceback(tmp_path):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "layerflow", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )

    (tmp_path / "latin.yaml").write_bytes(
        "steps:\n  - {name: caf\xe9, run: 'echo'}\n".encode("latin-1")
    )
    (tmp_path / "broken_module.py").write_text("1 / 0\n")
    (tmp_path / "cost.yaml").write_text(
        "settings: {rate_limits: {api: '5/s'}}\n"
        "steps:\n  - {name: a, run: 'echo a', rate_limit: {api: x}}\n"
    )
    for args in (("run", "latin.yaml"), ("run", "broken_module:flow"), ("run", "cost.yaml")):
        out = cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr, out.stderr


def test_set_values_are_not_yaml_1_1(tmp_path):
    (tmp_path / "echo.yaml").write_text(
        textwrap.dedent(
            """
            steps:
              - {name: shown, run: "echo {{inputs.a}} {{inputs.b}} {{inputs.c}} {{inputs.d}}"}
            """
        )
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "layerflow",
            "run",
            "echo.yaml",
            "--json",
            "-q",
            "--no-store",
            "--set",
            "a=01234",
            "--set",
            "b=yes",
            "--set",
            "c=12:30",
            "--set",
            "d=7",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    import json

    assert json.loads(out.stdout)["tasks"]["shown"]["output"] == "01234 yes 12:30 7"


def test_cache_on_a_map_task(tmp_path):
    calls = []
    flow = lf.Flow("mapcache")

    @flow.task
    def items():
        return [1, 2, 3]

    @flow.task(map="items", cache=True)
    def sq(items):
        calls.append(items)
        return items * items

    assert flow.run(store=tmp_path)["sq"] == [1, 4, 9]
    run = flow.run(store=tmp_path)
    assert run["sq"] == [1, 4, 9] and run.tasks["sq"].status == "cached"
    assert sorted(calls) == [1, 2, 3]  # not computed again


def test_unnamed_flows_resume_their_own_runs(tmp_path):
    one, two = lf.Flow(), lf.Flow()
    one.add(lambda: (_ for _ in ()).throw(ValueError("x")), name="fails")
    two.add(lambda: 2, name="other")
    with pytest.raises(lf.TaskFailed):
        one.run(store=tmp_path)
    run = two.run(store=tmp_path, resume=True)  # nothing of 'one' to resume here
    assert run.tasks["other"].status == "succeeded"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "steps:\n  - {type: parallel_group, name: g, steps: [{name: a, run: 'echo a'}]}\n"
            "  - {type: parallel_group, name: g, steps: [{name: b, run: 'echo b'}]}\n",
            "two parallel_groups are named 'g'",
        ),
        ("steps:\n  - {name: 123, run: 'echo a'}\n", "a step's name must be text"),
    ],
)
def test_more_load_time_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(lf.PipelineError, match=message):
        lf.load_pipeline(path)


def test_a_missing_cwd_is_named(tmp_path):
    path = tmp_path / "cwd.yaml"
    path.write_text("steps:\n  - {name: a, run: 'echo a', cwd: nowhere}\n")
    run = lf.load_pipeline(path).run(fail_fast=False)
    assert "cwd" in str(run.tasks["a"].error) and "not a folder" in str(run.tasks["a"].error)


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


def test_fail_fast_stops_running_shell_steps(tmp_path):
    path = tmp_path / "ff.yaml"
    path.write_text(
        "steps:\n"
        "  - type: parallel_group\n"
        "    name: g\n"
        "    steps:\n"
        "      - {name: bad, run: \"sh -c 'sleep 0.3; exit 1'\"}\n"
        '      - {name: slow, run: "sleep 20"}\n'
    )
    pipeline = lf.load_pipeline(path)
    t0 = time.monotonic()
    with pytest.raises(lf.TaskFailed) as info:
        pipeline.run()
    assert time.monotonic() - t0 < 10
    assert info.value.task == "bad"
    assert info.value.result.tasks["slow"].status == "cancelled"
    # the same pipeline runs again normally afterwards
    path.write_text("steps:\n  - {name: ok, run: 'echo fine'}\n")
    assert lf.load_pipeline(path).run()["ok"] == "fine"
