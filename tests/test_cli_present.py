"""The presenter's rules, seen from the command line: which stream each line goes to, what
``--json`` and ``-q`` leave out, and what an error says."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from cli_run import layerflow

# a task that prints then fails, one whose result cannot be stored (a warning), and one
# that succeeds: everything a run can say at once
MIXED = textwrap.dedent(
    """
    import threading
    import layerflow as lf

    flow = lf.Flow("mixed")

    @flow.task
    def greet():
        print("hello from greet")
        return 1

    @flow.task
    def lock():
        return threading.Lock()

    @flow.task
    def explode(greet):
        print("about to explode")
        raise ValueError(f"bad value {greet}")

    @flow.task
    def fine(greet):
        return greet + 1
    """
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "mixed.py").write_text(MIXED)
    return tmp_path


def test_json_keeps_stdout_json_when_a_task_fails_warns_and_prints(folder):
    done = layerflow(folder, "run", "mixed:flow", "--no-fail-fast", "--json")
    assert done.returncode == 1
    data = json.loads(done.stdout)  # nothing but the JSON
    assert data["status"] == "failed"
    assert data["tasks"]["explode"]["error"] == "ValueError: bad value 1"
    assert data["tasks"]["fine"]["output"] == 2
    # for people, all on stderr: a task's own lines, the warning, the progress
    assert "greet | hello from greet" in done.stderr
    assert "explode | about to explode" in done.stderr
    assert "warning: the result of task 'lock' cannot be pickled" in done.stderr
    assert "Failed: explode" in done.stderr
    # the failure is told once, in the JSON: no block for people, and no final line
    assert "explode failed:" not in done.stderr and "Run failed" not in done.stderr


def test_q_shows_only_the_failure_and_what_the_task_printed(folder):
    done = layerflow(folder, "run", "mixed:flow", "--no-fail-fast", "-q")
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "explode failed:"
    assert "ValueError: bad value 1" in done.stderr
    # not shown live with -q: its output's end comes with the failure
    assert "  its output ends with:\n    about to explode" in done.stderr
    for hidden in ("warning", "Started", "Completed", "Result", "Run failed", "greet |"):
        assert hidden not in done.stderr


def test_without_options_people_read_stdout_and_warnings_go_to_stderr(folder):
    done = layerflow(folder, "run", "mixed:flow", "--no-fail-fast")
    assert done.returncode == 1
    assert "greet | hello from greet" in done.stdout
    assert "\nexplode failed:\n  Traceback (most recent call last):\n" in done.stdout
    assert "Results:\n" in done.stdout and "\n  fine = 2\n" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].startswith("Run failed:")
    assert done.stderr.startswith("warning: the result of task 'lock' cannot be pickled")
    assert "explode failed" not in done.stderr


def test_json_with_nothing_to_resume_leaves_stdout_empty(folder):
    done = layerflow(folder, "run", "mixed:flow", "--resume", "--json")
    assert done.returncode == 0
    assert done.stdout == ""
    assert "Nothing to resume" in done.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("run", "nowhere.yaml"), "error: nowhere.yaml: no such file"),
        (("run", "mixed.py"), "error: mixed.py is Python: name the flow in it"),
        (("run", "mixed:flow", "--set", "x"), "error: --set takes NAME=VALUE, got 'x'"),
        (("run", "mixed:flow", "--output", "fin"), "error: --output fin: the flow has no task"),
        (("run", "mixed:flow", "--no-store", "--resume"), "error: --no-store cannot be"),
        (("run", "mixed:flow", "--budget", "cost=0"), "error: --budget takes NAME=AMOUNT"),
        (("show", "no-such-run"), "error: no store at"),
    ],
)
def test_an_error_names_what_was_wrong_on_stderr_only(folder, args, says):
    done = layerflow(folder, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(says), done.stderr
    assert "Traceback" not in done.stderr


def test_a_graph_in_dot_is_the_data_only(folder):
    done = layerflow(folder, "graph", "mixed:flow", "--format", "dot")
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.lstrip().startswith("digraph")
