"""A skip (``lf.Skip``, a YAML ``when:`` that is false) is no failure: what is only ordered
after a skipped task still runs."""

from __future__ import annotations

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
