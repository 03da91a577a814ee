"""OpenTelemetry spans (LAYERFLOW_OTEL=1, ``layerflow run --otel``), read back through the
SDK's in-memory exporter: one span per run, one per task attempt, client spans nested."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import layerflow as lf

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode  # noqa: E402

EXPORTER = InMemorySpanExporter()
#: subprocesses import this checkout's layerflow, wherever they run
SRC = str(Path(lf.__file__).resolve().parents[1])


def _provider() -> None:
    """The process's one tracer provider (OpenTelemetry allows setting it once)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))


_provider()
CLIENT = trace.get_tracer("a-client-library")


@pytest.fixture
def spans(monkeypatch):
    """Spans on for the test; ``spans()`` gives what was exported, by name."""
    monkeypatch.setenv("LAYERFLOW_OTEL", "1")
    EXPORTER.clear()

    def finished():
        out: dict[str, list] = {}
        for span in EXPORTER.get_finished_spans():
            out.setdefault(span.name, []).append(span)
        return out

    return finished


def _parent(span):
    return span.parent.span_id if span.parent is not None else None


def test_a_span_per_run_and_per_attempt_with_client_spans_nested(spans):
    flow = lf.Flow("otel-demo")
    failed_once = []

    @flow.task
    def fetch():
        with CLIENT.start_as_current_span("http GET"):
            lf.record(tokens=120, cost=0.25)
        return [1, 2]

    @flow.task
    async def ask(fetch):
        await asyncio.sleep(0.01)  # it waits: the span must survive the loop's hand-over
        with CLIENT.start_as_current_span("llm call"):
            lf.usage("llm-tokens", 30)
        return len(fetch)

    @flow.task(retries=1, retry_delay=0)
    def flaky(fetch):
        if not failed_once:
            failed_once.append(1)
            raise ConnectionError("try again")
        return "ok"

    @flow.task(map="fetch")
    def each(fetch):
        with CLIENT.start_as_current_span("element work"):
            pass
        return fetch * 10

    run = flow.run()
    assert run.ok
    got = spans()
    (root,) = got["run otel-demo"]
    assert root.attributes["layerflow.run_id"] == run.run_id
    assert root.attributes["layerflow.status"] == "succeeded"
    assert root.attributes["layerflow.metric.tokens"] == 120
    assert root.attributes["layerflow.metric.llm-tokens"] == 30
    run_span = root.context.span_id

    (fetch_span,) = got["fetch"]
    assert _parent(fetch_span) == run_span
    attrs = fetch_span.attributes
    assert attrs["layerflow.status"] == "succeeded"
    assert attrs["layerflow.attempt"] == 1
    assert attrs["layerflow.layer"] == 0
    assert attrs["layerflow.executor"] == "thread"
    assert attrs["layerflow.metric.tokens"] == 120
    assert attrs["layerflow.metric.cost"] == 0.25
    assert fetch_span.context.trace_id == root.context.trace_id
    (http,) = got["http GET"]
    assert _parent(http) == fetch_span.context.span_id  # the client's span nests in the task's

    (ask_span,) = got["ask"]
    assert ask_span.attributes["layerflow.executor"] == "async"
    assert ask_span.attributes["layerflow.metric.llm-tokens"] == 30
    (llm,) = got["llm call"]
    assert _parent(llm) == ask_span.context.span_id

    first, second = sorted(got["flaky"], key=lambda s: s.attributes["layerflow.attempt"])
    assert first.attributes["layerflow.status"] == "retrying"
    assert first.status.status_code is StatusCode.ERROR
    assert "ConnectionError: try again" in first.status.description
    (event,) = first.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ConnectionError"
    assert second.attributes["layerflow.status"] == "succeeded"
    assert second.attributes["layerflow.attempt"] == 2
    assert second.status.status_code is StatusCode.UNSET

    elements = {name: got[name][0] for name in ("each[0]", "each[1]")}
    work = got["element work"]
    assert len(work) == 2
    assert {_parent(s) for s in work} == {s.context.span_id for s in elements.values()}


def test_a_failed_run_records_the_error_on_both_spans(spans):
    flow = lf.Flow("broken")

    @flow.task
    def boom():
        raise KeyError("missing_key")

    with pytest.raises(lf.TaskFailed):
        flow.run()
    got = spans()
    (task,) = got["boom"]
    assert task.attributes["layerflow.status"] == "failed"
    assert task.status.status_code is StatusCode.ERROR
    assert task.events[0].attributes["exception.type"] == "KeyError"
    (root,) = got["run broken"]
    assert root.attributes["layerflow.status"] == "failed"
    assert root.status.status_code is StatusCode.ERROR
    assert "task 'boom' failed" in root.status.description


def test_the_run_span_nests_under_the_callers_span_and_run_async_works(spans):
    flow = lf.Flow("inner")

    @flow.task
    async def step():
        with CLIENT.start_as_current_span("inside"):
            pass
        return 1

    async def main():
        with CLIENT.start_as_current_span("caller") as caller:
            await flow.run_async()
        return caller

    caller = asyncio.run(main())
    got = spans()
    (root,) = got["run inner"]
    assert _parent(root) == caller.get_span_context().span_id
    (task,) = got["step"]
    assert _parent(task) == root.context.span_id
    assert _parent(got["inside"][0]) == task.context.span_id


