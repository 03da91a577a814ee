"""A failed task shows the user's own traceback frames: on the terminal (the last few; all
with -v), in --json, in ``layerflow show``, and in the HTML report; and a run ends by
showing its results."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from cli_run import layerflow

FLOW = textwrap.dedent(
    """
    import layerflow as lf

    flow = lf.Flow("parsing")

    def deep(d, n):
        if n == 0:
            return d["missing_key"]
        return deep(d, n - 1)

    @flow.task
    def parse():
        return deep({}, 5)

    @flow.task
    def fine():
        return {"rows": list(range(100)), "name": "table"}
    """
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "parsing.py").write_text(FLOW)
    return tmp_path


def test_the_terminal_shows_the_last_user_frames_and_v_shows_all(folder):
    done = layerflow(folder, "run", "parsing:flow", "--no-fail-fast")
    assert done.returncode == 1
    out = done.stdout
    assert "parse failed:" in out
    assert 'parsing.py", line 8, in deep' in out and "KeyError: 'missing_key'" in out
    assert "earlier frames not shown" in out
    assert "layerflow/" not in out.split("parse failed:")[1]  # none of our frames
    full = layerflow(folder, "run", "parsing:flow", "--no-fail-fast", "-v")
    assert "in parse" in full.stdout and "not shown" not in full.stdout


def test_json_carries_the_traceback(folder):
    done = layerflow(folder, "run", "parsing:flow", "--no-store", "--json")
    task = json.loads(done.stdout)["tasks"]["parse"]
    assert task["traceback"].startswith("Traceback (most recent call last):")
    assert "in parse" in task["traceback"] and task["traceback"].endswith("KeyError: 'missing_key'")


def test_q_prints_only_the_error(folder):
    done = layerflow(folder, "run", "parsing:flow", "--no-store", "-q")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "parse failed:" in done.stderr and "KeyError" in done.stderr


def test_show_prints_the_traceback_and_one_task_in_detail(folder):
    layerflow(folder, "run", "parsing:flow", "--no-fail-fast")
    run_id = layerflow(folder, "runs").stdout.splitlines()[1].split()[0]
    shown = layerflow(folder, "show", run_id)
    assert shown.returncode == 0
    assert "parse failed:" in shown.stdout and "KeyError: 'missing_key'" in shown.stdout
    detail = layerflow(folder, "show", run_id, "parse")
    assert "parse: failed" in detail.stdout and "in parse" in detail.stdout
    value = layerflow(folder, "show", run_id, "--output", "fine")
    assert "'name': 'table'" in value.stdout
    missing = layerflow(folder, "show", run_id, "--output", "fien")
    assert missing.returncode == 2 and "Did you mean 'fine'?" in missing.stderr
    report = folder / "r.html"
    layerflow(folder, "show", run_id, "--report", str(report))
    html = report.read_text()
    assert '<pre class="tb">Traceback (most recent call last):' in html
    assert "KeyError: &#x27;missing_key&#x27;" in html or "KeyError: &#39;missing_key&#39;" in html


def test_a_failed_shell_step_shows_its_command_exit_code_and_stderr(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "steps:\n  - {name: bad, run: \"sh -c 'echo oops >&2; exit 3'\"}\n"
    )
    done = layerflow(tmp_path, "run", "p.yaml", "--no-store")
    assert done.returncode == 1
    assert "exited with code 3: sh -c 'echo oops >&2; exit 3'" in done.stdout
    assert "stderr ends with:\n  oops" in done.stdout


def test_a_run_ends_with_its_results(folder):
    (folder / "ok.py").write_text(
        "import layerflow as lf\nflow = lf.Flow('ok')\n"
        "@flow.task\ndef a():\n    return 'x' * 5000\n"
        "@flow.task\ndef b(a):\n    return len(a)\n"
        "@flow.task\ndef c():\n    return list(range(1000))\n"
    )
    done = layerflow(folder, "run", "ok:flow", "--no-store")
    assert done.returncode == 0
    results = done.stdout.split("Results:")[1]
    assert "  b = 5000" in results and "  c:" in results and "more" in results
    assert "a = " not in results  # not a sink: b uses it
    one = layerflow(folder, "run", "ok:flow", "--no-store", "--output", "a")
    assert "  a:\n    xxxxx" in one.stdout and "(3,000 more characters)" in one.stdout
    assert done.stdout.strip().splitlines()[-1].startswith("Completed 3 tasks")
