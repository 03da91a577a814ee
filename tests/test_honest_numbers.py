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
