"""lf.record: numbers a task attaches to its record, on every backend, summed by the run,
and shown by the summary, --json, the trace, the HTML report and `layerflow runs`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import layerflow as lf

BACKENDS = ["thread", "process", "async", "sequential", "dask"]


def tokens(n: int):
    def call():
        import layerflow  # a process worker imports it here, with the task

        layerflow.record(tokens=n, calls=1)
        layerflow.record(tokens=1)  # recording a name again adds to it
        return n

    return call


async def async_tokens():
    lf.record(tokens=5, calls=1)
    return 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_record_attaches_numbers_on_every_backend(backend, request):
    flow = lf.Flow()
    flow.add(tokens(10), name="first")
    flow.add(tokens(20), name="second")
    flow.add(async_tokens, name="coro")
    options: dict = {}
    if backend == "sequential":
        options["mode"] = "sequential"
    elif backend == "dask":
        options.update(backend="dask", client=request.getfixturevalue("dask_client"))
    elif backend == "process":
        options["backend"] = "process"
    run = flow.run(**options)
    assert run.tasks["first"].metrics == {"tokens": 11, "calls": 1}
    assert run.tasks["second"].metrics == {"tokens": 21, "calls": 1}
    assert run.tasks["coro"].metrics == {"tokens": 5, "calls": 1}
    assert run.metrics == {"tokens": 37, "calls": 3}


def test_attempts_add_up_and_failed_tasks_are_told_apart(tmp_path):
    marker = tmp_path / "tries"

    def flaky():
        lf.record(calls=1)
        with open(marker, "a") as f:
            f.write("x")
        if len(marker.read_text()) < 2:
            raise ConnectionError("429")
        lf.record(tokens=100)
        return "ok"

    def broken():
        lf.record(calls=1, failed_calls=1)
        raise ValueError("bad answer")

    flow = lf.Flow()
    flow.add(flaky, retries=1)
    flow.add(broken)
    run = flow.run(fail_fast=False)
    assert run.tasks["flaky"].metrics == {"calls": 2, "tokens": 100}
    assert run.tasks["broken"].metrics == {"calls": 1, "failed_calls": 1}
    assert run.metrics == {"calls": 3, "tokens": 100, "failed_calls": 1}
    summary = run.summary()
    assert "metrics: calls=3, tokens=100, failed_calls=1" in summary
    assert "(of which in failed tasks: calls=1, failed_calls=1)" in summary


def test_parallel_map_items_count_for_the_calling_task():
    def ask(prompt):
        lf.record(tokens=len(prompt))
        return prompt.upper()

    flow = lf.Flow()
    flow.add(lambda: lf.parallel_map(ask, ["ab", "cde"], max_workers=2), name="batch")
    run = flow.run()
    assert run["batch"] == ["AB", "CDE"]
    assert run.tasks["batch"].metrics == {"tokens": 5}


def test_record_outside_a_task_does_nothing_and_bad_numbers_are_refused():
    lf.record(tokens=1)  # a unit test calling the task's function itself
    with pytest.raises(lf.InvalidOptionError, match="tokens=.*finite number.*'many'"):
        lf.record(tokens="many")
    with pytest.raises(lf.InvalidOptionError, match="finite number"):
        lf.record(cost=float("nan"))


def test_the_trace_the_report_and_the_store_show_metrics(tmp_path):
    flow = lf.Flow("metered")
    flow.add(tokens(7), name="llm")
    run = flow.run(store=tmp_path / "store")
    trace = tmp_path / "t.json"
    run.to_chrome_trace(trace)
    events = [e for e in json.loads(trace.read_text())["traceEvents"] if e.get("ph") == "X"]
    assert events[0]["args"]["metrics"] == {"tokens": 8, "calls": 1}
    page = tmp_path / "r.html"
    run.to_html(page)
    text = page.read_text()
    assert "Metrics" in text and "tokens=8, calls=1" in text
    stored = lf.store.Store(tmp_path / "store").load_run(run.run_id)
    assert stored.tasks["llm"].metrics == {"tokens": 8, "calls": 1}
    assert stored.metrics == {"tokens": 8, "calls": 1}


def test_the_command_line_shows_metrics(tmp_path):
    (tmp_path / "meter.py").write_text(
        textwrap.dedent(
            """
            import layerflow as lf

            def ask(prompt):
                lf.record(tokens=len(prompt), cost_usd=0.25)
                return prompt
            """
        )
    )
    path = tmp_path / "p.yaml"
    path.write_text(
        'name: meter\nsteps:\n  - {name: ask, uses: "meter:ask", params: {prompt: hello}}\n'
    )

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "layerflow", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )

    out = cli("run", str(path))
    assert out.returncode == 0, out.stderr
    assert "metrics: tokens=5, cost_usd=0.25" in out.stdout
    data = json.loads(cli("run", str(path), "--json").stdout)
    assert data["metrics"] == {"tokens": 5, "cost_usd": 0.25}
    assert data["tasks"]["ask"]["metrics"] == {"tokens": 5, "cost_usd": 0.25}
    listing = cli("runs").stdout
    assert "tokens=5, cost_usd=0.25" in listing
