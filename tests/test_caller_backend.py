"""``mode="sequential"``: plain functions run in the calling thread, through the
``sequential`` backend (``backends/caller.py``), behind the same interface as the others."""

from __future__ import annotations

import os
import threading
import time

import pytest

import layerflow as lf
from layerflow.backends import open_backend
from layerflow.errors import Cancelled


def test_the_sequential_backend_is_opened_by_name_like_the_others():
    backend = open_backend("sequential")
    ends = []
    handle = backend.submit("t", lambda x: x * 2, (21,), {}, lambda *a: ends.append(a))
    skipped = backend.submit("u", lambda: 1 / 0, (), {}, lambda *a: ends.append(a))
    backend.cancel(skipped)
    backend.stop()
    backend.serve()  # makes the queued calls here, then returns at the stop
    assert handle == [False] and ends[0][:2] == (True, 42)
    assert not ends[1][0] and isinstance(ends[1][1], Cancelled)  # never made
    backend.close()


def test_backend_sequential_is_refused_with_the_mode_to_use():
    flow = lf.Flow()
    flow.add(lambda: 1, name="a")
    with pytest.raises(lf.InvalidOptionError, match="mode='sequential'"):
        flow.run(backend="sequential")


def test_plain_tasks_run_in_the_calling_thread_and_coroutines_on_the_loop():
    async def coro(plain):
        return plain, threading.get_ident()

    flow = lf.Flow()
    flow.add(lambda: threading.get_ident(), name="plain")
    flow.add(coro)
    run = flow.run(mode="sequential")
    me = threading.get_ident()
    assert run["plain"] == me and run["coro"][0] == me and run["coro"][1] != me


@pytest.mark.skipif(os.name != "posix", reason="SIGINT delivery")
def test_a_ctrl_c_in_a_sequential_task_keeps_what_finished(ctrl_c):
    def quick():
        return "done"

    def slow(quick):
        time.sleep(5)

    def never(slow):
        return "ran"

    flow = lf.Flow()
    flow.add(quick)
    flow.add(slow)
    flow.add(never)
    ctrl_c(0.3)
    t0 = time.perf_counter()
    with pytest.raises(lf.RunInterrupted) as info:
        flow.run(mode="sequential")
    run = info.value.result
    assert time.perf_counter() - t0 < 3
    assert run.status == "interrupted" and run["quick"] == "done"
    assert run.tasks["slow"].status == "cancelled"
    assert run.tasks["never"].status == "cancelled"


def test_a_group_timeout_holds_in_sequential_mode_too():
    stop = threading.Event()
    group = lf.TaskGroup("bounded", timeout=0.3)

    def quick():
        return "done"

    def stuck():
        stop.wait(5)  # a thread cannot be killed: the run gives up on it at the deadline

    flow = lf.Flow()
    flow.add(quick, group=group)
    flow.add(stuck, group=group)
    t0 = time.perf_counter()
    try:
        run = flow.run(mode="sequential", fail_fast=False)
    finally:
        stop.set()
    assert time.perf_counter() - t0 < 3  # not the 5 s that the stuck call takes
    assert run["quick"] == "done" and isinstance(run.tasks["stuck"].error, lf.GroupTimeout)
