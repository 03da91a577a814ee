"""What each task printed and logged: ``TaskRun.logs``, kept per task and attempt, bounded,
stored with the run, and shown by ``layerflow show --logs``, ``-v`` and the report."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_run import layerflow

import layerflow as lf
from layerflow.capture import LIMIT
from layerflow.store import Store

TIMEOUT = 30  # a barrier that nobody reaches fails the test instead of hanging it


def test_threads_side_by_side_keep_their_own_output():
    """Two tasks that run at the same time and print in turn: each keeps its own lines,
    in order, however the lines interleaved on the terminal."""
    flow = lf.Flow("side-by-side")
    turns = [threading.Event() for _ in range(6)]

    def printer(me: int):
        def task():
            for k in range(me, 6, 2):  # a prints at 0, 2, 4; b at 1, 3, 5
                if k:
                    assert turns[k - 1].wait(TIMEOUT)
                print(f"task {me} line {k}")
                logging.getLogger(f"t{me}").warning("record %d", k)
                turns[k].set()
            return me

        return task

    flow.add(printer(0), name="a")
    flow.add(printer(1), name="b")
    run = flow.run(max_workers=2)
    assert run.tasks["a"].logs == (
        "task 0 line 0\nWARNING t0: record 0\n"
        "task 0 line 2\nWARNING t0: record 2\n"
        "task 0 line 4\nWARNING t0: record 4\n"
    )
    assert run.tasks["b"].logs == (
        "task 1 line 1\nWARNING t1: record 1\n"
        "task 1 line 3\nWARNING t1: record 3\n"
        "task 1 line 5\nWARNING t1: record 5\n"
    )


def test_a_task_that_prints_nothing_has_empty_logs_and_streams_are_put_back():
    before = sys.stdout, sys.stderr, list(logging.getLogger().handlers)
    flow = lf.Flow("quiet")

    @flow.task
    def quiet():
        return 1

    run = flow.run()
    assert run.tasks["quiet"].logs == ""
    assert (sys.stdout, sys.stderr, logging.getLogger().handlers) == before


def test_streams_are_put_back_after_a_failed_run():
    before = sys.stdout, sys.stderr, list(logging.getLogger().handlers)
    flow = lf.Flow("fails")

    @flow.task
    def boom():
        print("about to fail")
        raise ValueError("no")

    with pytest.raises(lf.TaskFailed) as caught:
        flow.run()
    assert caught.value.result.tasks["boom"].logs == "about to fail\n"
    assert (sys.stdout, sys.stderr, logging.getLogger().handlers) == before


def test_the_python_api_still_prints_what_tasks_print(capsys):
    """Without the command line, output goes on to the terminal as it would without
    layerflow (and is kept too); code outside tasks is not touched."""
    flow = lf.Flow("raw")

    @flow.task
    def talk():
        print("to stdout")
        print("to stderr", file=sys.stderr)
        return 1

    run = flow.run()
    out, err = capsys.readouterr()
    assert "to stdout" in out
    assert "to stderr" in err
    assert run.tasks["talk"].logs == "to stdout\nto stderr\n"


def test_logging_levels_and_logger_names():
    """A record is kept as ``LEVEL logger: message``, if the logger's level lets it
    through (logging's own rule: by default WARNING and above)."""
    flow = lf.Flow("levels")
    named = logging.getLogger("layerflow-test.levels")

    @flow.task
    def logs():
        named.debug("not kept")
        named.info("kept at INFO")
        named.warning("careful")
        try:
            raise KeyError("k")
        except KeyError:
            named.exception("caught")
        return 1

    named.setLevel(logging.INFO)
    try:
        run = flow.run()
    finally:
        named.setLevel(logging.NOTSET)
    text = run.tasks["logs"].logs
    assert "not kept" not in text
    assert text.startswith(
        "INFO layerflow-test.levels: kept at INFO\n"
        "WARNING layerflow-test.levels: careful\n"
        "ERROR layerflow-test.levels: caught\nTraceback"
    )
    assert "KeyError: 'k'" in text


def test_retries_separate_attempts():
    flow = lf.Flow("retries")
    tries = []

    @flow.task(retries=2)
    def flaky():
        tries.append(1)
        print(f"try {len(tries)}")
        if len(tries) < 3:
            raise RuntimeError("again")
        return len(tries)

    run = flow.run()
    assert run.tasks["flaky"].logs == (
        "── attempt 1 ──\ntry 1\n── attempt 2 ──\ntry 2\n── attempt 3 ──\ntry 3\n"
    )


def test_output_is_bounded_and_says_where_it_was_cut():
    flow = lf.Flow("bound")
    line = "x" * 99 + "\n"  # 100 bytes
    lines = 2 * LIMIT // 100

    @flow.task
    def loud():
        for k in range(lines):
            print(f"{k:08d}{line}", end="")
        print("the end")
        return 1

    text = flow.run().tasks["loud"].logs
    first, rest = text.split("\n", 1)
    assert first.startswith("[… ") and first.endswith(" earlier bytes cut …]")
    cut = int(first[3:].split(" ")[0].replace(",", ""))
    assert len(rest.encode()) <= LIMIT
    assert cut + len(rest.encode()) == lines * 108 + len("the end\n")
    assert rest.endswith("the end\n")
    assert all(len(ln) == 107 for ln in rest.splitlines()[:-1])  # whole lines only


def test_process_tasks_capture_in_the_worker():
    flow = lf.Flow("processes")
    flow.add(_in_process, executor="process")
    run = flow.run(timeout=60)
    assert run.tasks["_in_process"].logs == (
        "in a worker process\nits stderr\nERROR layerflow-test.child: from the child\n"
    )


def _in_process():
    print("in a worker process")
    print("its stderr", file=sys.stderr)
    logging.getLogger("layerflow-test.child").error("from the child")
    return 1


def test_async_tasks_keep_their_own_output():
    flow = lf.Flow("coroutines")

    def coroutine(me: str):
        async def task():
            print(f"{me} first")
            await asyncio.sleep(0.01)
            print(f"{me} second")
            return me

        return task

    flow.add(coroutine("a"), name="a")
    flow.add(coroutine("b"), name="b")
    run = flow.run(timeout=60)
    assert run.tasks["a"].logs == "a first\na second\n"
    assert run.tasks["b"].logs == "b first\nb second\n"


def test_sequential_mode_keeps_output_per_task():
    flow = lf.Flow("sequential")

    @flow.task
    def one():
        print("one")
        return 1

    @flow.task
    def two(one):
        print("two", one)
        return 2

    run = flow.run(mode="sequential")
    assert [run.tasks[n].logs for n in ("one", "two")] == ["one\n", "two 1\n"]


def test_a_parallel_map_inside_a_task_prints_into_that_task():
    flow = lf.Flow("nested")

    def shout(x: int) -> int:
        print(f"item {x}")
        return x

    @flow.task
    def outer():
        print("outer starts")
        return lf.parallel_map(shout, [1, 2, 3], max_workers=1)

    text = flow.run().tasks["outer"].logs
    assert text.startswith("outer starts\n")
    assert sorted(text.splitlines()[1:]) == ["item 1", "item 2", "item 3"]


def test_run_steps_keep_their_commands_output(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "name: commands\nsettings: {order: dataflow}\nsteps:\n"
        "  - name: ok\n    run: \"sh -c 'echo out line; echo err line >&2'\"\n"
        "  - name: bad\n    run: \"sh -c 'echo partial; exit 3'\"\n"
    )
    run = lf.load_pipeline(tmp_path / "p.yaml").run(fail_fast=False)
    assert run.tasks["ok"].logs == "out line\nerr line\n"
    assert run["ok"] == "out line"
    assert run.tasks["bad"].logs == "partial\n"


def test_stored_with_the_run_and_kept_by_resume(tmp_path):
    flow = lf.Flow("stored")
    fail = [True]

    @flow.task
    def first():
        print("first ran")
        return 1

    @flow.task
    def second(first):
        print("second ran, failing:", fail[0])
        if fail[0]:
            raise RuntimeError("not yet")
        return first + 1

    with pytest.raises(lf.TaskFailed) as caught:
        flow.run(store=tmp_path)
    failed = caught.value.result
    store = Store(tmp_path)
    try:
        loaded = store.load_run(failed.run_id)
        assert {n: t.logs for n, t in loaded.tasks.items()} == {
            "first": "first ran\n",
            "second": "second ran, failing: True\n",
        }
        fail[0] = False
        again = flow.run(store=tmp_path, resume=True)
        assert again.tasks["first"].status == "reused"
        assert again.tasks["first"].logs == "first ran\n"  # from the run that ran it
        assert again.tasks["second"].logs == "second ran, failing: False\n"
        assert store.logs_of(again.run_id) == {
            "first": "first ran\n",
            "second": "second ran, failing: False\n",
        }
    finally:
        store.close()


def test_an_older_store_opens_and_gets_the_logs_table(tmp_path):
    flow = lf.Flow("old")

    @flow.task
    def talk():
        print("hello")
        return 1

    flow.run(store=tmp_path)
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("DROP TABLE task_logs")
    db.execute("PRAGMA user_version = 6")
    db.commit()
    db.close()
    run = flow.run(store=tmp_path)
    store = Store(tmp_path)
    try:
        assert store.load_run(run.run_id).tasks["talk"].logs == "hello\n"
    finally:
        store.close()


def test_the_report_shows_output_escaped(tmp_path):
    flow = lf.Flow("report")

    @flow.task
    def evil():
        print("<script>alert('x')</script> & more")
        return 1

    page = flow.run().to_html(tmp_path / "r.html").read_text()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "<script>alert(" not in page


_PIPELINE = """\
name: cli-logs
settings: {order: dataflow}
steps:
  - name: hello
    uses: "steps_mod:hello"
  - name: shell
    run: "sh -c 'echo from the command'"
  - name: bar
    uses: "steps_mod:bar"
"""

_STEPS = """\
import logging

def hello():
    print("hello from python")
    logging.getLogger("steps").warning("a warning")
    return 1

def bar():
    for k in range(3):
        print(f"\\rdrawn {k}", end="")
    print()
    return 2
"""


def _project(tmp_path: Path) -> Path:
    (tmp_path / "p.yaml").write_text(_PIPELINE)
    (tmp_path / "steps_mod.py").write_text(_STEPS)
    return tmp_path


def test_cli_verbose_prints_live_lines_prefixed_and_show_logs(tmp_path):
    folder = _project(tmp_path)
    done = layerflow(folder, "run", "p.yaml", "-v")
    assert done.returncode == 0, done.stderr
    assert "hello | hello from python" in done.stdout
    assert "shell | from the command" in done.stdout
    assert "hello | WARNING steps: a warning" in done.stderr
    assert "bar | drawn 2\n" in done.stdout  # a bar redrawn in place: its last state
    runs = layerflow(folder, "runs")
    run_id = runs.stdout.splitlines()[1].split()[0]
    shown = layerflow(folder, "show", run_id, "hello", "--logs")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "hello from python\nWARNING steps: a warning\n"
    detail = layerflow(folder, "show", run_id, "shell")
    assert "from the command" in detail.stdout
    every = layerflow(folder, "show", run_id, "--logs")
    assert "── hello ──\nhello from python\n" in every.stdout
    assert "── shell ──\nfrom the command\n" in every.stdout


def test_cli_json_keeps_stdout_for_json(tmp_path):
    folder = _project(tmp_path)
    done = layerflow(folder, "run", "p.yaml", "--json", "-v")
    assert done.returncode == 0, done.stderr
    import json

    assert json.loads(done.stdout)["status"] == "succeeded"
    assert "hello | hello from python" in done.stderr


def test_cli_quiet_shows_a_failed_tasks_output(tmp_path):
    (tmp_path / "p.yaml").write_text('name: q\nsteps:\n  - name: bad\n    uses: "steps_mod:bad"\n')
    (tmp_path / "steps_mod.py").write_text(
        "def bad():\n    print('working on it')\n    raise ValueError('broken')\n"
    )
    done = layerflow(tmp_path, "run", "p.yaml", "-q")
    assert done.returncode == 1
    assert "working on it" in done.stderr
    assert "bad |" not in done.stderr + done.stdout  # -q: no live lines


def two_runs_at_once(say: Callable[[str], object]) -> dict[str, lf.RunResult]:
    """Runs "left" and "right" at the same time, each in a thread of its own, each one
    task ``talk`` that calls ``say(label)`` while both tasks are going."""
    both = threading.Barrier(2, timeout=TIMEOUT)
    results: dict[str, lf.RunResult] = {}

    def one(label: str) -> None:
        flow = lf.Flow(label)

        @flow.task
        def talk():
            both.wait()  # the two runs' tasks say it at the same time
            say(label)
            both.wait()
            return label

        results[label] = flow.run()

    threads = [threading.Thread(target=one, args=(x,)) for x in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    return results


def test_runs_at_the_same_time_keep_their_own_output_and_put_streams_back():
    before = sys.stdout, sys.stderr, list(logging.getLogger().handlers)
    results = two_runs_at_once(lambda label: print(f"{label} speaking"))
    assert results["left"].tasks["talk"].logs == "left speaking\n"
    assert results["right"].tasks["talk"].logs == "right speaking\n"
    assert (sys.stdout, sys.stderr, logging.getLogger().handlers) == before


@pytest.mark.skipif(os.name != "posix", reason="SIGINT delivery")
def test_streams_are_put_back_after_ctrl_c(ctrl_c):
    before = sys.stdout, sys.stderr, list(logging.getLogger().handlers)
    flow = lf.Flow("interrupted")
    release = threading.Event()

    @flow.task
    def waits():
        print("waiting")
        ctrl_c()  # Ctrl-C, in the thread that called flow.run
        release.wait(10)
        return 1

    try:
        with pytest.raises(lf.RunInterrupted) as caught:
            flow.run()
    finally:
        release.set()
    assert caught.value.result.status == "interrupted"
    assert (sys.stdout, sys.stderr, logging.getLogger().handlers) == before


def test_dask_tasks_send_their_output_back(dask_client):
    flow = lf.Flow("on-dask")

    def shout():
        print("from a Dask worker")
        logging.getLogger("layerflow-test.dask").warning("careful there")
        return 1

    def after(shout):
        print("after", shout)
        return shout + 1

    flow.add(shout)
    flow.add(after)
    run = flow.run(backend="dask", client=dask_client, timeout=120)
    assert run.tasks["shout"].logs == (
        "from a Dask worker\nWARNING layerflow-test.dask: careful there\n"
    )
    assert run.tasks["after"].logs == "after 1\n"


def test_resumed_map_elements_keep_their_output(tmp_path):
    flow = lf.Flow("elements")
    broken = [True]

    @flow.task
    def items():
        return [1, 2, 3]

    @flow.task(map="items")
    def each(items):
        print(f"element {items}")
        if items == 3 and broken[0]:
            raise ValueError("not yet")
        return items * 10

    first = flow.run(store=tmp_path, fail_fast=False)
    assert first.tasks["each[0]"].logs == "element 1\n"
    broken[0] = False
    again = flow.run(store=tmp_path, resume=True)
    assert again["each"] == [10, 20, 30]
    assert again.tasks["each[0]"].status == "reused"
    assert again.tasks["each[0]"].logs == "element 1\n"
    assert again.tasks["each[2]"].logs == "element 3\n"
    store = Store(tmp_path)
    try:
        assert store.logs_of(again.run_id, ["each[0]", "each[2]"]) == {
            "each[0]": "element 1\n",
            "each[2]": "element 3\n",
        }
    finally:
        store.close()


def test_a_handler_made_during_the_run_is_kept_once():
    """A ``StreamHandler`` made while the run goes writes to the captured stderr: its
    lines are kept as it formats them, not a second time as a record."""
    flow = lf.Flow("handler")
    named = logging.getLogger("layerflow-test.handler")

    @flow.task
    def logs():
        handler = logging.StreamHandler()  # holds the sys.stderr of now
        handler.setFormatter(logging.Formatter("%(levelname)s|%(message)s"))
        named.addHandler(handler)
        try:
            named.warning("once")
        finally:
            named.removeHandler(handler)
        return 1

    assert flow.run().tasks["logs"].logs == "WARNING|once\n"


# --- review findings: bounds, progress bars, attempts, logging.basicConfig, forks ---


def test_one_huge_write_is_cut_to_its_tail_where_it_is_captured():
    """A worker (Dask's ``Captured``, a worker process's ``_Output``) keeps the end of a
    write larger than its bound, not the whole write: the cut says how much went."""
    from layerflow.backends._worker import _LIMIT, _Output
    from layerflow.capture import Captured

    box = Captured(64 * 1024)
    box.write("early\n", False)
    box.write("x" * (10 << 20), False)
    found = box.result()
    assert found is not None
    chunks, cut = found
    kept = sum(len(text) for _, text in chunks)
    assert 0 < kept <= 64 * 1024
    assert cut + kept == len("early\n") + (10 << 20)

    out = _Output()
    out.add(False, "early\n")
    out.add(False, "y" * (10 << 20))
    got = out.result()
    assert got is not None
    kept = sum(len(text) for _, text in got[0])
    assert 0 < kept <= _LIMIT
    assert got[1] + kept == len("early\n") + (10 << 20)


def test_a_process_task_huge_write_keeps_its_end():
    flow = lf.Flow("huge-in-process")
    flow.add(_huge_write, executor="process")
    text = flow.run(timeout=60).tasks["_huge_write"].logs
    first, rest = text.split("\n", 1)
    assert first.startswith("[… ") and first.endswith(" earlier bytes cut …]")
    assert len(rest.encode()) <= LIMIT
    assert rest.endswith("the end\n")


def _huge_write():
    print(("z" * 99 + "\n") * 100_000, end="")  # 10 MB in one write
    print("the end")
    return 1


def test_small_writes_after_a_large_one_do_not_each_copy_it():
    """After one write near the bound, each small write costs about what it costs without
    it (cutting the oldest output used to copy the megabyte each time)."""
    flow = lf.Flow("trim-cost")
    blob = "".join(f"row {k:07d} " + "é" * 80 + "\n" for k in range(7_000))  # ~1.2 MB

    @flow.task
    def report():
        def prints() -> float:
            t0 = time.perf_counter()
            for k in range(20_000):
                print(f"progress {k}")
            return time.perf_counter() - t0

        alone = prints()
        print(blob)
        return alone, prints()

    from layerflow import capture

    with capture.echo(None):
        run = flow.run()
    alone, after = run["report"]
    assert after < 8 * alone + 0.2  # (it was 30 times slower)
    assert run.tasks["report"].logs.endswith("progress 19999\n")


def test_many_small_prints_hold_little_more_memory_than_their_text():
    import tracemalloc

    from layerflow import capture

    flow = lf.Flow("small-prints")

    @flow.task
    def chat():
        for k in range(150_000):  # two writes each: "7" and "\n"
            print(k % 10)
        return 1

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with capture.echo(None):
            run = flow.run()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(run.tasks["chat"].logs) == 300_000
    assert held < 4 * LIMIT  # (a chunk per write held 10 MB)


def test_a_progress_bar_under_a_line_echo_is_echoed_as_its_last_drawing():
    """``\\r`` redraws (no newline until the end), as tqdm writes them, under a line echo
    (``-v``, or not a terminal): the line waiting for its end stays one drawing long."""
    from layerflow import capture

    flow = lf.Flow("progress")
    bar = "#" * 60

    @flow.task
    def train():
        for k in range(20_000):
            sys.stderr.write(f"\rtraining: {k}/20000 [{bar}]")
        sys.stderr.write("\n")
        for _ in range(200):  # a line that never ends: echoed in parts
            sys.stderr.write("y" * 1000)
        return 1

    lines: list[str] = []
    with capture.echo(lambda task, line, stream: lines.append(line)):
        flow.run()
    assert lines[0].endswith(f"training: 19999/20000 [{bar}]")
    assert len(lines[0]) < 200
    assert "".join(lines[1:]) == "y" * 200_000
    assert all(len(line) <= 80 * 1024 for line in lines)


def test_an_abandoned_thread_writes_into_its_own_attempt():
    """A thread task that timed out goes on running: what it prints after the next
    attempt began is still its attempt's output."""
    flow = lf.Flow("abandoned")
    second_began = threading.Event()
    late_written = threading.Event()
    calls: list[int] = []

    @flow.task(timeout=0.5, retries=1)
    def flaky():
        calls.append(1)
        if len(calls) == 1:
            print("first begins")
            assert second_began.wait(TIMEOUT)
            print("first, late")
            late_written.set()
            return 0
        print("second begins")
        second_began.set()
        assert late_written.wait(TIMEOUT)
        print("second ends")
        return 2

    run = flow.run()
    assert run["flaky"] == 2
    assert run.tasks["flaky"].logs == (
        "── attempt 1 ──\nfirst begins\nfirst, late\n── attempt 2 ──\nsecond begins\nsecond ends\n"
    )


def test_logging_basic_config_called_while_a_run_goes_takes_effect():
    import io

    flow = lf.Flow("basic-config")
    started = threading.Event()
    configured = threading.Event()

    @flow.task
    def slow():
        started.set()
        assert configured.wait(TIMEOUT)
        return 1

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    for handler in saved[0]:
        root.removeHandler(handler)
    sink = io.StringIO()
    try:
        worker = threading.Thread(target=flow.run)
        worker.start()
        assert started.wait(TIMEOUT)
        logging.basicConfig(level=logging.INFO, format="APP %(message)s", stream=sink)
        configured.set()
        worker.join(TIMEOUT)
        assert not worker.is_alive()
        logging.getLogger("layerflow-test.app").info("configured while a run went")
        assert sink.getvalue() == "APP configured while a run went\n"
        assert logging.basicConfig.__module__ == "logging"  # logging's own again
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_process_a_task_forks_writes_to_the_real_streams(capfd):
    from layerflow import capture

    flow = lf.Flow("forks")

    @flow.task
    def fan():
        print("the task's own")
        pid = os.fork()
        if pid == 0:  # the child: not the task, whatever it inherited
            try:
                print("from the forked child", flush=True)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        return 1

    with capture.echo(None):
        run = flow.run()
    assert run.tasks["fan"].logs == "the task's own\n"
    assert "from the forked child" in capfd.readouterr().out


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_process_a_process_task_forks_writes_to_the_real_streams(capfd):
    from layerflow import capture

    flow = lf.Flow("forks-in-process")
    flow.add(_forks, executor="process")
    with capture.echo(None):
        run = flow.run(timeout=60)
    assert run.tasks["_forks"].logs == "the task's own\n"
    assert "from the forked child" in capfd.readouterr().out


def _forks():
    print("the task's own")
    pid = os.fork()
    if pid == 0:  # the child: not the task, whatever it inherited
        try:
            print("from the forked child", flush=True)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return 1


def test_a_process_task_killed_at_its_timeout_keeps_what_it_wrote(tmp_path):
    """The worker process is told before it is killed: it sends what the call wrote so
    far, kept under the attempt that wrote it (the retry's output under its own)."""
    flow = lf.Flow("killed-in-process")
    marker = {"marker": str(tmp_path / "first-ran")}
    flow.add(
        _slow_then_quick, name="hang", params=marker, timeout=2.0, retries=1, executor="process"
    )
    run = flow.run(timeout=60)
    assert run["hang"] == "second"
    assert run.tasks["hang"].logs == (
        "── attempt 1 ──\nfirst: calling the slow service\nERROR layerflow-test.hang: "
        "no answer yet\n── attempt 2 ──\nsecond: quick this time\n"
    )


def _slow_then_quick(marker: str) -> str:
    if not os.path.exists(marker):
        Path(marker).touch()
        print("first: calling the slow service")  # (not flushed)
        logging.getLogger("layerflow-test.hang").error("no answer yet")
        time.sleep(60)
    print("second: quick this time")
    return "second"


def test_a_line_longer_than_the_bound_then_more_lines():
    """Nothing is left of one line longer than the bound (lines are kept whole); what the
    next attempt writes is kept, and cut in turn."""
    flow = lf.Flow("long-line")
    calls: list[int] = []

    @flow.task(retries=1)
    def loud():
        calls.append(1)
        if len(calls) == 1:
            sys.stdout.write("x" * (LIMIT + 10))  # no newline
            raise ValueError("first attempt")
        for k in range(100_000):
            print(f"line {k:06d}")
        return 1

    from layerflow import capture

    with capture.echo(None):
        text = flow.run().tasks["loud"].logs
    first, rest = text.split("\n", 1)
    assert first.startswith("[… ") and first.endswith(" earlier bytes cut …]")
    cut = int(first[3:].split(" ")[0].replace(",", ""))
    header, rest = rest.split("\n", 1)
    assert header == "── attempt 2 ──"
    assert cut + len(rest) == LIMIT + 10 + 100_000 * 12
    assert rest.endswith("line 099999\n")
    assert all(ln.startswith("line ") for ln in rest.splitlines())


# --- a handler made before the run (logging.basicConfig at import) -----------------------


@contextlib.contextmanager
def configured(monkeypatch, tmp_path):
    """A logger with a ``StreamHandler`` made before the run on ``sys.stderr`` (a
    StringIO: no terminal), one on another stream and one on a file: (logger, stderr,
    handler, other stream, other handler, file handler). (Called in the test itself:
    pytest puts its own ``sys.stderr`` back when the test's call starts.)"""
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    handler = logging.StreamHandler()  # holds the sys.stderr of now, as basicConfig's
    handler.setFormatter(logging.Formatter("APP %(levelname)s %(name)s %(message)s"))
    elsewhere = io.StringIO()
    other = logging.StreamHandler(elsewhere)
    to_file = logging.FileHandler(tmp_path / "app.log")
    named = logging.getLogger("layerflow-test.configured")
    named.setLevel(logging.INFO)
    for h in (handler, other, to_file):
        named.addHandler(h)
    try:
        yield named, err, handler, elsewhere, other, to_file
    finally:
        for h in (handler, other, to_file):
            named.removeHandler(h)
        named.setLevel(logging.NOTSET)
        to_file.close()


def test_a_handler_made_before_the_run_shows_a_tasks_record_once_and_keeps_its_stream(
    monkeypatch, tmp_path
):
    """The Python API, stderr no terminal: a task's record is shown once on the handler's
    stream and kept in the task's logs, as that handler formats it (the handler writes
    to the captured stderr while the run goes); afterwards the handler has its own stream
    again. Handlers on other streams and on files are left alone."""
    flow = lf.Flow("configured")
    during = {}

    with configured(monkeypatch, tmp_path) as (named, err, handler, elsewhere, other, to_file):

        @flow.task
        def logs():
            named.info("once")
            during["others"] = (other.stream, to_file.stream)
            return 1

        others = (other.stream, to_file.stream)
        run = flow.run()
        assert err.getvalue() == "APP INFO layerflow-test.configured once\n"
        assert run.tasks["logs"].logs == "APP INFO layerflow-test.configured once\n"
        assert handler.stream is err  # its own again
        assert during["others"] == others  # never moved
        assert elsewhere.getvalue() == "once\n"
        assert (tmp_path / "app.log").read_text() == "once\n"
        named.info("after the run")  # straight to its stream, as before the run
        assert err.getvalue().endswith("APP INFO layerflow-test.configured after the run\n")


def test_runs_at_the_same_time_share_the_moved_handler_and_put_it_back(monkeypatch, tmp_path):
    """Two runs at the same time: the handler is moved once, by the first, and given its
    stream back by the last; each run's task keeps its own record. A stream the user
    gives the handler meanwhile is theirs: it stays."""
    with configured(monkeypatch, tmp_path) as (named, err, handler, _, _, _):
        results = two_runs_at_once(lambda label: named.warning("%s speaking", label))
        for label in ("left", "right"):
            line = f"APP WARNING layerflow-test.configured {label} speaking\n"
            assert results[label].tasks["talk"].logs == line
            assert err.getvalue().count(line) == 1
        assert handler.stream is err

        theirs = io.StringIO()
        flow = lf.Flow("changed")

        @flow.task
        def change():
            handler.setStream(theirs)
            return 1

        flow.run()
        assert handler.stream is theirs


def test_a_record_a_console_handler_filters_out_is_kept_in_the_tasks_logs(monkeypatch):
    # regression: a console handler made before the run writes through the capture, and
    # a record it wrote was kept as it wrote it; one its filter dropped was then kept by
    # nobody (and not shown either)
    class DropNoisy(logging.Filter):
        def filter(self, record):
            return record.name != "layerflow-test.noisy"

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("FMT %(levelname)s:%(name)s:%(message)s"))
    handler.addFilter(DropNoisy())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        flow = lf.Flow("filtered")

        @flow.task
        def t():
            logging.getLogger("layerflow-test.noisy").warning("noisy record")
            logging.getLogger("layerflow-test.app").warning("app record")
            return 1

        run = flow.run(progress=False)
    finally:
        root.removeHandler(handler)
    assert "noisy record" in run.tasks["t"].logs
    assert "FMT WARNING:layerflow-test.app:app record" in run.tasks["t"].logs
