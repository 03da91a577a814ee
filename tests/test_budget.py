"""Budgets: a run stops cleanly when what its tasks record reaches a ceiling, keeps what
finished, and a resumed run with a larger budget goes on from there."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import layerflow as lf


def _spending(n: int, *, each: float = 1.0, estimate: float | None = 1.0) -> lf.Flow:
    flow = lf.Flow("spend")
    for k in range(n):

        def step(k: int = k) -> int:
            time.sleep(0.02)
            lf.record(cost=each)
            return k

        options = {"rate_limit": {"cost": estimate}} if estimate is not None else {}
        flow.add(step, name=f"s{k}", **options)
    return flow


def test_reaching_the_budget_stops_the_run_and_keeps_what_finished():
    run = _spending(6).run(max_workers=1, budget={"cost": 3})
    assert run.status == "stopped"
    assert run.stop_reason == "budget cost 3 reached: 3 spent"
    assert run.budget == {"cost": {"budget": 3.0, "spent": 3.0}}
    assert run.counts() == {"succeeded": 3, "cancelled": 3}
    assert [run.values[f"s{k}"] for k in range(3)] == [0, 1, 2]
    assert "budget: cost 3 of 3 spent" in run.summary()


def test_a_start_whose_estimate_would_cross_the_budget_does_not_happen():
    flow = lf.Flow()

    @flow.task(rate_limit={"cost": 5})
    def expensive() -> None:
        raise AssertionError("must not start")

    run = flow.run(budget={"cost": 3})
    assert run.status == "stopped"
    assert "'expensive' (its estimate 5) would cross it" in run.stop_reason
    assert run.tasks["expensive"].status == "cancelled"


def test_running_tasks_finish_when_the_budget_is_reached():
    flow = lf.Flow()
    release = threading.Event()
    running = threading.Event()

    @flow.task
    def spender() -> str:
        running.wait(5)  # spends only once "slow" is running
        lf.record(cost=10)
        return "spent"

    @flow.task
    def slow() -> str:
        running.set()
        release.wait(5)
        return "finished anyway"

    @flow.task
    def later(spender: str) -> str:
        return "never"

    def on_event(e: lf.Event) -> None:
        if getattr(e, "kind", "") == "task_succeeded" and e.task == "spender":
            release.set()

    run = flow.run(max_workers=2, budget={"cost": 10}, on_event=on_event)
    assert run.status == "stopped"
    assert run.values["slow"] == "finished anyway"  # running when the budget ran out
    assert run.tasks["later"].status == "cancelled"


def test_resume_with_a_larger_budget_goes_on(tmp_path):
    flow = _spending(5)
    first = flow.run(max_workers=1, budget={"cost": 2}, store=tmp_path)
    assert first.status == "stopped"
    again = flow.run(max_workers=1, budget={"cost": 10}, store=tmp_path, resume=first.run_id)
    assert again.ok
    assert again.counts() == {"reused": 2, "succeeded": 3}
    assert again.budget["cost"]["spent"] == 3  # this run's own spending


def test_tasks_without_estimates_are_still_stopped_by_what_they_spend():
    run = _spending(5, each=2.0, estimate=None).run(max_workers=1, budget={"cost": 3})
    assert run.status == "stopped"
    assert run.counts()["succeeded"] == 2  # 2 spent, then 4 >= 3: no third start


def test_bad_budgets_are_refused_before_anything_runs():
    flow = _spending(1)
    for bad in ({"cost": 0}, {"cost": "5"}, [("cost", 5)], {"cost": float("inf")}):
        with pytest.raises(lf.InvalidOptionError, match="budget must be a mapping"):
            flow.run(budget=bad)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "layerflow", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
    )


def test_the_command_line_takes_a_budget_and_says_why_it_stopped(tmp_path):
    (tmp_path / "spendflow.py").write_text(
        textwrap.dedent(
            """
            import layerflow as lf
            flow = lf.Flow("spend")
            for k in range(4):
                def step(k=k):
                    lf.record(cost=1.0)
                    return k
                flow.add(step, name=f"s{k}")
            """
        )
    )
    out = _cli("run", "spendflow:flow", "--budget", "cost=2", "--max-workers", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Stopped: budget cost 2 reached: 2 spent." in out.stdout
    assert "budget: cost 2 of 2 spent" in out.stdout
    out = _cli("run", "spendflow:flow", "--budget", "cost=9", "--resume", "--json", cwd=tmp_path)
    data = json.loads(out.stdout)
    assert data["status"] == "succeeded"
    assert data["budget"] == {"cost": {"budget": 9.0, "spent": 2.0}}
    out = _cli("run", "spendflow:flow", "--budget", "cost", cwd=tmp_path)
    assert out.returncode == 2
    assert "--budget takes NAME=AMOUNT" in out.stderr


def test_yaml_settings_take_a_budget(tmp_path):
    path = tmp_path / "p.yaml"
    steps = "steps:\n  - {name: a, run: echo a}\n"
    path.write_text("name: p\nsettings:\n  budget: {cost: -1}\n" + steps)
    out = _cli("validate", str(path), cwd=tmp_path)
    assert out.returncode == 2
    assert "settings.budget must be a mapping" in out.stderr
    path.write_text("name: p\nsettings:\n  budget: {cost: 5}\n" + steps)
    assert lf.load_pipeline(path).run_options()["budget"] == {"cost": 5}


def test_the_report_shows_spent_against_budget(tmp_path):
    run = _spending(4).run(max_workers=1, budget={"cost": 2})
    page = run.to_html(tmp_path / "report.html").read_text()
    assert "2 of 2 budget" in page
    assert "budget cost 2 reached: 2 spent" in page


def test_an_abandoned_attempt_is_charged_its_estimate():
    # regression: a timed-out thread's spending was never heard of, and each retry
    # committed a fresh estimate, so retries crossed the budget without limit
    spent: list[int] = []
    flow = lf.Flow()

    def call() -> str:
        time.sleep(0.3)
        spent.append(1)
        lf.record(cost=1.0)
        return "ok"

    flow.add(call, name="call", timeout=0.1, retries=5, retry_delay=0, rate_limit={"cost": 1})
    try:
        run = flow.run(budget={"cost": 2})
    except lf.TaskFailed as e:
        run = e.result
    assert run.budget["cost"]["spent"] == 2
    assert run.tasks["call"].attempts == 2


def test_push_back_during_a_budget_stop_is_not_a_failure():
    flow = lf.Flow()

    def pushed() -> None:
        time.sleep(0.3)
        raise lf.RateLimited(retry_after=0.1)

    def spender() -> str:
        lf.record(cost=5.0)
        return "spent"

    flow.add(pushed, name="pushed")
    flow.add(spender, name="spender")
    run = flow.run(budget={"cost": 5})
    assert run.status == "stopped"
    assert run.tasks["pushed"].status == "cancelled"
