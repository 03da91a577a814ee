"""The command line, driven as a user would: in a subprocess, reading its output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# the command line records runs in .layerflow/ of its working directory: not the repo's
SCRATCH = Path(tempfile.mkdtemp(prefix="layerflow-cli-"))


def layerflow(*args: str, cwd: Path | None = None, timeout: float = 60, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "layerflow", *args],
        capture_output=True,
        text=True,
        cwd=cwd or SCRATCH,
        timeout=timeout,
        **kwargs,
    )


@pytest.fixture
def quick(tmp_path: Path) -> Path:
    """A small pipeline: a base step, a parallel group of two, a final step."""
    path = tmp_path / "quick.yaml"
    path.write_text(
        textwrap.dedent(
            """
            name: quick
            inputs: {input: "hello world"}
            steps:
              - {name: base, run: "echo {{input}}"}
              - type: parallel_group
                name: pair
                steps:
                  - name: upper
                    run: "python -c 'import sys; print(sys.argv[1].upper())' {{steps.base.output}}"
                  - {name: slow, run: "sh -c 'sleep 0.3; echo slow'"}
              - {name: final, run: "echo {{steps.upper.output}} {{steps.slow.output}}"}
            """
        )
    )
    return path


def test_run_prints_progress_lines_and_exits_0(quick):
    out = layerflow("run", str(quick))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "[1/4] Started: base" in lines
    assert any(line.startswith("[1/4] Completed: base (") for line in lines)
    assert lines[-1].startswith("Completed 4 tasks in ")
    assert "sequential estimate" in lines[-1] and "speedup" in lines[-1]


def test_json_output_parses_back(quick):
    out = layerflow("run", str(quick), "--json", "--set", "input=big sky")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)  # only JSON on stdout
    assert set(data) == {
        "run_id",
        "status",
        "duration",
        "sequential_estimate",
        "speedup",
        "predicted",
        "layers",
        "metrics",  # what tasks gave lf.record, summed
        "budget",  # per budget: the ceiling and what was spent ({} without one)
        "stop_reason",  # why a "stopped" run stopped (a budget, a checkpoint)
        "skipped",  # skipped tasks and why (lf.Skip's reason; None: an upstream failed)
        "tasks",
    }
    assert data["status"] == "succeeded"
    assert data["tasks"]["final"]["output"] == "BIG SKY slow"
    assert set(data["tasks"]["base"]) == {
        "status",
        "duration",
        "attempts",
        "layer",
        "output",
        "error",
        "traceback",  # the user's frames of a failure, as text (None when it succeeded)
        "metrics",
    }
    assert data["layers"] == [["base"], ["upper", "slow"], ["final"]]
    assert "Started: base" in out.stderr  # progress went to stderr


def test_a_failed_task_exits_1(tmp_path):
    path = tmp_path / "fails.yaml"
    path.write_text(
        "steps:\n  - {name: boom, run: \"sh -c 'echo broken >&2; exit 4'\"}\n"
        '  - {name: after, run: "echo never"}\n'
    )
    out = layerflow("run", str(path))
    assert out.returncode == 1
    assert "exited with code 4" in out.stdout and "broken" in out.stdout
    data = json.loads(layerflow("run", str(path), "--json", "-q").stdout)
    assert data["status"] == "failed"
    assert data["tasks"]["boom"]["status"] == "failed"
    assert "code 4" in data["tasks"]["boom"]["error"]


def test_an_invalid_file_exits_2_with_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text('steps:\n  - name: a\n    run: "echo a"\n    neds: [b]\n')
    out = layerflow("run", str(path))
    assert out.returncode == 2
    assert f"{path}:4:" in out.stderr and "Did you mean 'needs'" in out.stderr
    assert "Traceback" not in out.stderr
    out = layerflow("validate", str(path))
    assert out.returncode == 2 and "neds" in out.stderr


def test_usage_errors_exit_2(quick):
    assert layerflow("run", str(quick), "--max-workers", "0").returncode == 2
    assert layerflow("run", str(quick), "--bogus").returncode == 2
    assert layerflow("run", "no-such-file.yaml").returncode == 2
    out = layerflow("run", str(quick), "--set", "novalue")
    assert out.returncode == 2 and "NAME=VALUE" in out.stderr


def test_plan_graph_validate(quick):
    out = layerflow("plan", str(quick), "--max-workers", "1,2,4")
    assert out.returncode == 0, out.stderr
    assert "layer 1: upper, slow" in out.stdout
    assert "critical path" in out.stdout and "speedup" in out.stdout
    assert "what if" in out.stdout
    mermaid = layerflow("graph", str(quick), "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart TD")
    dot = layerflow("graph", str(quick), "--format", "dot").stdout
    assert dot.startswith('digraph "quick"')
    text = layerflow("graph", str(quick)).stdout
    assert "final  <- slow, upper" in text
    out = layerflow("validate", str(quick))
    assert out.returncode == 0 and "valid, 4 tasks in 3 layers" in out.stdout


def test_sequential_and_no_fail_fast_flags(tmp_path):
    path = tmp_path / "mixed.yaml"
    path.write_text(
        "settings: {order: dataflow}\n"
        "steps:\n"
        '  - {name: bad, run: "false"}\n'
        '  - {name: good, run: "echo fine"}\n'
        '  - {name: after_bad, run: "echo x", needs: [bad]}\n'
    )
    out = layerflow("run", str(path), "--no-fail-fast", "--sequential", "--json", "-q")
    data = json.loads(out.stdout)
    assert out.returncode == 1
    statuses = {n: t["status"] for n, t in data["tasks"].items()}
    assert statuses == {"bad": "failed", "good": "succeeded", "after_bad": "skipped"}


def test_a_python_flow_as_module_colon_name(tmp_path):
    (tmp_path / "myflows.py").write_text(
        textwrap.dedent(
            """
            import layerflow as lf
            flow = lf.Flow("py")

            @flow.task
            def double(x):
                return 2 * x
            """
        )
    )
    out = layerflow("run", "myflows:flow", "--set", "x=21", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tasks"]["double"]["output"] == 42
    out = layerflow("run", "myflows:nothing", cwd=tmp_path)
    assert (
        out.returncode == 2
        and "has no 'nothing'" in out.stderr
        and "Flow objects: flow" in out.stderr
    )


def test_checkpoint_needs_a_terminal_or_yes(quick):
    out = layerflow("run", str(quick), "--checkpoint", stdin=subprocess.DEVNULL)
    assert out.returncode == 2
    assert "--yes" in out.stderr and "terminal" in out.stderr
    out = layerflow("run", str(quick), "--checkpoint", "--yes")
    assert out.returncode == 0, out.stderr
    assert "Layer 0 done: 1 succeeded, 0 failed. Continue?" in out.stderr


@pytest.mark.skipif(os.name != "posix", reason="pseudo-terminal")
def test_checkpoint_prompt_through_a_pseudo_terminal(quick):
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: layerflow on a terminal
        os.chdir(SCRATCH)
        os.execv(
            sys.executable,
            [sys.executable, "-m", "layerflow", "run", str(quick), "-v", "--checkpoint"],
        )
    seen = b""
    answers = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
            if seen.count(b"Continue? [y/N]") > answers:
                answers += 1
                os.write(fd, b"y\n" if answers == 1 else b"n\n")
    finally:
        _, status = os.waitpid(pid, 0)
    text = seen.decode(errors="replace")
    assert "Layer 0 done: 1 succeeded, 0 failed. Continue? [y/N]" in text
    assert "Layer 1 done: 2 succeeded, 0 failed. Continue? [y/N]" in text
    assert "Run stopped" in text  # the second answer was no
    assert os.waitstatus_to_exitcode(status) == 0  # stopped by choice is not a failure


@pytest.mark.skipif(os.name != "posix", reason="SIGINT")
def test_ctrl_c_stops_the_run_and_the_running_command(tmp_path):
    pidfile = tmp_path / "child.pid"
    path = tmp_path / "long.yaml"
    path.write_text(
        "steps:\n"
        '  - {name: quick, run: "echo done"}\n'
        f"  - {{name: long, run: \"sh -c 'echo $$ > {pidfile}; sleep 30'\"}}\n"
        '  - {name: never, run: "echo never"}\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "layerflow", "run", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 30
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "the long step never started"
        time.sleep(0.05)
    child = int(pidfile.read_text())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Interrupted" in out
    assert "Traceback" not in err
    assert not _alive(child)  # the running command was stopped too


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for a parent to reap it."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.1)
    return True


def test_make_demo_pipeline_runs():
    out = layerflow("run", str(EXAMPLES / "hybrid.yaml"), "--json", "-q", timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["status"] == "succeeded" and data["speedup"] > 1.2


@pytest.mark.parametrize("name", ["batch", "configs", "shell", "dataflow"])
def test_examples_run(name):
    out = layerflow("run", str(EXAMPLES / f"{name}.yaml"), "--json", "-q", timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "succeeded"


def test_a_plugin_in_the_folder_the_command_runs_in_is_found(tmp_path):
    # pipelines often live in a subfolder (ai-content-pipeline ships input/pipelines/*.yaml)
    # while the step types are next to where the user runs the command
    (tmp_path / "mysteps_cwd.py").write_text(
        "import layerflow\n\n\n"
        "@layerflow.step_type('shout')\n"
        "def shout(text: str) -> str:\n"
        "    return text.upper()\n"
    )
    folder = tmp_path / "input" / "pipelines"
    folder.mkdir(parents=True)
    (folder / "p.yaml").write_text(
        "inputs: {text: hi}\n"
        "steps:\n  - {name: s, type: shout, params: {text: '{{inputs.text}}'}}\n"
    )
    script = Path(sys.executable).parent / "layerflow"
    done = subprocess.run(
        [str(script), "run", "input/pipelines/p.yaml", "--plugin", "mysteps_cwd", "--no-store"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "HI" in done.stdout


def test_set_values_are_not_yaml_1_1(tmp_path):
    (tmp_path / "echo.yaml").write_text(
        textwrap.dedent(
            """
            steps:
              - {name: shown, run: "echo {{inputs.a}} {{inputs.b}} {{inputs.c}} {{inputs.d}}"}
            """
        )
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "layerflow",
            "run",
            "echo.yaml",
            "--json",
            "-q",
            "--no-store",
            "--set",
            "a=01234",
            "--set",
            "b=yes",
            "--set",
            "c=12:30",
            "--set",
            "d=7",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    import json

    assert json.loads(out.stdout)["tasks"]["shown"]["output"] == "01234 yes 12:30 7"
