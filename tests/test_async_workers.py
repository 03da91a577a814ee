"""Coroutines are run by a few worker asyncio tasks, not one asyncio task each
(``backends/aio.py``): what a coroutine can rely on all the same."""

from __future__ import annotations

import asyncio
import contextvars
import time

import pytest

import layerflow as lf

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def test_a_coroutine_that_does_not_wait_costs_no_asyncio_task_of_its_own():
    seen: list[int] = []

    async def quick():
        seen.append(len(asyncio.all_tasks()))

    flow = lf.Flow()
    for k in range(500):
        flow.add(quick, name=f"q{k}")
    assert flow.run().ok
    assert len(seen) == 500 and max(seen) <= 3  # a worker (and the run's own), not 500


def test_each_coroutine_has_its_own_context_even_on_one_worker():
    async def setter(k: int):
        before = VAR.get()
        VAR.set(f"set by {k}")
        return before

    flow = lf.Flow()
    for k in range(200):
        flow.add(setter, name=f"s{k}", params={"k": k})
    token = VAR.set("caller")
    try:
        run = flow.run()
        assert VAR.get() == "caller"
    finally:
        VAR.reset(token)
    # no coroutine sees what another one set before it on the same worker
    assert {run[f"s{k}"] for k in range(200)} == {"caller"}


def test_a_context_set_before_waiting_is_still_there_after():
    async def keeps():
        VAR.set("mine")
        await asyncio.sleep(0.01)
        return VAR.get()

    async def other():
        await asyncio.sleep(0.005)
        return VAR.get()

    flow = lf.Flow()
    flow.add(keeps)
    flow.add(other)
    run = flow.run()
    assert run["keeps"] == "mine" and run["other"] == "unset"


@pytest.mark.parametrize("wait", [0.0, 0.01])
def test_asyncio_timeout_works_inside_a_task(wait: float):
    async def bounded():
        async with asyncio.timeout(5):  # needs a current asyncio task
            await asyncio.sleep(wait)
        return asyncio.current_task() is not None

    async def expires():
        async with asyncio.timeout(0.01):
            await asyncio.sleep(5)

    flow = lf.Flow()
    flow.add(bounded)
    flow.add(expires)
    run = flow.run(fail_fast=False)
    assert run["bounded"] is True
    assert isinstance(run.tasks["expires"].error, TimeoutError)


def test_coroutines_waiting_at_once_each_have_their_own_asyncio_task():
    async def who():
        await asyncio.sleep(0.05)
        return id(asyncio.current_task())

    flow = lf.Flow()
    for k in range(20):
        flow.add(who, name=f"w{k}")
    run = flow.run()
    assert len({run[f"w{k}"] for k in range(20)}) == 20


def test_a_timeout_cancels_only_its_own_coroutine_and_the_rest_still_run():
    async def hangs():
        await asyncio.sleep(10)

    async def after(k: int):
        await asyncio.sleep(0)
        return k

    flow = lf.Flow()
    flow.add(hangs, timeout=0.2)
    for k in range(50):
        flow.add(after, name=f"a{k}", params={"k": k})
    run = flow.run(fail_fast=False, max_workers=4)
    assert isinstance(run.tasks["hangs"].error, lf.TaskTimeout)
    assert [run[f"a{k}"] for k in range(50)] == list(range(50))


def test_a_long_chain_of_coroutines_that_never_wait_lets_the_loop_turn():
    ticks = []

    async def link(prev: int = 0) -> int:
        return prev + 1

    flow = lf.Flow()
    flow.add(link, name="l0")
    for k in range(1, 2000):
        flow.add(link, name=f"l{k}", inputs={"prev": f"l{k - 1}"})

    async def ticker():
        while True:
            ticks.append(1)
            await asyncio.sleep(0)

    async def main():
        tick = asyncio.ensure_future(ticker())
        run = await flow.run_async()
        tick.cancel()
        return run

    run = asyncio.run(main())
    assert run["l1999"] == 2000
    assert len(ticks) > 2  # the caller's own task ran while the chain went through


def test_a_coroutine_error_without_waiting_is_the_tasks_failure():
    async def boom():
        raise ValueError("no")

    async def cancelled_by_itself():
        raise asyncio.CancelledError()

    flow = lf.Flow()
    flow.add(boom)
    flow.add(cancelled_by_itself)
    run = flow.run(fail_fast=False)
    assert isinstance(run.tasks["boom"].error, ValueError)
    assert isinstance(run.tasks["cancelled_by_itself"].error, asyncio.CancelledError)


def test_timeouts_cancel_every_waiting_coroutine_and_the_run_goes_on():
    # the first one waits on the worker that took it from the queue, the others each on
    # an asyncio task of their own: a timeout cancels both kinds alike
    async def hangs():
        await asyncio.sleep(10)

    async def later(**_):
        return "ran"

    flow = lf.Flow()
    for k in range(5):
        flow.add(hangs, name=f"h{k}", timeout=0.2)
    flow.add(later, after=[f"h{k}" for k in range(5)], name="later")
    flow.add(later, name="free")
    run = flow.run(fail_fast=False)
    assert all(isinstance(run.tasks[f"h{k}"].error, lf.TaskTimeout) for k in range(5))
    assert run["free"] == "ran" and run.tasks["later"].status == "skipped"


# review of the worker design: each of these failed on its first version


def test_fail_fast_stops_a_coroutine_queued_on_a_task_of_its_own_before_it_starts():
    log = []

    async def waits():  # its worker stays with it: the others get tasks of their own
        await asyncio.sleep(0.05)

    async def fails():
        raise ValueError("boom")

    async def later():
        log.append("started")
        await asyncio.sleep(0.2)

    flow = lf.Flow()
    flow.add(waits)
    flow.add(fails)
    flow.add(later)

    async def main():
        with pytest.raises(lf.TaskFailed) as info:
            await flow.run_async()
        await asyncio.sleep(0.3)
        return info.value.result

    run = asyncio.run(main())
    assert run.tasks["later"].status == "cancelled" and log == []


def test_fail_fast_stops_the_next_coroutine_of_the_same_worker():
    log = []

    async def fails():
        raise ValueError("boom")

    async def next_one():
        log.append("started")
        await asyncio.sleep(0.2)

    flow = lf.Flow()
    flow.add(fails)
    flow.add(next_one)
    with pytest.raises(lf.TaskFailed) as info:
        flow.run()
    assert info.value.result.tasks["next_one"].status == "cancelled" and log == []


def test_a_coroutine_that_ended_in_time_is_not_timed_out_by_the_next_ones_work():
    import time

    async def quick():
        return "done"

    async def crunch():
        time.sleep(0.5)  # holds the loop: the deadline of quick passes meanwhile

    flow = lf.Flow()
    flow.add(quick, timeout=0.2)
    flow.add(crunch)
    run = flow.run(fail_fast=False)
    assert run.tasks["quick"].status == "succeeded"


def test_a_waiting_coroutines_task_is_its_own_so_a_late_cancel_of_it_hits_nothing_else():
    async def a():
        me = asyncio.current_task()
        asyncio.get_running_loop().call_later(0.1, me.cancel)  # after a is over
        await asyncio.sleep(0.01)
        return "a"

    async def b(a):
        await asyncio.sleep(0.3)
        return "b"

    flow = lf.Flow()
    flow.add(a)
    flow.add(b)
    assert flow.run()["b"] == "b"


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
