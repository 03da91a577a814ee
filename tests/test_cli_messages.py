"""What the command line says about timeouts, and what ``-q`` leaves out."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from cli_run import layerflow


def test_a_shell_step_timeout_says_its_command_was_stopped(tmp_path):
    (tmp_path / "nap.yaml").write_text('steps:\n  - {name: nap, run: "sleep 30", timeout: 1}\n')
    done = layerflow(tmp_path, "run", "nap.yaml", "--no-store")
    assert done.returncode == 1
    out = done.stdout + done.stderr
    assert "timed out after 1s" in out
    assert "stopped" in out or "killed" in out
    assert "abandoned" not in out


SLOW = textwrap.dedent(
    """
    import time
    import layerflow as lf

    flow = lf.Flow("slow")

    @flow.task(timeout=0.2)
    def nap():
        time.sleep(1)
    """
)


def test_a_thread_timeout_warns_and_q_hides_the_warning(tmp_path):
    (tmp_path / "slowflow.py").write_text(SLOW)
    done = layerflow(tmp_path, "run", "slowflow:flow", "--no-store")
    assert done.returncode == 1
    assert "warning: task 'nap' timed out after 0.2s; its thread was abandoned" in done.stderr
    quiet = layerflow(tmp_path, "run", "slowflow:flow", "--no-store", "-q")
    assert quiet.returncode == 1
    assert "warning" not in quiet.stderr and "abandoned" not in quiet.stderr


def test_resume_with_nothing_unfinished_says_so_and_runs_nothing(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "steps:\n  - {name: mark, run: \"sh -c 'echo x >> marks.txt; test -f ok'\"}\n"
    )
    done = layerflow(tmp_path, "run", "p.yaml", "--resume")
    assert done.returncode == 0, done.stderr
    assert "Nothing to resume" in done.stdout and "without --resume" in done.stdout
    assert not (tmp_path / "marks.txt").exists()
    failed = layerflow(tmp_path, "run", "p.yaml")  # fails: an unfinished run to resume
    assert failed.returncode == 1
    (tmp_path / "ok").write_text("")
    resumed = layerflow(tmp_path, "run", "p.yaml", "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (tmp_path / "marks.txt").read_text().count("x") == 2
    again = layerflow(tmp_path, "run", "p.yaml", "--resume")  # finished now: nothing left
    assert "Nothing to resume" in again.stdout
    assert (tmp_path / "marks.txt").read_text().count("x") == 2


def test_bad_input_never_shows_a_traceback(tmp_path):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "layerflow", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )

    (tmp_path / "latin.yaml").write_bytes(
        "steps:\n  - {name: caf\xe9, run: 'echo'}\n".encode("latin-1")
    )
    (tmp_path / "broken_module.py").write_text("1 / 0\n")
    (tmp_path / "cost.yaml").write_text(
        "settings: {rate_limits: {api: '5/s'}}\n"
        "steps:\n  - {name: a, run: 'echo a', rate_limit: {api: x}}\n"
    )
    for args in (("run", "latin.yaml"), ("run", "broken_module:flow"), ("run", "cost.yaml")):
        out = cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr, out.stderr
