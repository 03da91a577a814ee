"""A fault in a thread the run owns fails the run with a message naming the thread; it never
hangs it. And a user's file named after a standard module does not replace that module."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import layerflow as lf
from layerflow import faults


def finishes(call, seconds: float = 60.0):
    """``call()`` in a thread: its result or exception, failing the test if it hangs."""
    box: dict[str, object] = {}

    def body():
        try:
            box["value"] = call()
        except BaseException as e:  # noqa: BLE001 (handed to the test)
            box["error"] = e

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the run hung"
    return box


def two_layers() -> lf.Flow:
    flow = lf.Flow("faults")

    @flow.task
    def a():
        time.sleep(0.3)  # the fault lands while the run is going
        return 1

    @flow.task
    def b(a):
        return a + 1

    return flow


def coroutines() -> lf.Flow:
    flow = lf.Flow("faults-async")

    @flow.task
    async def a():
        await asyncio.sleep(0.3)
        return 1

    return flow


RUNS = {
    "worker": (two_layers, {}),
    "timer": (two_layers, {"timeout": 30}),
    "checkpoint": (two_layers, {"checkpoint": lambda report: True}),
    "events": (two_layers, {"on_event": lambda event: None}),
    "process feeder": (two_layers, {"backend": "process"}),
    "async loop": (coroutines, {}),
}


@pytest.fixture
def inject():
    def put(where: str) -> None:
        faults.INJECT[where] = RuntimeError(f"injected into {where}")

    yield put
    faults.INJECT.clear()


@pytest.mark.parametrize("where", [*RUNS, "store"])
def test_a_fault_in_a_thread_of_the_run_fails_it_naming_the_thread(where, inject, tmp_path):
    make, options = RUNS.get(where, (two_layers, {}))
    if where == "store":
        options = {"store": tmp_path / "runs.db"}
    inject(where)
    box = finishes(lambda: make().run(progress=False, **options))
    error = box.get("error")
    assert isinstance(error, lf.LayerflowError), box
    assert f"layerflow's {where} thread failed" in str(error), error
    assert f"injected into {where}" in str(error)


def test_a_fault_in_the_dask_submitter_fails_the_run(inject, dask_client):
    inject("dask submit")
    box = finishes(lambda: two_layers().run(backend="dask", client=dask_client, progress=False))
    error = box.get("error")
    assert isinstance(error, lf.TaskFailed), box
    assert "layerflow's dask submit thread failed" in str(error)


def two_async_layers() -> lf.Flow:
    flow = lf.Flow("faults-async-layers")

    @flow.task
    async def a():
        await asyncio.sleep(0.3)
        return 1

    @flow.task
    async def b(a):
        return a + 1

    return flow


#: the threads of every run (timer, store writer, checkpoint caller, event deliverer), and
#: each backend's own: process feeders, the event loop, the Dask submitter, the Dask
#: callbacks and the fetches of Dask values (the last two on threads Dask owns)
COMMON = ["timer", "checkpoint", "events", "store"]
OWN = {
    "process": ["process feeder"],
    "async": ["async loop"],
    "dask": ["dask submit", "dask callback", "dask fetch"],
}


def _options(where: str, tmp_path: Path) -> dict:
    return {
        "timer": {"timeout": 30},
        "checkpoint": {"checkpoint": lambda report: True},
        "events": {"on_event": lambda event: None},
        "store": {"store": tmp_path / "runs.db"},
    }.get(where, {})


@pytest.mark.parametrize(
    ("backend", "where"),
    [(b, w) for b in ("process", "async", "dask") for w in [*OWN[b], *COMMON]],
)
def test_a_fault_in_a_thread_of_the_run_fails_it_on_every_backend(
    backend, where, inject, tmp_path, request
):
    options = _options(where, tmp_path)
    if backend == "dask":
        options["client"] = request.getfixturevalue("dask_client")
    make = two_async_layers if backend == "async" else two_layers
    inject(where)
    box = finishes(lambda: make().run(progress=False, backend=backend, **options))
    error = box.get("error")
    assert isinstance(error, lf.LayerflowError), box  # (an InternalError before it began)
    assert f"layerflow's {where} thread failed" in str(error), error
    assert f"injected into {where}" in str(error)
    if isinstance(error, lf.TaskFailed):  # no task left running or waiting
        statuses = {t.status for t in error.result.tasks.values()}
        assert statuses <= {"succeeded", "failed", "cancelled"}, statuses


def test_the_run_keeps_what_finished_before_the_fault(inject, tmp_path):
    # the timer starts with the first deadline, after a has finished
    flow = lf.Flow("late-fault")

    @flow.task
    def a():
        return 1

    @flow.task(timeout=30)
    def b(a):
        time.sleep(0.3)  # the fault lands while it runs
        return a + 1

    inject("timer")
    box = finishes(lambda: flow.run(progress=False, store=tmp_path / "runs.db"))
    error = box["error"]
    assert isinstance(error, lf.TaskFailed)
    assert error.result.tasks["a"].status == "succeeded"
    assert error.result.status == "failed"


def test_a_run_after_a_fault_works(inject):
    inject("worker")
    finishes(lambda: two_layers().run(progress=False))
    faults.INJECT.clear()
    assert two_layers().run(progress=False)["b"] == 2


SHADOW = """
import layerflow as lf

