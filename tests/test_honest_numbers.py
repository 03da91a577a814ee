"""No speedup is claimed where it would mislead: a failed run, or one too short to compare."""

from __future__ import annotations

import time

import pytest

import layerflow as lf


def test_a_failed_run_claims_no_speedup():
    flow = lf.Flow()

    @flow.task
    def boom():
        time.sleep(0.06)
        raise ValueError("no")

    with pytest.raises(lf.TaskFailed) as caught:
        flow.run()
    run = caught.value.result
    assert "no speedup: the run failed" in run.summary()
    assert "speedup 1.0x" not in run.summary() and "faster" not in run.summary()
    assert "no speedup" in repr(run)


def test_a_run_of_a_few_milliseconds_claims_no_speedup():
    flow = lf.Flow()
    flow.add(lambda: 1, name="a")
    run = flow.run()
    assert "too short for a speedup to mean anything" in run.summary()
    assert "speedup 0.0x" not in run.summary()


def test_a_long_enough_successful_run_shows_its_speedup():
    flow = lf.Flow()
    for k in range(4):
        flow.add(lambda: time.sleep(0.1), name=f"t{k}")
    run = flow.run(max_workers=4)
    assert "sequential estimate" in run.summary() and "speedup" in run.summary()


def test_an_interrupted_run_claims_no_speedup():
    from layerflow.events import timing_text

    assert timing_text("interrupted", 3.0, 9.0) == "in 3.0s (no speedup: the run interrupted)"
    assert timing_text("succeeded", 2.0, 6.0).endswith("speedup 3.0x)")


def test_the_report_claims_no_speedup_for_a_failed_or_short_run(tmp_path):
    flow = lf.Flow()
    flow.add(lambda: 1, name="quick")
    html = flow.run().to_html(tmp_path / "quick.html").read_text()
    assert "too short to compare" in html and "0.0×" not in html

    @flow.task
    def boom():
        raise ValueError("no")

    with pytest.raises(lf.TaskFailed) as caught:
        flow.run()
    html = caught.value.result.to_html(tmp_path / "failed.html").read_text()
    assert "the run failed" in html


def _spin() -> int:
    x = 0
    for k in range(300_000):
        x += k
    return x


def test_long_thread_tasks_get_their_cpu_time_and_short_ones_do_not():
    flow = lf.Flow()
    for k in range(3):
        flow.add(_spin, name=f"spin{k}")
        flow.add(lambda: time.sleep(0.05), name=f"nap{k}")
    flow.add(lambda: 1, name="tiny")
    run = flow.run(max_workers=2)
    assert "tiny" not in run.cpu  # a short task never pays for the clock reads
    for k in range(3):
        assert 0 < run.cpu[f"spin{k}"] <= run.tasks[f"spin{k}"].duration
        assert run.cpu[f"nap{k}"] < 0.5 * run.tasks[f"nap{k}"].duration  # asleep, not busy
    assert "CPU:" in run.summary()
    assert run.cpu_threads == {f"spin{k}" for k in range(3)} | {f"nap{k}" for k in range(3)}


def test_long_tasks_in_worker_processes_get_their_cpu_time_too():
    flow = lf.Flow()
    flow.add(_spin, name="spin", executor="process")
    flow.add(lambda: time.sleep(0.05), name="nap", executor="process")
    run = flow.run()
    assert run.cpu["spin"] > 0 and run.cpu["nap"] < 0.5 * run.tasks["nap"].duration
    assert not run.cpu_threads  # the GIL note is about threads only
    assert "Warning" not in (run.cpu_note() or "")


def test_cpu_bound_threads_that_ran_one_at_a_time_are_called_out(tmp_path):
    flow = lf.Flow()
    for k in range(4):
        flow.add(lambda: time.sleep(0.25), name=f"t{k}")
    run = flow.run(max_workers=4)
    assert run.cpu_note() is None or "Warning" not in run.cpu_note()  # sleeping is not CPU
    # as the GIL leaves it: each task on the CPU for a quarter of its time, one CPU in all
    run.cpu = {name: t.duration / 4 for name, t in run.tasks.items()}
    run.cpu_threads = frozenset(run.cpu)
    note = run.cpu_note()
    assert note is not None and "threads do not run Python in parallel" in note
    assert "backend='process'" in note and f"speedup of {run.speedup:.1f}x" in note
    assert "GIL:" in run.to_html(tmp_path / "r.html").read_text()
