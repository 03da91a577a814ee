"""The process backend's worker (``backends/_worker.py``): a light start, and what crosses
the pipe both ways."""

from __future__ import annotations

import time

import layerflow as lf

PROBE = """
import sys
import time

def loaded():
    return sorted(m for m in ("asyncio", "cloudpickle", "multiprocessing") if m in sys.modules)

def echo(data):
    return data

async def coro(x):
    import asyncio
    await asyncio.sleep(0)
    return x + 1
"""


def _probe(tmp_path, monkeypatch):
    (tmp_path / "lf_probe.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import lf_probe

    return lf_probe


def test_a_worker_imports_neither_asyncio_nor_cloudpickle_for_a_plain_function(
    tmp_path, monkeypatch
):
    probe = _probe(tmp_path, monkeypatch)
    flow = lf.Flow()
    flow.add(probe.loaded, executor="process")
    assert flow.run()["loaded"] == []


def test_a_coroutine_function_still_runs_in_a_worker(tmp_path, monkeypatch):
    probe = _probe(tmp_path, monkeypatch)
    flow = lf.Flow()
    flow.add(probe.coro, executor="process", params={"x": 41})
    assert flow.run()["coro"] == 42


def test_large_calls_and_results_cross_whole(tmp_path, monkeypatch):
    probe = _probe(tmp_path, monkeypatch)
    flow = lf.Flow()
    for size in (0, 100, 16_384, 16_385, 3_000_000):
        data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        flow.add(probe.echo, name=f"echo{size}", executor="process", params={"data": data})
    run = flow.run()
    for size in (0, 100, 16_384, 16_385, 3_000_000):
        assert len(run[f"echo{size}"]) == size
    assert run["echo3000000"][:256] == bytes(range(256))


def test_a_result_only_cloudpickle_can_send_comes_back():
    def make():
        scale = 3

        class Local:  # defined in the worker: plain pickle cannot send it
            def __init__(self):
                self.f = lambda x: x * scale

        return Local()

    flow = lf.Flow()
    flow.add(make, executor="process")
    assert flow.run()["make"].f(2) == 6


# --- a cold worker process: the clock starts when the call does (#29.9) ------------------


def stamp(items):
    import time

    return time.monotonic()  # one clock for every process of this machine


def test_a_timeout_counts_from_when_the_call_begins_not_the_cold_start():
    # six workers start at once (40-225 ms each on a loaded machine): a 50 ms timeout
    # failed tasks that never began running
    flow = lf.Flow("cold-start")
    flow.add(lambda: list(range(6)), name="items", executor="thread")
    flow.add(loaded_item, name="each", map="items", timeout=0.05)
    run = flow.run(backend="process", max_workers=6, fail_fast=False, progress=False)
    assert run.ok, [t.error for t in run.tasks.values() if t.error]
    assert run["each"] == list(range(6))


def loaded_item(items):
    return items


def test_a_rate_limit_holds_where_the_calls_run():
    # the limit was charged at admission; cold workers then began later, all at once
    flow = lf.Flow("cold-rate")
    flow.add(lambda: list(range(6)), name="items", executor="thread")
    flow.add(stamp, name="stamp", map="items", rate_limit="api")
    run = flow.run(backend="process", max_workers=6, rate_limits={"api": "2/0.3s"}, progress=False)
    calls = sorted(run["stamp"])
    # at most 2 calls in any 0.25 s (0.05 s of slack for a process's scheduling jitter)
    assert max(sum(1 for u in calls if t <= u < t + 0.25) for t in calls) <= 2, calls


def test_a_worker_stuck_before_the_call_still_times_out(tmp_path, monkeypatch):
    # the timeout is armed when the call begins; a worker that never gets there (a module
    # that blocks as the worker imports it) must still end the attempt, not hang the run
    import textwrap

    from layerflow.scheduler import transitions

    (tmp_path / "stuck_module.py").write_text(
        textwrap.dedent(
            """
            import os
            import time

            if os.environ.get("LAYERFLOW_PROCESS_WORKER"):
                time.sleep(60)  # only in the worker process


            def work():
                return "never"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(transitions, "COLD_START", 1.0)
    import stuck_module

    flow = lf.Flow("stuck")
    flow.add(stuck_module.work, name="work", timeout=0.5)
    begin = time.monotonic()
    run = flow.run(backend="process", fail_fast=False, progress=False)
    assert time.monotonic() - begin < 20
    assert isinstance(run.tasks["work"].error, lf.TaskTimeout)