def test_waits_on_a_pool_are_attributes(spans):
    flow = lf.Flow("pool")

    def busy():
        time.sleep(0.05)
        lf.record(calls=1)

    for k in range(3):
        flow.add(busy, name=f"gpu_{k}", resources={"gpu": 1})
    run = flow.run(resources={"gpu": 1}, max_workers=3)
    assert run.ok
    got = spans()
    tasks = [got[f"gpu_{k}"][0] for k in range(3)]
    waited = [s for s in tasks if "layerflow.wait.pool.gpu" in s.attributes]
    assert waited, "two of the three waited for the one gpu"
    for span in waited:
        assert span.attributes["layerflow.waited"] >= 0
    assert all(s.attributes["layerflow.metric.calls"] == 1 for s in tasks)


def test_process_tasks_get_a_span_around_the_attempt(spans):
    flow = lf.Flow("procs")
    flow.add(_in_a_process, name="crunch", executor="process")
    run = flow.run()
    assert run.ok and run["crunch"] == 42
    got = spans()
    (span,) = got["crunch"]
    assert span.attributes["layerflow.executor"] == "process"
    assert span.attributes["layerflow.metric.rows"] == 7
    assert _parent(span) == got["run procs"][0].context.span_id
    assert span.end_time > span.start_time


def _in_a_process() -> int:
    lf.record(rows=7)
    return 42


def test_dask_tasks_get_a_span_with_their_metrics(spans, dask_client):
    flow = lf.Flow("on-dask")
    flow.add(lambda: lf.record(tokens=10) or 1, name="remote")
    run = flow.run(backend="dask", client=dask_client)
    assert run.ok
    got = spans()
    (span,) = got["remote"]
    assert span.attributes["layerflow.executor"] == "dask"
    assert span.attributes["layerflow.metric.tokens"] == 10  # they come back at the run's end
    assert _parent(span) == got["run on-dask"][0].context.span_id


def test_a_sequential_run_with_a_store_traces_too(spans, tmp_path):
    flow = lf.Flow("seq")

    @flow.task
    def items():
        return ["a", "b"]

    @flow.task(map="items")
    def shout(items):
        with CLIENT.start_as_current_span("work"):
            return items.upper()

    run = flow.run(mode="sequential", store=tmp_path / "store")
    assert run["shout"] == ["A", "B"]
    got = spans()
    assert got["shout[0]"][0].attributes["layerflow.executor"] == "sequential"
    assert {_parent(s) for s in got["work"]} == {
        got["shout[0]"][0].context.span_id,
        got["shout[1]"][0].context.span_id,
    }


def test_off_by_default_and_off_with_0(spans, monkeypatch):
    flow = lf.Flow("quiet")
    flow.add(lambda: 1, name="one")
    monkeypatch.delenv("LAYERFLOW_OTEL")
    flow.run()
    monkeypatch.setenv("LAYERFLOW_OTEL", "0")
    flow.run()
    assert spans() == {}


def test_a_value_it_does_not_understand_is_an_error(monkeypatch):
    monkeypatch.setenv("LAYERFLOW_OTEL", "maybe")
    flow = lf.Flow()
    flow.add(lambda: 1, name="one")
    with pytest.raises(lf.LayerflowError, match="LAYERFLOW_OTEL='maybe'.*1 for OpenTelemetry"):
        flow.run()


FLOW_WITH_PROVIDER = """
import atexit, json, os
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import layerflow as lf

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

@atexit.register
def dump():
    spans = exporter.get_finished_spans()
    spans = [{"name": s.name, "attributes": dict(s.attributes)} for s in spans]
    with open(os.environ["SPANS_TO"], "w") as f:
        json.dump(spans, f)

flow = lf.Flow("cli")

@flow.task
def hello():
    lf.record(tokens=3)
    return "hi"
"""


def test_the_cli_flag_turns_spans_on(tmp_path):
    (tmp_path / "traced.py").write_text(FLOW_WITH_PROVIDER)
    out = tmp_path / "spans.json"
    env = {**os.environ, "SPANS_TO": str(out), "PYTHONPATH": SRC}
    env.pop("LAYERFLOW_OTEL", None)
    done = subprocess.run(
        [sys.executable, "-m", "layerflow", "run", "traced:flow", "--otel", "--no-store", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    spans = {s["name"]: s["attributes"] for s in json.loads(out.read_text())}
    assert spans["hello"]["layerflow.metric.tokens"] == 3
    assert spans["run cli"]["layerflow.status"] == "succeeded"
    done = subprocess.run(  # the same without --otel: no spans
        [sys.executable, "-m", "layerflow", "run", "traced:flow", "--no-store", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == []


def test_without_a_provider_the_run_warns_and_runs(tmp_path):
    script = textwrap.dedent(
        """
        import layerflow as lf
        flow = lf.Flow()
        flow.add(lambda: 5, name="five")
        print(flow.run()["five"])
        """
    )
    env = {**os.environ, "LAYERFLOW_OTEL": "1", "PYTHONPATH": SRC}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"
    assert "no OpenTelemetry tracer provider is configured" in done.stderr


def test_the_cli_flag_without_opentelemetry_says_what_to_install(tmp_path):
    (tmp_path / "p.yaml").write_text("name: p\nsteps:\n  - {name: a, run: 'echo hi'}\n")
    script = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from layerflow.cli import main\n"
        "sys.argv = ['layerflow', 'run', 'p.yaml', '--otel', '--no-store']\n"
        "main()\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "pip install 'layerflow[otel]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_off_nothing_of_opentelemetry_is_imported():
    script = textwrap.dedent(
        """
        import sys, layerflow as lf
        flow = lf.Flow()
        flow.add(lambda: 5, name="five")
        async def six():
            return 6
        flow.add(six, name="six")
        assert flow.run().ok
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        """
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    env.pop("LAYERFLOW_OTEL", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
