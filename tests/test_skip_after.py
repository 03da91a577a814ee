"""A skip (``lf.Skip``, a YAML ``when:`` that is false) is no failure: what is only ordered
after a skipped task still runs, and the command line does not say that something failed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import layerflow as lf


@pytest.mark.parametrize("mode", ["dynamic", "layered", "sequential"])
def test_a_task_only_ordered_after_a_skipped_one_still_runs(mode):
    # regression: a skip went down ``after`` edges too, so in a YAML file (order: sequence)
    # a false when: skipped every step after it
    flow = lf.Flow("skip")

    def check() -> int:
        raise lf.Skip("nothing to do")

    def consumer(check: int) -> int:
        return check

    def later() -> str:
        return "ran"

    def last(later: str) -> str:
        return later + "!"

    flow.add(check)
    flow.add(consumer)
    flow.add(later, after=["consumer"])  # ordered after a task skipped because of the skip
    flow.add(last)
    broken = lf.Flow("broken")

    def fails() -> int:
        raise ValueError("no")

    broken.add(fails)
    broken.add(later, after=["fails"])
    run = flow.run(mode=mode)
    assert run.ok
    assert [run.tasks[n].status for n in ("check", "consumer")] == ["skipped", "skipped"]
    assert run["last"] == "ran!"
    # a failure still ends what is ordered after it
    failed = broken.run(mode=mode, fail_fast=False)
    assert failed.tasks["later"].status == "skipped"


def layerflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "layerflow", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_the_summary_tells_a_skip_from_a_failure(tmp_path):
    (tmp_path / "skipping.py").write_text(
        textwrap.dedent(
            """
            import layerflow as lf

            flow = lf.Flow("skipping")

            @flow.task
            def check():
                raise lf.Skip("nothing new")

            @flow.task
            def use(check):
                return check
            """
        )
    )
    out = layerflow("run", "skipping.py:flow", "--no-store", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Skipped (lf.Skip or a false when:): check (nothing new)" in out.stdout
    assert "use (upstream 'check' was skipped)" in out.stdout
    assert "what they need failed" not in out.stdout
