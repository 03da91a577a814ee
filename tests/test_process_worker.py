"""The process backend's worker (``backends/_worker.py``): a light start, and what crosses
the pipe both ways."""

from __future__ import annotations

import layerflow as lf

PROBE = """
import sys

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
