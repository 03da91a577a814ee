"""Progress while a run goes: the live display on a (pseudo-)terminal, plain lines
otherwise, and lf.Progress to choose."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time

import pytest

import layerflow as lf

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_pty(argv: list[str], cwd, timeout: float = 60, raw: bool = False) -> str:
    """Run ``argv`` with its stdout and stderr on a pseudo-terminal; all it printed (its
    terminal control sequences too, if ``raw``)."""
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
    text = b"".join(chunks).decode(errors="replace")
    return text if raw else ANSI.sub("", text)


def converse_in_pty(
    argv: list[str], cwd, answers: list[str], timeout: float = 60, stdout=None
) -> str:
    """Run ``argv`` on a pseudo-terminal of 120 columns and 30 lines, as a person would: the
    k-th answer typed (and echoed by the terminal) once the k-th question ("Continue?") has
    been asked; all it printed there, raw. ``stdout``: another place for its stdout."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    out = slave if stdout is None else stdout
    proc = subprocess.Popen(argv, stdout=out, stderr=slave, stdin=slave, cwd=cwd)
    os.close(slave)
    seen = b""
    typed = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                seen += data
                if seen.count(b"Continue?") > typed and typed < len(answers):
                    time.sleep(1.2)  # a person takes a moment: the display would have moved
                    os.write(master, answers[typed].encode() + b"\n")
                    typed += 1
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        os.close(master)
    return seen.decode(errors="replace")


def screen(raw: str) -> list[str]:
    """The lines a terminal shows at the end of ``raw``: its text where the live display's
    controls put it (carriage return, new line, cursor up and down, erase the line, delete
    lines); colours and the cursor's visibility dropped. Lines left empty are not listed."""
    lines: list[list[str]] = [[]]
    row = col = 0
    for token in re.finditer(r"\x1b\[([0-9;?]*)([A-Za-z])|\r|\n|[^\x1b\r\n]+", raw):
        text = token.group(0)
        if token.group(2) == "A":  # cursor up
            row = max(0, row - int(token.group(1) or 1))
        elif token.group(2) == "B":  # cursor down
            row += int(token.group(1) or 1)
            lines.extend([] for _ in range(row + 1 - len(lines)))
        elif token.group(2) == "M":  # delete lines: those under them move up
            del lines[row : row + int(token.group(1) or 1)]
            lines.extend([] for _ in range(row + 1 - len(lines)))
        elif token.group(2) == "K":  # erase the line (rich's: all of it)
            lines[row] = []
        elif token.group(2) is not None:  # colours, the cursor shown or hidden
            continue
        elif text == "\r":
            col = 0
        elif text == "\n":  # (the terminal's \r\n: the \r comes first)
            row += 1
            if row == len(lines):
                lines.append([])
        else:
            line = lines[row]
            line.extend(" " * (col - len(line)))
            line[col : col + len(text)] = text
            col += len(text)
    return [shown for shown in ("".join(line).rstrip() for line in lines) if shown]


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


def the_one_frame(shown: list[str]) -> int:
    """The line of the display's frame on the screen of a two-task run, which must be the
    only one: no stale line of an earlier frame left above it."""
    frames = [n for n, line in enumerate(shown) if re.search(r"\d/2 done", line)]
    assert len(frames) == 1, shown
    return frames[0]


WARNS = textwrap.dedent(
    """
    import logging
    import threading
    import time

    import layerflow as lf

    log = logging.getLogger("layerflow")
    flow = lf.Flow("warns")

    @flow.task
    def a():
        time.sleep(1.2)  # the display has drawn a few frames by now
        log.warning("said in the task")
        later = threading.Timer(0.3, log.warning, ["said by a thread of the task's own"])
        later.start()
        later.join()
        return 1

    @flow.task
    def b():
        time.sleep(2.5)
        return 2
    """
)


def test_warnings_show_above_the_live_display_and_leave_its_frames_whole(tmp_path):
    """layerflow's warnings, said while the display is drawn, come above it on lines of
    their own; the display then goes on from under them, and no frame of it is left on
    the screen but the last. (click.echo wrote them past the display's streams, straight
    to the terminal after the frame: the next frame was drawn a line too low, over the
    warning, under a stale line of the one before.) A warning logged in a task is shown
    once, as that task's line."""
    (tmp_path / "warns.py").write_text(WARNS)
    argv = [sys.executable, "-m", "layerflow", "run", "warns:flow", "--no-store"]
    shown = screen(run_in_pty(argv, tmp_path, raw=True))
    frame = the_one_frame(shown)
    assert re.search(r"━ 2/2 done .* 2 succeeded$", shown[frame]), shown
    assert sorted(shown[:frame]) == [
        "a | WARNING layerflow: said in the task",
        "warning: said by a thread of the task's own",
    ], shown
    assert shown[-1].startswith("Completed 2 tasks"), shown


