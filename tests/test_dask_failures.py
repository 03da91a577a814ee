"""The Dask backend when workers die, runs stop, and limits hold where calls begin (#29.3):
a finished value is not lost with its worker, a task that began keeps its result under
fail-fast, and a rate limit counts from when the call begins on its worker."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import layerflow as lf

distributed = pytest.importorskip("distributed")


def _calls(path: Path) -> int:
    return len(path.read_text()) if path.exists() else 0


def _wait_for(path: Path, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture
def one_worker_two_threads():
    """A cluster of its own: one worker process with two threads, so that a task that
    kills its worker kills the worker that holds its neighbour's value."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_a_worker_death_does_not_lose_a_finished_value(one_worker_two_threads, tmp_path):
    # regression: 'fine' finished and was reported, its value stayed on the worker that
    # 'killer' then killed; Dask computed it again behind layerflow's back, and when the
    # killer's retry killed the next worker during that recomputation, 'fine' ended
    # failed with KilledWorker ("its value could not be brought back")
    client = one_worker_two_threads
    calls, reported = tmp_path / "fine-calls", tmp_path / "fine-reported"

    def fine():
        with calls.open("a") as f:
            f.write("x")
        if _calls(calls) > 1:
            time.sleep(2)  # computed again: still running when the next worker dies
        return "fine"

    def killer():
        _wait_for(reported)  # 'fine' is reported succeeded...
        time.sleep(0.3)
        os._exit(3)  # ...then its worker dies

    def heard(event) -> None:
        if event.kind == "task_succeeded" and event.task == "fine":
            reported.touch()

    flow = lf.Flow("innocent")
    flow.add(fine, name="fine")
    flow.add(killer, name="killer", retries=1)
    run = flow.run(backend="dask", client=client, fail_fast=False, on_event=heard)
    assert run.tasks["fine"].status == "succeeded", run.tasks["fine"].error
    assert run["fine"] == "fine"
    assert _calls(calls) == 1  # never run again behind layerflow's back
    died = run.tasks["killer"]
    assert died.status == "failed" and died.attempts == 2
    assert isinstance(died.error, lf.WorkerDied) and "'killer'" in str(died.error)


def test_under_fail_fast_a_task_that_began_on_a_worker_keeps_its_result(dask_client, tmp_path):
    # regression: the stop cancelled the Dask future of a task its worker was running;
    # Dask cannot interrupt a call, so the task ran to its end and returned, and layerflow
    # said 'cancelled'. Now it is as a thread task: it finishes and keeps its result.
    began = tmp_path / "slow-began"

    def slow():
        began.touch()
        time.sleep(1.0)
        return "done"

    def fails():
        _wait_for(began)
        raise ValueError("boom")

    def later(k):  # queued behind them: cancelled unless it began before the stop
        (tmp_path / f"later{k}").touch()
        time.sleep(0.3)
        return k

    flow = lf.Flow("stop")
    flow.add(slow, name="slow", priority=10)
    flow.add(fails, name="fails", priority=5)
    for k in range(4):
        flow.add(later, name=f"later{k}", params={"k": k})
    with pytest.raises(lf.TaskFailed) as caught:
        flow.run(backend="dask", client=dask_client)
    run = caught.value.result
    assert run.tasks["slow"].status == "succeeded" and run["slow"] == "done"
    assert run.tasks["fails"].status == "failed"
    for k in range(4):
        ran = (tmp_path / f"later{k}").exists()
        status = run.tasks[f"later{k}"].status
        # never 'cancelled' after it ran to its end; never 'succeeded' without running
        assert status == ("succeeded" if ran else "cancelled"), (k, status, ran)
    assert any(run.tasks[f"later{k}"].status == "cancelled" for k in range(4))
    time.sleep(0.5)  # a cancelled one never begins, even later (its worker was told)
    for k in range(4):
        if run.tasks[f"later{k}"].status == "cancelled":
            assert not (tmp_path / f"later{k}").exists(), k


def test_a_rate_limit_holds_where_dask_runs_the_calls(dask_client, tmp_path):
    # regression: the limit was charged when a task was handed to Dask; tasks queued
    # behind busy workers then began together (5 starts within 164 ms under 4 per 0.2 s)
    log = tmp_path / "starts"

    def blocker():
        time.sleep(0.8)

    def limited(k):
        with log.open("a") as f:
            f.write(f"{time.time()}\n")
        time.sleep(0.02)
        return k

    flow = lf.Flow("limited")
    flow.add(blocker, name="b1", priority=10)
    flow.add(blocker, name="b2", priority=10)
    for k in range(6):
        flow.add(limited, name=f"call{k}", params={"k": k}, rate_limit="api")
    run = flow.run(backend="dask", client=dask_client, rate_limits={"api": lf.RateLimit(2, 0.4)})
    assert run.ok
    starts = sorted(float(line) for line in log.read_text().split())
    assert len(starts) == 6
    for a, c in zip(starts, starts[2:], strict=False):  # any 3 starts span the window
        assert c - a >= 0.4 * 0.97, [round(s - starts[0], 3) for s in starts]


def test_a_task_that_kills_its_worker_is_not_run_again_by_the_cluster(tmp_path, caplog):
    # regression: on a cluster with Dask's default allowed-failures (3), a task whose
    # worker died was sent to worker after worker behind layerflow's back (killing 4);
    # now it fails at once with WorkerDied, and its own retries decide
    import dask

    calls = tmp_path / "calls"

    def killer():
        with calls.open("a") as f:
            f.write("x")
        time.sleep(0.3)
        os._exit(3)

    with dask.config.set({"distributed.scheduler.allowed-failures": 3}):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
    with cluster, distributed.Client(cluster) as client:
        flow = lf.Flow("kills")
        flow.add(killer, name="killer", retries=1)
        flow.add(lambda: "fine", name="fine")
        with caplog.at_level("WARNING", logger="layerflow"):
            run = flow.run(backend="dask", client=client, fail_fast=False)
    died = run.tasks["killer"]
    assert died.status == "failed" and died.attempts == 2, died.error
    assert isinstance(died.error, lf.WorkerDied), died.error
    assert _calls(calls) == 2  # once per layerflow attempt, never again by the cluster
    assert run["fine"] == "fine"
    assert any("allowed-failures: 3" in r.getMessage() for r in caplog.records)