flow = lf.Flow("shadow")


@flow.task
def a():
    return 1


@flow.task
def b(a):
    return a + 1
"""


@pytest.mark.parametrize("backend", ["thread", "process"])
@pytest.mark.parametrize("target", ["queue.py:flow", "queue:flow", "cloudpickle.py:flow"])
def test_a_file_named_after_a_module_layerflow_uses_runs_and_does_not_replace_it(
    tmp_path, target, backend
):
    # layerflow's store thread imports queue: with the user's queue.py in its place it hung;
    # a cloudpickle.py (installed, imported later for the process backend) broke that too
    (tmp_path / f"{target.partition(':')[0].removesuffix('.py')}.py").write_text(
        textwrap.dedent(SHADOW)
    )
    # the installed command, as a user runs it (``python -m`` would put this folder first)
    script = Path(sys.executable).parent / "layerflow"
    command = [str(script), "run", target, "--backend", backend]
    command += ["--store", str(tmp_path / "runs.db")]
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "b = 2" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_shadowing_file_does_not_shadow_the_module_in_this_process(tmp_path, monkeypatch):
    import queue

    (tmp_path / "queue.py").write_text(textwrap.dedent(SHADOW))
    from layerflow.targets import load_flow

    flow = load_flow(f"{tmp_path / 'queue.py'}:flow")
    assert sys.modules["queue"] is queue
    assert Path(sys.path[0]) != tmp_path
    assert flow.run(progress=False, store=tmp_path / "runs.db")["b"] == 2


def test_a_dead_store_writer_leaves_no_task_running(inject, tmp_path):
    # results (and a map's empty list) waiting for a writer that died are cancelled, with
    # their events, instead of staying "running" in a run that has ended
    flow = lf.Flow("dead-writer")
    flow.add(lambda: [], name="nothing")
    flow.add(lambda nothing: nothing, name="each", map="nothing")
    flow.add(lambda: time.sleep(0.3) or 1, name="slow")
    events: list[tuple[str, str | None]] = []
    inject("store")
    box = finishes(
        lambda: flow.run(
            store=tmp_path / "runs.db",
            on_event=lambda e: events.append((e.kind, e.task)),
            progress=False,
        )
    )
    result = box["error"].result  # type: ignore[union-attr]
    statuses = {name: t.status for name, t in result.tasks.items()}
    assert "running" not in statuses.values() and "pending" not in statuses.values(), statuses
    ended = {task for kind, task in events if kind in ("task_succeeded", "task_cancelled")}
    assert {"nothing", "each", "slow"} <= ended | {n for n, s in statuses.items() if s == "failed"}