CONFIGURED = textwrap.dedent(
    """
    import logging
    import threading
    import time

    import layerflow as lf

    # at import, as many programs do: the handler holds the terminal's stderr
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("mine")
    flow = lf.Flow("configured")

    @flow.task
    def a():
        time.sleep(1.2)  # the display has drawn a few frames by now
        log.info("said in the task")
        later = threading.Timer(0.3, log.info, ["said by a thread of the task's own"])
        later.start()
        later.join()
        return 1

    @flow.task
    def b():
        time.sleep(2.5)
        return 2
    """
)


ASKS = textwrap.dedent(
    """
    import time

    import layerflow as lf

    flow = lf.Flow("asks")

    @flow.task
    def first():
        time.sleep(1.2)  # the display has drawn a few frames by now
        print("first says hello")
        return 1

    @flow.task
    def second(first):
        print("second says hello")
        time.sleep(1.2)
        return first + 1
    """
)


def test_a_handler_configured_at_import_writes_above_the_live_display(tmp_path):
    """A flow module that calls ``logging.basicConfig`` at import: its handler holds the
    terminal's stderr from before the display. Its records come above the display, each
    once: a task's as that task's line, another thread's as the handler formats it; and
    no frame is left on the screen but the last. (The handler wrote straight to the
    terminal, past the display: stale frame lines, and a task's record twice.)"""
    (tmp_path / "configured.py").write_text(CONFIGURED)
    argv = [sys.executable, "-m", "layerflow", "run", "configured:flow", "--no-store"]
    shown = screen(run_in_pty(argv, tmp_path, raw=True))
    frame = the_one_frame(shown)
    assert re.search(r"━ 2/2 done .* 2 succeeded$", shown[frame]), shown
    assert shown[:frame] == [
        "a | INFO mine: said in the task",
        "INFO mine: said by a thread of the task's own",
    ], shown
    assert shown[-1].startswith("Completed 2 tasks"), shown


def test_the_checkpoint_question_holds_the_live_display_still(tmp_path):
    """``--checkpoint``'s question, asked while the live display is drawn: shown whole (its
    ``[y/N]`` too) on a line of its own, under the frame, which holds still while the
    answer is typed, visibly; then the held frame is taken away, and the display goes on
    under the question and its answer, with the next layer's output captured and shown
    as the task's lines. (click.confirm sent the question through rich's streams, which
    read ``[y/N]`` as markup and dropped it, drew the frame after it, and went on
    redrawing it over the answer: a stale frame was left above the next.)"""
    (tmp_path / "asks.py").write_text(ASKS)
    argv = [sys.executable, "-m", "layerflow", "run", "asks:flow", "--no-store", "--checkpoint"]
    raw = converse_in_pty(argv, tmp_path, ["y"])
    question = "Layer 0 done: 1 succeeded, 0 failed. Continue? [y/N]: "
    asked = raw.index("Continue?")
    answered = raw.index("y\r\n", asked) + 3  # the answer, echoed as it was typed
    held = screen(raw[:answered])  # the screen the person saw when answering
    assert held[-1] == question + "y", held  # asked whole, under the frame it holds
    assert re.search(r"[━╌] 1/2 done, 0 running", held[-3]) and held[-2] == "  1 succeeded", held
    assert "done" not in raw[asked:answered]  # the frame held still over a second's wait
    shown = screen(raw)
    frame = the_one_frame(shown)  # the held one was taken away
    assert re.search(r"━ 2/2 done .* 2 succeeded$", shown[frame]), shown
    assert shown[:frame] == [
        "first | first says hello",
        question + "y",  # the answer as it was typed
        "second | second says hello",  # the next layer's output: still captured
    ], shown
    assert shown[-1].startswith("Completed 2 tasks"), shown


ASIDE = textwrap.dedent(
    """
    import threading
    import time

    import layerflow as lf

    flow = lf.Flow("aside")

    @flow.task
    def first():
        time.sleep(1.2)
        # a thread of the task's own prints while the question waits for its answer
        threading.Timer(0.5, lambda: print("said by a thread of first's own")).start()
        return 1

    @flow.task
    def second(first):
        time.sleep(0.8)
        return first + 1
    """
)


