"""``lf.parallel_map``: ``[fn(x) for x in items]`` in parallel, on the flow engine.

Concurrency is read from lock-protected counters inside ``fn``; the only timing assertions
are generous upper bounds (a 0.3 s timeout must fire well before a 5 s sleep ends), and the
one ordering check (``ordered=False``) relies on a 0.3 s gap between items.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

import layerflow as lf


class Peak:
    """Peak number of calls running at once, from a lock-protected counter."""

    def __init__(self, target: int = 0) -> None:
        self.cond = threading.Condition()
        self.count = 0
        self.peak = 0
        self.target = target

    def enter(self, wait: bool = True) -> None:
        with self.cond:
            self.count += 1
            self.peak = max(self.peak, self.count)
            self.cond.notify_all()
            if wait:  # hold until the bound was reached once (or 1 s): the peak is reachable
                self.cond.wait_for(lambda: self.peak >= self.target, timeout=1.0)

    def leave(self) -> None:
        with self.cond:
            self.count -= 1


async def async_square(x):
    await asyncio.sleep(0)
    return x * x


def square(x):
    return x * x


# --- results in input order ---------------------------------------------------------------


def test_thread_results_in_input_order():
    assert lf.parallel_map(square, range(50)) == [x * x for x in range(50)]
    assert lf.parallel_map(square, [3, 1, 2], backend="thread") == [9, 1, 4]


def test_async_results_in_input_order():
    async def slow_first(x):
        await asyncio.sleep(0.05 if x < 3 else 0)  # early items finish last
        return -x

    assert lf.parallel_map(async_square, range(30), backend="async") == [x * x for x in range(30)]
    assert lf.parallel_map(slow_first, range(8), backend="async") == [-x for x in range(8)]


def test_process_results_in_input_order_with_a_closure():
    offset = 100
    out = lf.parallel_map(
        lambda x: (x + offset, os.getpid()), range(6), backend="process", max_workers=2
    )
    assert [v for v, _ in out] == [x + 100 for x in range(6)]
    assert all(pid != os.getpid() for _, pid in out)


def test_thread_results_in_input_order_when_early_items_finish_last():
    def slow_first(x):
        if x < 2:
            time.sleep(0.1)
        return x

    assert lf.parallel_map(slow_first, range(6)) == list(range(6))


@pytest.mark.parametrize("backend", ["thread", "process", "async"])
def test_empty_input_gives_empty_list(backend):
    fn = async_square if backend == "async" else square
    assert lf.parallel_map(fn, [], backend=backend) == []
    assert lf.parallel_map(fn, iter(()), backend=backend, ordered=False) == []


def test_generators_and_iterators_are_accepted():
    consumed = []

    def gen():
        for x in range(7):
            consumed.append(x)
            yield x

    assert lf.parallel_map(square, gen()) == [x * x for x in range(7)]
    assert consumed == list(range(7))  # consumed exactly once
    assert lf.parallel_map(square, (x for x in range(4))) == [0, 1, 4, 9]
    assert lf.parallel_map(str, map(abs, [-1, -2])) == ["1", "2"]
    assert lf.parallel_map(async_square, (x for x in range(3)), backend="async") == [0, 1, 4]


def test_builtins_and_none_results():
    assert lf.parallel_map(abs, [-1, 2, -3]) == [1, 2, 3]
    assert lf.parallel_map(lambda x: None, range(3)) == [None, None, None]


def test_coroutine_function_on_thread_and_process_backends():
    assert lf.parallel_map(async_square, [1, 2, 3]) == [1, 4, 9]
    assert lf.parallel_map(async_square, [1, 2, 3], backend="process", max_workers=1) == [1, 4, 9]


def test_nested_inside_a_flow_task():
    flow = lf.Flow()

    @flow.task
    def items():
        return [1, 2, 3]

    @flow.task
    def doubled(items):
        return lf.parallel_map(lambda x: x * 2, items, max_workers=2)

    assert flow.run()["doubled"] == [2, 4, 6]


# --- concurrency ------------------------------------------------------------------------------


@pytest.mark.parametrize("max_workers", [1, 3])
def test_max_workers_bounds_concurrency(max_workers):
    peak = Peak(target=max_workers)

    def work(x):
        peak.enter()
        try:
            return x
        finally:
            peak.leave()

    out = lf.parallel_map(work, range(20), max_workers=max_workers)
    assert out == list(range(20))
    assert peak.peak == max_workers  # reached, never exceeded


def test_max_workers_bounds_coroutines():
    peak = Peak()

    async def work(x):
        peak.enter(wait=False)
        await asyncio.sleep(0.01)
        peak.leave()
        return x

    assert lf.parallel_map(work, range(12), backend="async", max_workers=2) == list(range(12))
    assert 1 <= peak.peak <= 2


def test_invalid_max_workers():
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(lf.InvalidOptionError):
            lf.parallel_map(square, [1], max_workers=bad)


# --- ordered=False ----------------------------------------------------------------------------


def test_unordered_returns_the_same_results_in_finishing_order():
    def work(x):
        if x == 0:
            time.sleep(0.3)
        return x * 10

    out = lf.parallel_map(work, range(5), ordered=False)
    assert sorted(out) == [0, 10, 20, 30, 40]
    assert out[-1] == 0  # item 0 sleeps 0.3 s, the others not at all: it finishes last


def test_unordered_async():
    async def work(x):
        await asyncio.sleep(0.3 if x == 0 else 0)
        return x

    out = lf.parallel_map(work, range(5), backend="async", ordered=False)
    assert sorted(out) == list(range(5))
    assert out[-1] == 0


def test_unordered_with_duplicate_results_keeps_the_multiset():
    out = lf.parallel_map(lambda x: x % 3, range(9), ordered=False, max_workers=2)
    assert sorted(out) == sorted(x % 3 for x in range(9))


# --- failures -----------------------------------------------------------------------------------


def test_fail_fast_raises_the_items_own_exception_with_a_note():
    calls = []
    lock = threading.Lock()

    def work(x):
        with lock:
            calls.append(x)
        if x == 3:
            raise KeyError("item three")
        return x

    with pytest.raises(KeyError) as info:
        lf.parallel_map(work, range(10), max_workers=1)
    exc = info.value
    assert type(exc) is KeyError
    assert not isinstance(exc, lf.LayerflowError)
    assert exc.args == ("item three",)
    assert "parallel_map: item 3 failed" in exc.__notes__
    assert calls == [0, 1, 2, 3]  # one at a time, in order: no item starts after the failure


def test_fail_fast_with_many_workers():
    def work(x):
        if x == 5:
            raise ValueError(f"bad {x}")
        return x

    with pytest.raises(ValueError, match="bad 5") as info:
        lf.parallel_map(work, range(20), max_workers=4)
    assert "parallel_map: item 5 failed" in info.value.__notes__


def test_fail_fast_async_and_process_keep_the_exception_type():
    async def awork(x):
        if x == 2:
            raise LookupError("async item 2")
        return x

    with pytest.raises(LookupError) as info:
        lf.parallel_map(awork, range(4), backend="async")
    assert "parallel_map: item 2 failed" in info.value.__notes__

    def pwork(x):
        if x == 1:
            raise ArithmeticError("process item 1")
        return x

    with pytest.raises(ArithmeticError) as info:
        lf.parallel_map(pwork, range(3), backend="process", max_workers=1)
    assert "parallel_map: item 1 failed" in info.value.__notes__


def test_continue_on_failure_raises_parallel_map_error_with_everything():
    calls = set()
    lock = threading.Lock()
    kinds = {1: ValueError, 4: KeyError, 7: ZeroDivisionError}

    def work(x):
        with lock:
            calls.add(x)
        if x in kinds:
            raise kinds[x](f"item {x}")
        return x * 2

    with pytest.raises(lf.ParallelMapError) as info:
        lf.parallel_map(work, range(10), fail_fast=False, max_workers=3)
    err = info.value
    assert isinstance(err, lf.LayerflowError)
    assert calls == set(range(10))  # every item ran
    assert sorted(err.errors) == [1, 4, 7]
    for k, kind in kinds.items():
        assert type(err.errors[k]) is kind
        assert f"item {k}" in str(err.errors[k])
    assert err.results == [0, None, 4, 6, None, 10, 12, None, 16, 18]
    message = str(err)
    assert "3 of 10" in message
    for k in kinds:
        assert f"[{k}]" in message
    assert "ValueError" in message and "KeyError" in message and "ZeroDivisionError" in message


def test_continue_on_failure_unordered_and_async():
    async def work(x):
        if x % 2:
            raise RuntimeError(x)
        return x

    with pytest.raises(lf.ParallelMapError) as info:
        lf.parallel_map(work, range(6), backend="async", fail_fast=False, ordered=False)
    assert sorted(info.value.errors) == [1, 3, 5]
    assert info.value.results == [0, None, 2, None, 4, None]


def test_continue_on_failure_with_many_failures_keeps_every_error():
    def work(x):
        if x % 2:
            raise ValueError(x)
        return x

    with pytest.raises(lf.ParallelMapError) as info:
        lf.parallel_map(work, range(30), fail_fast=False)
    assert sorted(info.value.errors) == list(range(1, 30, 2))
    assert info.value.results == [x if x % 2 == 0 else None for x in range(30)]
    assert "15 of 30" in str(info.value)


def test_continue_on_failure_when_everything_succeeds_returns_the_list():
    assert lf.parallel_map(square, range(5), fail_fast=False) == [0, 1, 4, 9, 16]


# --- invalid calls ------------------------------------------------------------------------------


def test_async_backend_needs_a_coroutine_function():
    calls = []
    with pytest.raises(lf.InvalidOptionError, match="async"):
        lf.parallel_map(lambda x: calls.append(x), [1, 2], backend="async")
    assert calls == []


@pytest.mark.parametrize("fn", [42, None, "square", [square]])
def test_a_non_callable_is_invalid(fn):
    with pytest.raises(lf.InvalidOptionError):
        lf.parallel_map(fn, [1, 2])


def test_unknown_backend_and_bad_timeout_are_invalid():
    with pytest.raises(lf.InvalidOptionError, match="backend"):
        lf.parallel_map(square, [1], backend="threads")
    with pytest.raises(lf.InvalidOptionError):
        lf.parallel_map(square, [1], timeout=-1)


# --- timeout ------------------------------------------------------------------------------------


def test_timeout_raises_task_timeout_well_before_the_item_ends():
    def work(x):
        if x == 1:
            time.sleep(5)
        return x

    t0 = time.monotonic()
    with pytest.raises(lf.TaskTimeout) as info:
        lf.parallel_map(work, range(4), timeout=0.3)
    assert time.monotonic() - t0 < 4.0
    assert isinstance(info.value, TimeoutError)
    assert "parallel_map: item 1 failed" in info.value.__notes__


def test_timeout_on_the_async_backend():
    async def work(x):
        await asyncio.sleep(5 if x == 2 else 0)
        return x

    t0 = time.monotonic()
    with pytest.raises(lf.TaskTimeout):
        lf.parallel_map(work, range(4), backend="async", timeout=0.3)
    assert time.monotonic() - t0 < 4.0


def test_timeout_not_reached_returns_results():
    assert lf.parallel_map(square, range(5), timeout=30) == [0, 1, 4, 9, 16]


def test_timeout_without_fail_fast_accounts_for_every_item():
    def work(x):
        if x == 1:
            time.sleep(5)
        return x + 1  # never None, so None in results means "no result"

    with pytest.raises(lf.ParallelMapError) as info:
        lf.parallel_map(work, range(5), max_workers=1, timeout=0.3, fail_fast=False)
    err = info.value
    assert isinstance(err.errors[1], lf.TaskTimeout)
    missing = {k for k, value in enumerate(err.results) if value is None}
    # every item without a result must be reported, not left indistinguishable from None
    assert missing <= set(err.errors)


# --- progress -----------------------------------------------------------------------------------


def test_progress_prints_lines(capsys):
    assert lf.parallel_map(square, [1, 2], progress=True) == [1, 4]
    assert capsys.readouterr().err.strip()
