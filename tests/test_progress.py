"""Progress while a run goes: the live display on a (pseudo-)terminal, plain lines
otherwise, and lf.Progress to choose."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import textwrap
import time

import pytest

import layerflow as lf

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_pty(argv: list[str], cwd, timeout: float = 60) -> str:
    """Run ``argv`` with its stdout and stderr on a pseudo-terminal; all it printed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdout=slave, stderr=slave, stdin=slave, cwd=cwd)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(master)
    return ANSI.sub("", b"".join(chunks).decode(errors="replace"))


@pytest.fixture
def slow_pipeline(tmp_path):
    path = tmp_path / "slow.yaml"
    path.write_text(
        textwrap.dedent(
            """
            name: slow
            steps:
              - type: parallel_group
                name: naps
                steps:
                  - {name: nap_a, run: "sleep 1.2"}
                  - {name: nap_b, run: "sleep 1.2"}
              - {name: after, run: "sleep 1"}
            """
        )
    )
    return path


def test_the_command_line_shows_a_live_display_on_a_terminal(slow_pipeline, tmp_path):
    out = run_in_pty(
        [sys.executable, "-m", "layerflow", "run", str(slow_pipeline), "--no-store"], tmp_path
    )
    assert "running nap_a" in out and "running nap_b" in out  # with their elapsed time
    assert re.search(r"0/3\s*done, 2 running", out)
    assert "ETA" in out  # once the first tasks have finished
    assert "Completed 3 tasks" in out
    assert "[1/3] Started" not in out  # lines are for logs, not for a terminal


def test_progress_true_is_live_on_a_terminal_and_reports_the_end(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import time
            import layerflow as lf

            flow = lf.Flow("naps")
            for k in range(3):
                flow.add(lambda: time.sleep(0.8), name=f"nap{k}")
            flow.run(progress=True, max_workers=2)
            """
        )
    )
    out = run_in_pty([sys.executable, str(script)], tmp_path)
    assert "running nap0" in out and "done, 2 running" in out
    assert "Completed 3 tasks" in out


def test_without_a_terminal_progress_prints_plain_lines(capsys):
    flow = lf.Flow()
    flow.add(lambda: 1, name="a")
    flow.run(progress=True)
    err = capsys.readouterr().err
    assert "[1/1] Started: a" in err and "Completed 1 task " in err


def test_progress_can_be_forced_live_into_any_stream():
    stream = io.StringIO()
    flow = lf.Flow()
    flow.add(lambda: time.sleep(0.6), name="nap")
    flow.run(progress=lf.Progress(stream, live=True))
    text = ANSI.sub("", stream.getvalue())
    assert "running nap" in text and "Completed 1 task " in text


def test_a_bad_progress_value_is_refused():
    flow = lf.Flow()
    flow.add(lambda: 1, name="a")
    with pytest.raises(lf.InvalidOptionError, match="progress must be True, False or an lf"):
        flow.run(progress="yes")


def test_the_live_display_shows_attempts_waits_and_keeps_its_last_frame(tmp_path):
    path = tmp_path / "live.yaml"
    path.write_text(
        textwrap.dedent(
            """
            name: live
            settings:
              resources: {gpu: 1}
            steps:
              - type: parallel_group
                name: work
                steps:
                  - {name: render_a, run: "sleep 1.2", resources: {gpu: 1}}
                  - {name: render_b, run: "sleep 1.2", resources: {gpu: 1}}
                  - name: flaky
                    run: "sh -c 'test -f flag || { touch flag; sleep 0.3; exit 1; }; sleep 1'"
                    retries: 2
            """
        )
    )
    out = run_in_pty([sys.executable, "-m", "layerflow", "run", str(path), "--no-store"], tmp_path)
    assert re.search(r"waiting render_[ab]\s+for pool 'gpu'", out), out
    assert re.search(r"running flaky\s+[0-9.]+s\s+attempt 2/3", out), out
    assert "1 waiting" in out and "━" in out  # the counter and the bar
    # the last frame stays: every task done, counted by status, above the closing line
    last = out[out.rindex("3/3 done") :]
    assert "3 succeeded" in last.splitlines()[0] and "Completed 3 tasks" in last