def test_what_is_printed_while_the_question_waits_comes_after_its_answer(tmp_path):
    """A line printed while ``--checkpoint``'s question waits (not a task's: a thread a
    task started) is shown once the question is answered, under it and above the display.
    (It was written on the question's line, and the held frame was then taken away from
    the wrong place: a stale frame stayed and the question was erased.)"""
    (tmp_path / "aside.py").write_text(ASIDE)
    argv = [sys.executable, "-m", "layerflow", "run", "aside:flow", "--no-store", "--checkpoint"]
    shown = screen(converse_in_pty(argv, tmp_path, ["y"]))
    frame = the_one_frame(shown)
    assert shown[:frame] == [
        "Layer 0 done: 1 succeeded, 0 failed. Continue? [y/N]: y",
        "said by a thread of first's own",
    ], shown


def test_no_to_the_checkpoint_question_stops_the_run_under_it(tmp_path):
    """An answer that is no answer is asked again (as click.confirm does); no stops the
    run, whose last frame and closing lines come under the question."""
    (tmp_path / "asks.py").write_text(ASKS)
    argv = [sys.executable, "-m", "layerflow", "run", "asks:flow", "--no-store", "--checkpoint"]
    raw = converse_in_pty(argv, tmp_path, ["maybe", "n"])
    question = "Layer 0 done: 1 succeeded, 0 failed. Continue? [y/N]: "
    shown = screen(raw)
    frame = the_one_frame(shown)
    assert re.search(r"━ 2/2 done .* 1 succeeded, 1 cancelled$", shown[frame]), shown
    assert shown[:frame] == [
        "first | first says hello",
        question + "maybe",
        "Error: invalid input",
        question + "n",
    ], shown
    assert "second says hello" not in raw
    assert "Stopped: the checkpoint after layer 0 said stop." in shown, shown
    assert shown[-1].startswith("Run stopped: 1 of 2 tasks completed"), shown


def test_with_json_the_question_holds_the_display_on_stderr(tmp_path):
    """``--json``: the display and its question on stderr, stdout only the JSON."""
    (tmp_path / "asks.py").write_text(ASKS)
    argv = [sys.executable, "-m", "layerflow", "run", "asks:flow", "--no-store", "--checkpoint"]
    with open(tmp_path / "out.json", "w") as stdout:
        raw = converse_in_pty([*argv, "--json"], tmp_path, ["y"], stdout=stdout)
    assert json.loads((tmp_path / "out.json").read_text())["status"] == "succeeded"
    shown = screen(raw)
    frame = the_one_frame(shown)
    assert shown[:frame] == [
        "first | first says hello",
        "Layer 0 done: 1 succeeded, 0 failed. Continue? [y/N]: y",
        "second | second says hello",
    ], shown


def test_live_displays_that_overlap_put_the_streams_back_whatever_order_they_end_in():
    # regression: each live display puts the streams it found back when it stops; two
    # runs whose displays overlapped left sys.stdout as the first run's capture tee, and
    # later prints went through a stopped display's proxy (to stderr, read as markup)
    import io
    import threading

    before = sys.stdout, sys.stderr
    flow = lf.Flow("overlapping")

    @flow.task
    def nap(d):
        time.sleep(d)
        print("napped", d)
        return d

    def run(d: float) -> None:
        flow.run({"d": d}, progress=lf.Progress(io.StringIO(), live=True))

    first = threading.Thread(target=run, args=(0.6,))
    second = threading.Thread(target=run, args=(1.0,))
    first.start()
    time.sleep(0.2)
    second.start()  # starts after the first, ends after it: not last in, first out
    first.join(30)
    second.join(30)
    assert (sys.stdout, sys.stderr) == before


def test_a_progress_shows_one_run_at_a_time_and_says_so():
    # regression: one lf.Progress given to two runs at once took the second's display in
    # place of the first's, whose refresh thread then never stopped
    import io
    import threading

    flow = lf.Flow("shared")
    started = threading.Event()

    @flow.task
    def nap():
        started.set()
        time.sleep(0.5)
        return 1

    shown = lf.Progress(io.StringIO(), live=True)
    first = threading.Thread(target=lambda: flow.run(progress=shown))
    first.start()
    assert started.wait(10)
    with pytest.raises(lf.InvalidOptionError, match="showing another run"):
        flow.run(progress=shown)
    first.join(30)
    assert flow.run(progress=shown)["nap"] == 1  # free again once the first has ended
    time.sleep(0.2)
    assert not [t for t in threading.enumerate() if t.name == "layerflow-progress"]
